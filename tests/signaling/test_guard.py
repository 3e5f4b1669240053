"""Issue 11, S8: slow clients cannot hold the server (loopback, lowered limits).

The limits are lowered (8 connections, 1 s to send a request head or body)
so the tests are fast; ``callagent serve`` runs the same guard with its
defaults (:class:`agent.signaling.guard.Limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from agent.signaling.guard import Limits
from tests.signaling.test_hostile_serve import (
    port_of,
    raw_exchange,
    status_of,
)
from tests.signaling.test_whip_server import post, request
from tests.support.whip import far_end, serve_agent

LIMITS = Limits(max_connections=8, header_timeout_s=1.0, body_timeout_s=1.0)


async def slow_sender(port: int, cut: list[float]) -> None:
    """A slowloris: a request head, one header line every 0.2 s, for ever.
    Appends the seconds it was held once the server cuts it."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        writer.write(b"GET /calls HTTP/1.1\r\nHost: x\r\n")
        while not reader.at_eof():
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1024), 0.2)
    except ConnectionError:
        pass
    finally:
        cut.append(time.monotonic() - start)
        writer.close()


async def test_s8_slow_heads_bodies_and_idle_connections_are_cut_in_time(
    server_log: pytest.LogCaptureFixture,
) -> None:
    async with serve_agent(limits=LIMITS) as served:
        port = port_of(served)
        cut: list[float] = []
        await asyncio.wait_for(slow_sender(port, cut), 10)
        (held,) = cut
        assert 0.9 <= held < 3.0, held
        # A head that is in, and a body that never comes: 408.
        started = time.monotonic()
        response = await raw_exchange(
            port,
            b"POST /whip HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: 100\r\n\r\nv=0\r\n",
        )
        assert status_of(response) == 408, response
        assert time.monotonic() - started < 3.0
        # An idle keep-alive connection after a request: closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /calls HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)  # the answer, then EOF
        assert b" 200 " in rest.split(b"\r\n", 1)[0]
        assert 0.9 <= time.monotonic() - started < 3.0
        writer.close()


async def test_s8_a_real_call_works_while_slow_connections_are_held(
    server_log: pytest.LogCaptureFixture,
) -> None:
    async with serve_agent(limits=LIMITS) as served:
        port = port_of(served)
        guard = served.server.guard
        cut: list[float] = []
        stop = asyncio.Event()
        most = 0

        async def keep_forty_open() -> None:
            nonlocal most
            senders: set[asyncio.Task[None]] = set()
            while not stop.is_set():
                while len(senders) < 40:
                    senders.add(asyncio.create_task(slow_sender(port, cut)))
                most = max(most, len(guard.connections))
                _, senders = await asyncio.wait(senders, timeout=0.05)
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

        attack = asyncio.create_task(keep_forty_open())
        try:
            peer, listener = far_end()
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                status, headers, answer = await post(
                    http, served.whip, await peer.create_offer()
                )
                assert status == 201, answer
                await peer.accept_answer(answer)
                await peer.wait_connected(10)
                await listener.until(lambda: listener.rtp >= 50, 15)
                status, _, _ = await request(
                    http, "DELETE", served.base_url + headers["Location"]
                )
                assert status == 200
            await peer.close()
        finally:
            stop.set()
            await attack
    assert most <= LIMITS.max_connections, most
    assert guard.evicted >= 40, guard.evicted  # the slow ones made room
    assert len(cut) >= 40


async def test_busy_connections_are_not_evicted_and_a_full_server_says_503(
    server_log: pytest.LogCaptureFixture,
) -> None:
    limits = Limits(max_connections=2, header_timeout_s=5.0, body_timeout_s=1.0)
    async with (
        serve_agent(limits=limits) as served,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{served.base_url}/ws") as first,
        http.ws_connect(f"{served.base_url}/ws") as second,
    ):
        # Both sockets are busy (their handler runs): the third is turned away.
        response = await raw_exchange(
            port_of(served), b"GET /calls HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert status_of(response) == 503, response
        assert not first.closed and not second.closed
        assert served.server.guard.refused == 1


async def test_a_ws_that_sends_no_offer_is_closed_after_the_header_timeout(
    server_log: pytest.LogCaptureFixture,
) -> None:
    async with (
        serve_agent(limits=LIMITS) as served,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{served.base_url}/ws") as socket,
    ):
        started = time.monotonic()
        reply = await socket.receive_json(timeout=5)
        assert reply["type"] == "error" and "no offer within 1 s" in reply["message"]
        closing = await socket.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert time.monotonic() - started < 3.0
