"""RFC 9725 (WHIP) to the letter: one test per MUST that binds the client or
the endpoint, against the real server with real calls behind it.

``docs/whip.md`` ("RFC 9725 rules") lists each rule next to its test here.
The client tests record what :class:`WhipClient` puts on the wire with a
middleware on the real endpoint's application, so the endpoint still answers
(and a restart really happens).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from agent.call.server import CallServer
from agent.signaling.sdpfrag import build_sdpfrag, parse_sdpfrag
from agent.signaling.session import IceCredentials
from agent.signaling.whip_client import WhipClient
from agent.signaling.whip_server import ServerSettings, WhipServer
from agent.stack.peer import Peer
from tests.support.whip import far_end

SDP = "application/sdp"
FRAG = "application/trickle-ice-sdpfrag"
NEW_PWD = "abcdefghijklmnopqrstuvwx"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Endpoint:
    whip: str
    seen: list[Seen] = field(default_factory=list)

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]


@asynccontextmanager
async def endpoint() -> AsyncIterator[Endpoint]:
    """The real endpoint, recording every request a client sends it."""
    backend = CallServer(address="127.0.0.1", run_meta=lambda seed: {"seed": seed})
    server = WhipServer(backend, ServerSettings())
    box = Endpoint("")

    @web.middleware
    async def record(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        body = await request.text() if request.can_read_body else ""
        box.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        return await handler(request)

    server.app.middlewares.insert(0, record)
    listening = await server.listen("127.0.0.1", 0)
    box.whip = f"{listening.base_url}/whip"
    try:
        yield box
    finally:
        await backend.shutdown("test over")
        await listening.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield session


async def session(client: WhipClient) -> Peer:
    """A far-end peer calls through ``client``; returns once connected."""
    peer, _ = far_end()
    answer = await client.offer(await peer.create_offer())
    await peer.accept_answer(answer)
    await peer.wait_connected(10)
    return peer


async def restart(
    http: aiohttp.ClientSession, resource: str, if_match: str | None
) -> tuple[int, CIMultiDict[str], str]:
    frag = build_sdpfrag(ufrag="Rst9", pwd=NEW_PWD, candidates=[])
    headers = {"Content-Type": FRAG}
    if if_match is not None:
        headers["If-Match"] = if_match
    async with http.patch(resource, data=frag, headers=headers) as response:
        return response.status, response.headers.copy(), await response.text()


# --- the endpoint -------------------------------------------------------------


async def test_s1_post_gets_201_an_sdp_answer_and_a_location() -> None:
    """§4.2: 201 Created, the answer as application/sdp, Location of the session."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        assert client.resource is not None
        assert client.resource.path.startswith("/whip/")
        await peer.close()


async def test_s2_201_carries_a_strong_etag() -> None:
    """§4.3.1: the initial entity-tag comes in the 201's ETag (strong: quoted)."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        assert client.etag is not None and client.etag.startswith('"')
        await peer.close()


@pytest.mark.parametrize("if_match", ["*", '"*"'])
async def test_s3_ice_restart_with_if_match_any_gets_200_and_a_new_etag(
    http: aiohttp.ClientSession, if_match: str
) -> None:
    """§4.3.2: ``If-Match: *`` (RFC 9110) and ``"*"`` (the RFC's example) both
    restart: 200, the endpoint's new ufrag/pwd as an sdpfrag, a new ETag."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        assert client.resource is not None
        status, headers, text = await restart(http, str(client.resource), if_match)
        assert status == 200, text
        assert headers["Content-Type"].startswith(FRAG)
        assert headers["ETag"] != client.etag
        answer = parse_sdpfrag(text)
        assert answer.ufrag and answer.pwd
        await peer.close()


async def test_s4_a_stale_entity_tag_gets_412(http: aiohttp.ClientSession) -> None:
    """§4.3.1: If-Match compared strongly with the current ETag; no match: 412."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        assert client.resource is not None
        status, _, _ = await restart(http, str(client.resource), '"stale"')
        assert status == 412
        status, _, _ = await restart(http, str(client.resource), f"W/{client.etag}")
        assert status == 412  # weak tags never match strongly
        await peer.close()


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT"])
async def test_s5_the_session_url_refuses_other_methods_with_405(
    http: aiohttp.ClientSession, method: str
) -> None:
    """§4.2: GET, HEAD, POST and PUT on the session URL get 405 (reserved)."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        assert client.resource is not None
        async with http.request(method, str(client.resource)) as response:
            assert response.status == 405
        await peer.close()


async def test_s6_delete_ends_the_session() -> None:
    """§4.2: DELETE on the session URL tears it down; it is gone afterwards."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        resource = client.resource
        await client.delete()
        assert resource is not None
        async with aiohttp.ClientSession() as http:
            async with http.delete(str(resource)) as response:
                assert response.status == 404
        await peer.close()


# --- the client ---------------------------------------------------------------


async def test_c1_client_posts_the_offer_as_application_sdp() -> None:
    """§4.2: the offer goes in a POST with Content-Type application/sdp."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        (post,) = ep.requests("POST")
        assert post.headers["Content-Type"] == SDP
        assert post.body.startswith("v=0")
        await peer.close()


async def test_c2_client_ice_restart_sends_if_match_any_and_new_credentials() -> None:
    """§4.3.2: a restart PATCH has If-Match ``*`` and the new ufrag/pwd and
    candidates; the client takes the endpoint's new ETag."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        first_etag = client.etag
        candidate = "candidate:1 1 udp 2130706431 127.0.0.2 40000 typ host"
        remote = await client.restart_ice(
            IceCredentials("Rst9", NEW_PWD, (candidate,)), "0"
        )
        (patch,) = ep.requests("PATCH")
        assert patch.headers["If-Match"] == "*"
        assert patch.headers["Content-Type"] == FRAG
        sent = parse_sdpfrag(patch.body)
        assert (sent.ufrag, sent.pwd) == ("Rst9", NEW_PWD)
        assert sent.candidates == (candidate,)
        assert remote.ufrag and client.etag not in (None, first_etag)
        await peer.close()


async def test_c3_client_trickle_sends_the_latest_entity_tag() -> None:
    """§4.3.1: a trickle PATCH carries If-Match with the latest ETag, also
    after a restart replaced it."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        await client.restart_ice(IceCredentials("Rst9", NEW_PWD), "0")
        latest = client.etag
        await client.trickle([], end=True, mid="0")
        trickle = ep.requests("PATCH")[-1]
        assert trickle.headers["If-Match"] == latest
        await peer.close()


async def test_c4_client_ends_the_session_with_delete() -> None:
    """§4.2: the client ends the session with a DELETE on its URL."""
    async with endpoint() as ep, WhipClient(ep.whip) as client:
        peer = await session(client)
        resource = client.resource
        await client.delete()
        (delete,) = ep.requests("DELETE")
        assert resource is not None and delete.path == resource.path
        await peer.close()
