"""Issue 11, "serve and call": hostile input to the endpoint is a 4xx with one
line, never a 500 or a traceback in the log, and other calls go on.

Each test names the defect it pins (S1-S10). Calls behind the endpoint are
real; offers are a real agent peer's, or a hand-broken copy of one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.signaling.candidates import MAX_REMOTE_CANDIDATES
from agent.signaling.sdpfrag import build_sdpfrag
from tests.signaling.test_whip_server import (
    FRAG,
    connected_call,
    post,
    request,
)
from tests.support.whip import Served, far_end, serve_agent

#: S1: a=fmtp without a=rtpmap made aiortc's parser raise StopIteration.
MINIMAL_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fmtp:111 minptime=10\r\n"
)
GOOD_CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.2 5000 typ host"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield session


def port_of(served: Served) -> int:
    return int(served.base_url.rsplit(":", 1)[1])


async def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes (headers aiohttp's client would refuse); read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> str:
    return response.split(b"\r\n\r\n", 1)[1].decode()


async def test_s1_offer_with_fmtp_but_no_rtpmap_is_400_with_one_line(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    async with serve_agent() as served:
        status, _, text = await post(http, served.whip, MINIMAL_OFFER)
        assert status == 400, text
        assert text.count("\n") == 1 and "malformed" in text
        # The same offer on /ws: an error message, and the channel stays open.
        async with http.ws_connect(f"{served.base_url}/ws") as socket:
            await socket.send_str(json.dumps({"type": "offer", "sdp": MINIMAL_OFFER}))
            reply = json.loads(await socket.receive_str(timeout=10))
            assert reply["type"] == "error" and "malformed" in reply["message"]
            await socket.send_str("{}")
            reply = json.loads(await socket.receive_str(timeout=10))
            assert reply["type"] == "error"
        assert served.backend.calls == {}


async def test_s2_a_content_encoding_is_415_not_500(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    async with serve_agent() as served:
        for coding in ("gzip", "br", "x-nonsense"):
            status, headers, text = await post(
                http, served.whip, "v=0\r\n", **{"Content-Encoding": coding}
            )
            assert status == 415, text
            assert coding in text and headers["Accept-Encoding"] == "identity"


async def test_s3_a_token_that_is_not_utf8_is_401_not_500(
    server_log: pytest.LogCaptureFixture,
) -> None:
    async with serve_agent(token="s3cret") as served:
        for token in (b"\xff", b"\xed\xa0\x80", b"s3cret\xff", b"\xc3"):
            response = await raw_exchange(
                port_of(served),
                b"GET /calls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + token + b"\r\n\r\n",
            )
            assert status_of(response) == 401, response


async def test_s4_a_deeply_nested_ws_frame_gets_an_error_and_the_channel_stays_open(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    async with serve_agent() as served:
        peer, _ = far_end()
        async with http.ws_connect(f"{served.base_url}/ws") as socket:
            for frame in ("[" * 2000, '{"a":' * 5000, "[" * 60000):
                await socket.send_str(frame)
                reply = json.loads(await socket.receive_str(timeout=10))
                assert reply["type"] == "error", reply
            # Still open: a real offer is answered and the call connects.
            await socket.send_str(
                json.dumps({"type": "offer", "sdp": await peer.create_offer()})
            )
            reply = json.loads(await socket.receive_str(timeout=10))
            assert reply["type"] == "answer", reply
            await peer.accept_answer(reply["sdp"])
            await peer.wait_connected(10)
        await peer.close()


async def test_s6_impossible_candidates_are_400_and_nothing_is_logged_as_an_error(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    bad_candidates = [
        "candidate:1 1 udp 2130706431 127.0.0.2 99999 typ host",  # S6
        "candidate:1 1 udp -1 127.0.0.2 5000 typ host",
        "candidate:1 1 udp 99999999999 127.0.0.2 5000 typ host",
        "candidate:1 1 udp 2130706431 127.0.0.2 5000 typ nonsense",
        "candidate:1 1 sctp 2130706431 127.0.0.2 5000 typ host",
        "candidate:1 1 udp 2130706431 224.0.0.1 5000 typ host",
        "candidate:1 1 udp 2130706431 example.org 5000 typ host",
        "candidate:1 1 udp 2130706431 127.0.0.2 5000 typ host generation",
        "candidate:1 1 udp 2130706431 127.0.0.2 5000 typ host rport 70000",
        "candidate:1 999 udp 2130706431 127.0.0.2 5000 typ host",
    ]
    async with serve_agent() as served:
        peer, listener, resource, _ = await connected_call(http, served)
        params = peer.gatherer.getLocalParameters()
        for candidate in bad_candidates:
            # A trickle with the current credentials...
            frag = build_sdpfrag(
                ufrag=str(params.usernameFragment),
                pwd=str(params.password),
                candidates=[candidate],
            )
            status, _, text = await request(
                http, "PATCH", resource, frag, **{"Content-Type": FRAG}
            )
            assert status == 400 and text.count("\n") == 1, (candidate, text)
            # ...an ICE restart...
            restart = build_sdpfrag(
                ufrag="Rst9", pwd="abcdefghijklmnopqrstuvwx", candidates=[candidate]
            )
            status, _, text = await request(
                http,
                "PATCH",
                resource,
                restart,
                **{"Content-Type": FRAG, "If-Match": "*"},
            )
            assert status == 400 and "candidate" in text, (candidate, text)
            # ...and an offer that carries it.
            other, _ = far_end(seed=11)
            offer = await other.create_offer()
            offer = offer.replace("a=end-of-candidates", f"a={candidate}")
            status, _, text = await post(http, served.whip, offer)
            assert status == 400 and "candidate" in text, (candidate, text)
            await other.close()
        (call,) = served.backend.calls.values()
        # No restart was started, nor counted.
        assert call.live()["metrics"]["ice_restarts"]["total"] == 0
        before = listener.rtp
        await listener.until(lambda: listener.rtp >= before + 10, 10)
        await peer.close()


async def test_candidates_are_capped_per_offer_and_per_ice_session(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    many = [
        f"candidate:{i} 1 udp 2130706431 127.0.0.2 {5000 + i} typ host"
        for i in range(MAX_REMOTE_CANDIDATES + 1)
    ]
    async with serve_agent() as served:
        other, _ = far_end(seed=12)
        offer = (await other.create_offer()).replace(
            "a=end-of-candidates", "\r\n".join(f"a={c}" for c in many)
        )
        status, _, text = await post(http, served.whip, offer)
        assert status == 400 and f"at most {MAX_REMOTE_CANDIDATES}" in text, text
        await other.close()

        peer, _, resource, _ = await connected_call(http, served)
        params = peer.gatherer.getLocalParameters()
        ours = {"ufrag": str(params.usernameFragment), "pwd": str(params.password)}
        # One PATCH over the cap, then the session total over it.
        frag = build_sdpfrag(**ours, candidates=many, end_of_candidates=False)
        status, _, text = await request(
            http, "PATCH", resource, frag, **{"Content-Type": FRAG}
        )
        assert status == 400 and str(MAX_REMOTE_CANDIDATES) in text, text
        offered = sum(
            1
            for line in (await peer.create_offer()).splitlines()
            if line.startswith("a=candidate:")
        )
        room = MAX_REMOTE_CANDIDATES - offered
        assert room > 1
        frag = build_sdpfrag(**ours, candidates=many[:room], end_of_candidates=False)
        status, _, text = await request(
            http, "PATCH", resource, frag, **{"Content-Type": FRAG}
        )
        assert status == 204, text
        frag = build_sdpfrag(**ours, candidates=many[room:], end_of_candidates=False)
        status, _, text = await request(
            http, "PATCH", resource, frag, **{"Content-Type": FRAG}
        )
        assert status == 400 and "too many ICE candidates" in text, text
        await peer.close()


async def test_s10_a_client_that_leaves_mid_body_is_no_internal_error(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    async with serve_agent() as served:
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", port_of(served))
            writer.write(
                b"POST /whip HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                b"Content-Length: 5000\r\n\r\nv=0\r\n"
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        # The server is fine and says so in time.
        status, _, text = await request(http, "GET", served.base_url + "/calls")
        assert status == 200 and json.loads(text) == []
    assert not [r for r in server_log.records if "internal error" in r.getMessage()]


async def test_exposure_no_cross_origin_access_without_token_or_cors_origin(
    http: aiohttp.ClientSession, server_log: pytest.LogCaptureFixture
) -> None:
    evil = "http://evil.example"
    page = "http://127.0.0.1:3000"
    async with serve_agent() as served:
        for method, path in (
            ("GET", "/calls"),
            ("GET", "/metrics"),
            ("OPTIONS", "/whip"),
        ):
            status, headers, text = await request(
                http, method, served.base_url + path, Origin=evil
            )
            assert status == 403 and "--cors-origin" in text, (path, text)
            assert "Access-Control-Allow-Origin" not in headers
        status, _, _ = await post(http, served.whip, "v=0\r\n", Origin=evil)
        assert status == 403
        # /ws is not guarded by CORS in browsers: the server refuses the upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{served.base_url}/ws", origin=evil)
        assert refused.value.status == 403
        # Same origin (the agent's own page) and non-browser clients: allowed.
        status, _, _ = await request(
            http, "GET", served.base_url + "/calls", Origin=served.base_url
        )
        assert status == 200
        status, headers, _ = await request(http, "GET", served.base_url + "/calls")
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
    async with serve_agent(cors_origins=(page,)) as served:
        status, headers, _ = await request(
            http, "GET", served.base_url + "/calls", Origin=page
        )
        assert status == 200 and headers["Access-Control-Allow-Origin"] == page
        assert "Location" in headers["Access-Control-Expose-Headers"]
        status, _, _ = await request(
            http, "GET", served.base_url + "/calls", Origin=evil
        )
        assert status == 403
    async with serve_agent(token="t") as served:
        # With a token a page on any origin may call: it must know the token.
        status, headers, _ = await request(http, "OPTIONS", served.whip, Origin=evil)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
        status, _, _ = await request(
            http, "GET", served.base_url + "/calls", Origin=evil
        )
        assert status == 401


async def test_s5_a_rejected_restart_is_not_counted(
    http: aiohttp.ClientSession,
    tmp_path: Path,
    server_log: pytest.LogCaptureFixture,
) -> None:
    """Two restart PATCHes the server rejects, then one real restart from the
    client: both ends count exactly one."""
    from tests.support.callagent_cli import call, only_call

    scenario = tmp_path / "restart.yaml"
    scenario.write_text(
        "name: whip-restart\nduration: 4s\n"
        "steps:\n  - {at: 2s, do: ice.restart, side: caller}\n"
        "expect: {ice_restarts: 1}\n"
    )
    reports = tmp_path / "served"
    reports.mkdir()
    out = tmp_path / "client.json"
    async with serve_agent(report_dir=reports) as served:
        opened = asyncio.Event()
        open_call = served.backend.open_call

        async def open_and_tell(*args: Any, **kwargs: Any) -> Any:
            result = await open_call(*args, **kwargs)
            opened.set()  # the resource is registered before the next await
            return result

        served.backend.open_call = open_and_tell  # type: ignore[method-assign]
        client = asyncio.create_task(
            call(served.whip, "--scenario", str(scenario), "--report", str(out))
        )
        await asyncio.wait_for(opened.wait(), 15)
        (resource,) = served.server.resources.values()
        url = f"{served.whip}/{resource.id}"
        for candidate in (
            "candidate:1 1 udp 2130706431 127.0.0.2 5000 typ",  # malformed
            "candidate:1 1 udp 2130706431 127.0.0.2 99999 typ host",  # S6's port
        ):
            restart = build_sdpfrag(
                ufrag="Bad1", pwd="abcdefghijklmnopqrstuvwx", candidates=[candidate]
            )
            status, _, text = await request(
                http, "PATCH", url, restart, **{"Content-Type": FRAG, "If-Match": "*"}
            )
            assert status == 400, text
        code, stdout, stderr = await client
        assert code == 0, stdout + stderr
    ours = only_call(out)["metrics"]["ice_restarts"]
    (served_file,) = reports.glob("whip-*.json")
    theirs = only_call(served_file)["metrics"]["ice_restarts"]
    assert ours["total"] == 1 and ours["local"] == 1, ours
    assert theirs["total"] == 1 and theirs["remote"] == 1, theirs
    assert theirs["level"] == "warning"
