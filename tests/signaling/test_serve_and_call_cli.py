"""``callagent serve`` and ``callagent call`` as separate processes, as a user runs
them: reports on both sides, an ICE restart over WHIP PATCH, graceful shutdown,
and one-line errors for a dead server or a garbage answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from aiohttp import web

from tests.support.callagent_cli import CALLAGENT, ROOT, call, only_call
from tests.support.http import serve_app
from tests.support.whip import far_end


@contextmanager
def serve(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``callagent serve`` on a free port; yield it and its WHIP URL."""
    proc = subprocess.Popen(
        [*CALLAGENT, "serve", "--listen", "127.0.0.1:0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints its URL first
        assert line.startswith("callagent: serving WHIP at "), (
            line + proc.stderr.read() if proc.stderr else line
        )
        yield proc, line.split()[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


async def test_serve_and_call_in_two_processes_with_a_restart_over_patch(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "restart.yaml"
    scenario.write_text(
        "name: whip-restart\nduration: 3s\n"
        "steps:\n  - {at: 1s, do: ice.restart, side: caller}\n"
        "expect: {ice_restarts: 1}\n"
    )
    reports = tmp_path / "served"
    with serve(tmp_path, "--report-dir", str(reports), "--token", "tok") as (
        proc,
        url,
    ):
        out = tmp_path / "client.json"
        code, stdout, stderr = await call(
            url, "--scenario", str(scenario), "--token", "tok", "--report", str(out)
        )
        assert code == 0, stdout + stderr
        code, err = stop(proc, signal.SIGTERM)
        assert code == 0, err

    client = only_call(out)
    assert client["mode"] == "whip-client" and client["local_side"] == "caller"
    assert client["connected"] and client["error"] is None
    assert client["expectations"]["passed"], client["expectations"]
    assert client["metrics"]["ice_restarts"] == {
        "total": 1,
        "local": 1,
        "remote": 0,
        "level": "warning",
    }
    assert client["media"]["callee_to_caller"]["packets_received"] > 100

    (served_file,) = reports.glob("whip-*.json")
    served = only_call(served_file)
    assert served["mode"] == "whip-server" and served["local_side"] == "callee"
    assert served["connected"] and served["error"] is None
    assert served["metrics"]["ice_restarts"]["remote"] == 1
    assert served["metrics"]["ice_restarts"]["local"] == 0
    assert served["hung_up_by"] == "caller" and served["ended_by"] == "WHIP DELETE"
    assert served["media"]["caller_to_callee"]["packets_received"] > 100
    assert served["media"]["caller_to_callee"]["packets_lost"] == 0


async def test_sigint_hangs_up_active_calls_and_writes_their_reports(
    tmp_path: Path,
) -> None:
    import aiohttp

    reports = tmp_path / "served"
    with serve(tmp_path, "--report-dir", str(reports)) as (proc, url):
        peer, listener = far_end()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                url,
                data=await peer.create_offer(),
                headers={"Content-Type": "application/sdp"},
            ) as response:
                assert response.status == 201
                answer = await response.text()
        await peer.accept_answer(answer)
        await peer.wait_connected(10)
        await listener.until(lambda: listener.rtp >= 10, 10)
        code, err = await asyncio.to_thread(stop, proc, signal.SIGINT)
        assert code == 0, err
        assert "1 active call(s) hung up" in err
        await peer.close()
    (served_file,) = reports.glob("whip-*.json")
    report = json.loads(served_file.read_text())
    assert report["complete"] is True
    (served,) = report["calls"]
    assert served["connected"] and served["error"] is None
    assert served["hung_up_by"] == "callee"
    assert served["ended_by"].startswith("server shutdown (SIGINT)")
    assert served["media"]["caller_to_callee"]["packets_received"] > 0


async def test_dead_server_is_a_one_line_error_and_the_report_is_still_written(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.json"
    # A port nobody listens on: bind one, note it, close it.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    code, stdout, stderr = await call(
        f"http://127.0.0.1:{port}/whip", "--duration", "1s", "--report", str(out)
    )
    assert code == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    entry = only_call(out)
    assert entry["error"].startswith(f"POST http://127.0.0.1:{port}/whip: cannot reach")
    assert "\n" not in entry["error"]
    assert entry["connected"] is False and entry["mode"] == "whip-client"


@asynccontextmanager
async def fake_endpoint(status: int, body: str, **headers: str) -> AsyncIterator[str]:
    """An endpoint nobody should trust: it answers every POST the same way."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, text=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as base:
        yield f"{base}/whip"


async def test_garbage_answer_and_bad_status_are_one_line_errors(
    tmp_path: Path,
) -> None:
    cases = [
        (
            (201, "this is not sdp"),
            {"Content-Type": "application/sdp", "Location": "/whip/x"},
            "remote answer is not SDP",
        ),
        (
            (201, "v=0\r\n"),
            {"Content-Type": "text/html", "Location": "/x"},
            "text/html",
        ),
        ((500, "boom\nmore"), {}, "answered 500: boom"),
    ]
    for (status, body), headers, message in cases:
        out = tmp_path / f"r{status}.json"
        async with fake_endpoint(status, body, **headers) as url:
            code, stdout, stderr = await call(
                url, "--duration", "1s", "--report", str(out)
            )
        assert code == 1, stdout + stderr
        assert "Traceback" not in stdout + stderr
        entry = only_call(out)
        assert message in entry["error"], entry["error"]
        assert "\n" not in entry["error"]


async def test_bad_url_and_bad_listen_are_input_errors(tmp_path: Path) -> None:
    code, _, stderr = await call("ftp://example.org/whip", "--duration", "1s")
    assert code == 2 and stderr.strip().count("\n") == 0, stderr
    assert "http(s) URL" in stderr
    process = await asyncio.create_subprocess_exec(
        *CALLAGENT,
        "serve",
        "--listen",
        "nonsense",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2 and b"HOST:PORT" in err


async def test_network_faults_on_a_whip_call_against_serve_in_another_process(
    tmp_path: Path,
) -> None:
    """Issue 6 over WHIP: faults act on the client's own sockets, no root.

    A dead path with recovery on gives an ICE restart sent as a WHIP PATCH; a
    rebind (a NAT's new source port) is followed by the server as a selected
    pair change, with no restart.
    """
    blackhole = tmp_path / "blackhole.yaml"
    blackhole.write_text(
        "name: whip-blackhole\nduration: 6s\n"
        "peers:\n  caller: {recovery: restart_on_disconnected, "
        "disconnected_after: 1s}\n"
        "steps:\n  - {at: 1s, do: net.blackhole, side: caller, duration: 2s}\n"
        "expect:\n  ice_restarts: {min: 1}\n"
        "  initiated_by: {ice_restarts: {caller: {min: 1}}}\n"
    )
    rebind = tmp_path / "rebind.yaml"
    rebind.write_text(
        "name: whip-rebind\nduration: 6s\n"
        "steps:\n  - {at: 1s, do: net.rebind, side: caller}\n"
        "expect:\n  ice_restarts: 0\n"
    )
    reports = tmp_path / "served"
    outs = {name: tmp_path / f"{name}.json" for name in ("blackhole", "rebind")}
    with serve(tmp_path, "--report-dir", str(reports)) as (proc, url):
        results = await asyncio.gather(
            call(url, "--scenario", str(blackhole), "--report", str(outs["blackhole"])),
            call(url, "--scenario", str(rebind), "--report", str(outs["rebind"])),
        )
        for code, stdout, stderr in results:
            assert code == 0, stdout + stderr
        code, err = stop(proc, signal.SIGTERM)
        assert code == 0, err

    dead = only_call(outs["blackhole"])
    restarts = [e for e in dead["events"] if e["type"] == "ice_restart"]
    assert restarts and restarts[0]["detail"]["trigger"] == "disconnected"
    assert restarts[0]["cause"] == "blackhole"
    assert restarts[0]["detail"]["outcome"] == "completed"
    moved = only_call(outs["rebind"])
    assert moved["metrics"]["ice_restarts"]["total"] == 0
    assert moved["final_state"] == "connected"
    served = [only_call(path) for path in reports.glob("whip-*.json")]
    by_restarts = sorted(s["metrics"]["ice_restarts"]["remote"] for s in served)
    assert by_restarts[0] == 0 and by_restarts[1] >= 1
    follower = next(s for s in served if s["metrics"]["ice_restarts"]["total"] == 0)
    # The server followed the client's new source port inside one generation.
    assert follower["metrics"]["selected_pair_changes"] == 1
