"""Issue 11 as a user meets it: ``callagent serve`` and ``callagent call`` in
their own processes, against hostile far ends, bad options and a client
that is killed mid-call."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agent.call.server import ServedCall
from agent.signaling.whip_client import MAX_RESPONSE_BYTES
from tests.signaling.test_hostile_serve import MINIMAL_OFFER
from tests.signaling.test_serve_and_call_cli import fake_endpoint
from tests.support.callagent_cli import CALLAGENT, ROOT, call, only_call
from tests.support.http import serve_app
from tests.support.whip import Served, serve_agent

WHIP_HEADERS = {"Content-Type": "application/sdp", "Location": "/whip/x"}


async def serve_fails(*args: str) -> tuple[int, str]:
    """``callagent serve ARGS`` that must refuse to start: (exit code, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *CALLAGENT,
        "serve",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    assert b"serving WHIP" not in out, out
    return process.returncode, err.decode()


@asynccontextmanager
async def serve_process(*args: str) -> AsyncIterator[tuple[Any, str]]:
    """``callagent serve ARGS`` running; yields it and its WHIP URL."""
    process = await asyncio.create_subprocess_exec(
        *CALLAGENT,
        "serve",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("callagent: serving WHIP at "), line
        yield process, line.split()[-1]
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_s1_that_answer_to_callagent_call_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.json"
    async with fake_endpoint(201, MINIMAL_OFFER, **WHIP_HEADERS) as url:
        code, stdout, stderr = await call(url, "--duration", "1s", "--report", str(out))
    assert code == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    entry = only_call(out)
    assert "remote answer SDP is malformed" in entry["error"], entry["error"]
    assert "\n" not in entry["error"] and entry["connected"] is False


async def test_callagent_call_reads_at_most_a_bounded_answer(tmp_path: Path) -> None:
    huge = "v=0\r\n" + "a=x-padding:" + "x" * (MAX_RESPONSE_BYTES + 10) + "\r\n"

    async def chunked(request: web.Request) -> web.StreamResponse:
        # No Content-Length: the limit must hold while reading.
        await request.read()
        response = web.StreamResponse(status=201, headers=WHIP_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"a=x-padding:" + b"x" * 65536 + b"\r\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/whip", chunked)
    async with serve_app(app) as base:
        out = tmp_path / "chunked.json"
        code, stdout, stderr = await call(
            f"{base}/whip", "--duration", "1s", "--report", str(out)
        )
    assert code == 1, stdout + stderr
    entry = only_call(out)
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in entry["error"], entry
    async with fake_endpoint(201, huge, **WHIP_HEADERS) as url:
        out = tmp_path / "length.json"
        code, stdout, stderr = await call(url, "--duration", "1s", "--report", str(out))
    assert code == 1 and "Traceback" not in stdout + stderr, stdout + stderr
    entry = only_call(out)
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in entry["error"], entry


async def test_s9_addresses_that_are_not_this_hosts_are_refused_at_start() -> None:
    # Checked against the interface list: nothing is sent to 8.8.8.8.
    for args, message in (
        (["--address", "8.8.8.8"], "--address 8.8.8.8 is not an address of this host"),
        (["--address", "0.0.0.0"], "not an address of this host"),
        (["--address", "media.example"], "must be an IP address"),
        (["--listen", "8.8.8.8:0"], "8.8.8.8 is not an address of this host"),
    ):
        code, err = await serve_fails("--listen", "127.0.0.1:0", *args)
        assert code == 2, (args, err)
        assert message in err and err.strip().count("\n") == 0, (args, err)
        assert "Traceback" not in err


async def test_exposure_a_non_loopback_listen_needs_a_token_or_open() -> None:
    code, err = await serve_fails("--listen", "0.0.0.0:0")
    assert code == 2 and "--open" in err and "--token" in err, err
    assert err.strip().count("\n") == 0
    for extra in (["--open"], ["--token", "t"]):
        async with serve_process("--listen", "0.0.0.0:0", *extra) as (process, url):
            assert url.startswith("http://0.0.0.0:")
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
    # Loopback needs neither.
    async with serve_process("--listen", "127.0.0.1:0") as (process, _):
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_s8_running_out_of_descriptors_is_one_log_line_not_a_traceback_each(
    tmp_path: Path,
) -> None:
    async with serve_process("--listen", "127.0.0.1:0") as (process, url):
        port = int(url.split(":")[2].split("/")[0])
        open_now = len(os.listdir(f"/proc/{process.pid}/fd"))
        # Leave the server 4 descriptors, so accept() fails with EMFILE.
        _, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (open_now + 4, hard))
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), 15)
        assert b"out of a system resource (EMFILE" in line, line
        # asyncio retries accept() once a second; let it fail a few more times.
        await asyncio.sleep(3.5)
        for _, writer in held:
            writer.close()
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), 30)
        assert await process.wait() == 0
    log = (line + rest).decode()
    assert log.count("EMFILE") == 1, log
    assert "Traceback" not in log, log


@asynccontextmanager
async def opened_calls(served: Served) -> AsyncIterator[asyncio.Queue[ServedCall]]:
    """Each call the server opens, as it opens it."""
    opened: asyncio.Queue[ServedCall] = asyncio.Queue()
    open_call = served.backend.open_call

    async def open_and_tell(*args: Any, **kwargs: Any) -> Any:
        session, answer = await open_call(*args, **kwargs)
        assert isinstance(session, ServedCall)
        opened.put_nowait(session)
        return session, answer

    served.backend.open_call = open_and_tell  # type: ignore[method-assign]
    yield opened


async def test_s7_a_vanished_far_end_is_no_pass(tmp_path: Path) -> None:
    """The client is SIGKILLed mid-call: no DELETE, no DTLS close_notify. The
    server's call fails when consent expires (RFC 7675, 30 s) and must say
    so: an error, ``passed: false``, and not ``verdict="pass"`` in /metrics."""
    reports = tmp_path / "served"
    reports.mkdir()
    async with serve_agent(report_dir=reports) as served, opened_calls(served) as q:
        client = await asyncio.create_subprocess_exec(
            *CALLAGENT,
            "call",
            served.whip,
            "--duration",
            "120s",
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            served_call = await asyncio.wait_for(q.get(), 30)
            await asyncio.wait_for(served_call.connected.wait(), 15)
        finally:
            client.kill()  # SIGKILL: no DELETE, no close_notify
            await client.wait()
        assert served_call.task is not None
        await asyncio.wait_for(asyncio.shield(served_call.task), 60)
        async with aiohttp.ClientSession() as http:
            async with http.get(served.base_url + "/metrics") as response:
                metrics = await response.text()
    (path,) = reports.glob("whip-*.json")
    entry = only_call(path)
    assert entry["final_state"] == "failed", entry["final_state"]
    assert entry["error"] and entry["error"].startswith("the far end vanished"), entry
    assert entry["expectations"]["passed"] is False
    assert 'callagent_server_calls_ended_total{verdict="pass"} 0.0' in metrics
    assert 'callagent_server_calls_ended_total{verdict="error"} 1.0' in metrics
    assert json.loads(path.read_text())["complete"] is True
