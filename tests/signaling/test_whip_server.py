"""The WHIP endpoint's HTTP contract (RFC 9725), with real calls behind it.

Every offer here is a real agent peer's (or a hand-broken copy of one), and
every accepted call really connects over loopback UDP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from agent.signaling.sdpfrag import build_sdpfrag, parse_sdpfrag
from agent.stack.peer import Peer
from tests.support.whip import FarEnd, Served, far_end, serve_agent

SDP = "application/sdp"
FRAG = "application/trickle-ice-sdpfrag"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: str | bytes,
    content_type: str = SDP,
    **headers: str,
) -> tuple[int, CIMultiDict[str], str]:
    async with http.post(
        url, data=body, headers={"Content-Type": content_type, **headers}
    ) as response:
        return response.status, response.headers.copy(), await response.text()


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: str | None = None,
    **headers: str,
) -> tuple[int, CIMultiDict[str], str]:
    async with http.request(method, url, data=body, headers=headers) as response:
        return response.status, response.headers.copy(), await response.text()


def only_report(directory: Path) -> dict[str, Any]:
    (path,) = directory.glob("whip-*.json")
    report = json.loads(path.read_text())
    assert isinstance(report, dict)
    return report


async def connected_call(
    http: aiohttp.ClientSession, served: Served, **headers: str
) -> tuple[Peer, FarEnd, str, CIMultiDict[str]]:
    """A far-end peer calls the endpoint; returns once both sides are up."""
    peer, listener = far_end()
    status, got, answer = await post(
        http, served.whip, await peer.create_offer(), **headers
    )
    assert status == 201, answer
    await peer.accept_answer(answer)
    await peer.wait_connected(10)
    return peer, listener, served.base_url + got["Location"], got


async def test_post_answers_201_with_location_etag_and_a_real_call(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve_agent(report_dir=tmp_path) as served:
        peer, listener = far_end()
        status, headers, answer = await post(
            http, served.whip, await peer.create_offer()
        )
        assert status == 201, answer
        assert headers["Content-Type"].startswith(SDP)
        assert headers["Location"].startswith("/whip/")
        assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
        assert headers["Accept-Patch"] == FRAG
        # No token, no --cors-origin: no cross-origin access (issue 11).
        assert "Access-Control-Allow-Origin" not in headers
        assert "a=sendrecv" in answer  # the agent sends audio back
        await peer.accept_answer(answer)
        await peer.wait_connected(10)
        await listener.until(lambda: listener.rtp >= 10, 10)  # audio from the agent

        resource = served.base_url + headers["Location"]
        status, _, _ = await request(http, "DELETE", resource)
        assert status == 200
        report = only_report(tmp_path)
        assert report["version"] == 1 and report["complete"] is True
        (call,) = report["calls"]
        assert call["mode"] == "whip-server" and call["local_side"] == "callee"
        assert call["connected"] and call["error"] is None
        assert call["hung_up_by"] == "caller" and call["ended_by"] == "WHIP DELETE"
        assert call["media"]["caller_to_callee"]["packets_received"] > 0
        assert call["media"]["callee_to_caller"]["observed"] is False
        assert call["sides"]["caller"]["certificate"]["fingerprint_sha256"]
        assert call["expectations"] == {"passed": True, "checks": []}
        # The resource is gone.
        status, _, _ = await request(http, "DELETE", resource)
        assert status == 404
        await peer.close()


async def test_sendonly_offer_gets_a_recvonly_answer_and_still_connects(
    http: aiohttp.ClientSession,
) -> None:
    async with serve_agent() as served:
        peer, _ = far_end()
        offer = (await peer.create_offer()).replace("a=sendrecv", "a=sendonly")
        status, _, answer = await post(http, served.whip, offer)
        assert status == 201, answer
        assert "a=recvonly" in answer and "a=sendrecv" not in answer
        await peer.accept_answer(answer)
        await peer.wait_connected(10)
        await peer.close()


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda sdp: "", "empty"),
        (lambda sdp: "hello, this is not SDP", "not SDP"),
        (lambda sdp: "v=0\r\nthis is garbage\r\n\x00\x01", "no audio"),
        (lambda sdp: "v=0\r\nm=audio port UDP/TLS/RTP/SAVPF 111\r\n", "malformed"),
        (lambda sdp: sdp.replace("m=audio", "m=video"), "no audio"),
        (
            lambda sdp: "\r\n".join(
                line for line in sdp.split("\r\n") if not line.startswith("a=ice-")
            ),
            "ufrag",
        ),
        (
            lambda sdp: "\r\n".join(
                line
                for line in sdp.split("\r\n")
                if not line.startswith("a=fingerprint")
            ),
            "fingerprint",
        ),
    ],
)
async def test_unusable_offers_get_400_with_one_line_reason(
    http: aiohttp.ClientSession, mangle: Any, reason: str
) -> None:
    async with serve_agent() as served:
        peer, _ = far_end()
        offer = mangle(await peer.create_offer())
        status, _, text = await post(http, served.whip, offer)
        assert status == 400, text
        assert reason in text and text.count("\n") == 1
        assert served.backend.calls == {}
        await peer.close()


async def test_wrong_content_type_is_415_and_oversized_body_413(
    http: aiohttp.ClientSession,
) -> None:
    async with serve_agent(max_body=4096) as served:
        status, _, text = await post(http, served.whip, "v=0\r\n", "text/plain")
        assert status == 415 and "application/sdp" in text
        status, _, text = await post(http, served.whip, "v=0\r\n" + "a=x\r\n" * 2000)
        assert status == 413 and "4096" in text

        # Chunked, so no Content-Length to check up front: aiohttp's limit holds.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"a" * 1024

        async with http.post(
            served.whip, data=chunks(), headers={"Content-Type": SDP}
        ) as response:
            assert response.status == 413


async def test_bearer_token_is_required_when_set(http: aiohttp.ClientSession) -> None:
    async with serve_agent(token="s3cret") as served:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret"},
        ):
            status, got, _ = await post(http, served.whip, "v=0\r\n", **headers)
            assert status == 401, headers
            assert got["WWW-Authenticate"].startswith("Bearer")
        for path in ("/calls", "/metrics"):
            status, _, _ = await request(http, "GET", served.base_url + path)
            assert status == 401
        auth = {"Authorization": "Bearer s3cret"}
        peer, _, resource, _ = await connected_call(http, served, **auth)
        status, _, _ = await request(http, "DELETE", resource)
        assert status == 401  # a resource URL alone is not enough
        status, _, _ = await request(http, "DELETE", resource, **auth)
        assert status == 200
        await peer.close()


async def test_patch_trickle_restart_and_if_match_preconditions(
    http: aiohttp.ClientSession,
) -> None:
    async with serve_agent() as served:
        peer, _, resource, headers = await connected_call(http, served)
        etag = headers["ETag"]
        params = peer.gatherer.getLocalParameters()
        ours = {"ufrag": str(params.usernameFragment), "pwd": str(params.password)}

        # Trickle (same credentials): 204, with or without If-Match.
        frag = build_sdpfrag(ufrag=ours["ufrag"], pwd=ours["pwd"], candidates=[])
        for extra in ({}, {"If-Match": etag}):
            status, _, text = await request(
                http, "PATCH", resource, frag, **{"Content-Type": FRAG}, **extra
            )
            assert status == 204, text
        status, _, _ = await request(
            http, "PATCH", resource, frag, **{"Content-Type": SDP}
        )
        assert status == 415

        # An ICE restart: new credentials.
        restart = build_sdpfrag(
            ufrag="Rst1", pwd="abcdefghijklmnopqrstuvwx", candidates=[]
        )
        status, _, text = await request(
            http, "PATCH", resource, restart, **{"Content-Type": FRAG}
        )
        assert status == 428 and "If-Match" in text
        status, _, text = await request(
            http,
            "PATCH",
            resource,
            restart,
            **{"Content-Type": FRAG, "If-Match": '"stale"'},
        )
        assert status == 412
        status, got, text = await request(
            http, "PATCH", resource, restart, **{"Content-Type": FRAG, "If-Match": etag}
        )
        assert status == 200, text
        assert got["Content-Type"].startswith(FRAG)
        assert got["ETag"] != etag
        answer = parse_sdpfrag(text)
        assert answer.ufrag and answer.pwd and answer.candidates
        assert answer.end_of_candidates
        # The old ETag is stale now, for a trickle too.
        status, _, _ = await request(
            http,
            "PATCH",
            resource,
            restart,
            **{"Content-Type": FRAG, "If-Match": etag},
        )
        assert status == 412
        # Garbage fragment: 400, one line.
        status, _, text = await request(
            http,
            "PATCH",
            resource,
            "m=audio\r\nnot a fragment\r\n",
            **{"Content-Type": FRAG},
        )
        assert status == 400 and text.count("\n") == 1
        await peer.close()


async def test_unknown_resources_are_404(http: aiohttp.ClientSession) -> None:
    async with serve_agent() as served:
        for method in ("PATCH", "DELETE"):
            status, _, _ = await request(
                http, method, f"{served.whip}/nope", "", **{"Content-Type": FRAG}
            )
            assert status == 404
        status, _, _ = await request(http, "GET", served.whip)
        assert status == 405


async def test_beyond_max_calls_is_503_and_a_slot_frees_when_a_call_ends(
    http: aiohttp.ClientSession,
) -> None:
    async with serve_agent(max_calls=1) as served:
        first, _, resource, _ = await connected_call(http, served)
        second, _ = far_end(seed=9)
        offer = await second.create_offer()
        status, headers, text = await post(http, served.whip, offer)
        assert status == 503 and "Retry-After" in headers and "1" in text
        await request(http, "DELETE", resource)
        status, _, text = await post(http, served.whip, offer)
        assert status == 201, text
        await asyncio.gather(first.close(), second.close())


async def test_cors_preflight(http: aiohttp.ClientSession) -> None:
    page = "http://127.0.0.1:9999"
    async with serve_agent(cors_origins=(page,)) as served:
        status, headers, _ = await request(
            http,
            "OPTIONS",
            served.whip,
            Origin=page,
            **{"Access-Control-Request-Method": "POST"},
        )
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == page
        assert "PATCH" in headers["Access-Control-Allow-Methods"]
        allowed = headers["Access-Control-Allow-Headers"]
        assert "If-Match" in allowed and "Authorization" in allowed
        assert headers["Accept-Post"] == SDP


async def test_a_flood_of_bad_requests_does_not_hurt_a_live_call(
    http: aiohttp.ClientSession,
) -> None:
    async with serve_agent(max_body=8192) as served:
        peer, listener, resource, _ = await connected_call(http, served)
        bad: list[Any] = []
        for i in range(60):
            bad.append(post(http, served.whip, f"garbage {i}"))
            bad.append(post(http, served.whip, "v=0\r\n", "application/json"))
            bad.append(post(http, served.whip, "v=0\r\n" + "x" * 9000))
            bad.append(post(http, served.whip, bytes(range(256)) * 4))
            bad.append(
                request(http, "PATCH", resource, "\x00", **{"Content-Type": FRAG})
            )
        statuses = {status for status, _, _ in await asyncio.gather(*bad)}
        assert statuses <= {400, 413, 415}, statuses
        # The server still serves, and the call still carries media.
        before = listener.rtp
        await listener.until(lambda: listener.rtp >= before + 10, 10)
        status, _, text = await request(http, "GET", served.base_url + "/calls")
        assert status == 200 and len(json.loads(text)) == 1
        await peer.close()


async def test_calls_and_metrics_show_live_values(http: aiohttp.ClientSession) -> None:
    async with serve_agent() as served:
        peer, listener, _, _ = await connected_call(http, served)
        await listener.until(lambda: listener.rtp >= 5, 10)
        status, _, text = await request(http, "GET", served.base_url + "/calls")
        assert status == 200
        (call,) = json.loads(text)
        assert call["mode"] == "whip-server" and call["state"] == "connected"
        assert call["metrics"]["ice_restarts"]["total"] == 0
        assert call["media"]["caller_to_callee"]["packets_received"] > 0
        assert call["remote_address"] == "127.0.0.1"

        status, headers, text = await request(http, "GET", served.base_url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert "callagent_server_active_calls 1.0" in text
        labels = f'call="{call["id"]}",scenario="whip-server"'
        assert f"callagent_call_connected{{{labels}}} 1.0" in text
        assert "callagent_packets_received_total{" in text
        assert "callagent_call_setup_seconds{" in text
        await peer.close()
