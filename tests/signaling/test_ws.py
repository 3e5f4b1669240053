"""The ``/ws`` signalling channel: offer/answer both ways, re-offers (ICE restarts
from either side), candidates, bad messages, bye — with real calls behind it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.errors import SignalingError
from agent.signaling.ws import WsMessage, encode_message, parse_message
from agent.stack.peer import Peer
from tests.support.whip import FarEnd, Served, far_end, serve_agent


class WsClient:
    """The far end's side of /ws: answers the server's offers, collects errors."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse, peer: Peer) -> None:
        self.socket = socket
        self.peer = peer
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[str] = asyncio.Queue()
        self.byes: asyncio.Queue[str | None] = asyncio.Queue()
        self.offers_answered = 0
        self.reader = asyncio.create_task(self._read())
        peer.renegotiate = self.renegotiate

    async def _read(self) -> None:
        async for frame in self.socket:
            message = json.loads(frame.data)
            if message["type"] == "offer":
                answer = await self.peer.accept_offer(message["sdp"])
                await self.send({"type": "answer", "sdp": answer})
                self.offers_answered += 1
            elif message["type"] == "answer":
                await self.answers.put(message)
            elif message["type"] == "error":
                await self.errors.put(message["message"])
            elif message["type"] == "bye":
                await self.byes.put(message.get("reason"))

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send_str(json.dumps(message))

    async def renegotiate(self, offer: str) -> str:
        await self.send({"type": "offer", "sdp": offer})
        answer = await asyncio.wait_for(self.answers.get(), 10)
        return str(answer["sdp"])


@pytest.fixture
async def ws_call(
    tmp_path: Path,
) -> AsyncIterator[tuple[Served, WsClient, FarEnd, str]]:
    async with (
        serve_agent(report_dir=tmp_path) as served,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{served.base_url}/ws") as socket,
    ):
        peer, listener = far_end()
        client = WsClient(socket, peer)
        await client.send({"type": "offer", "sdp": await peer.create_offer()})
        answer = await asyncio.wait_for(client.answers.get(), 10)
        assert answer["call"].startswith("ws-")
        await peer.accept_answer(answer["sdp"])
        await peer.wait_connected(10)
        await asyncio.wait_for(
            served.backend.calls[answer["call"]].connected.wait(), 10
        )
        try:
            yield served, client, listener, answer["call"]
        finally:
            client.reader.cancel()
            await peer.close()


async def test_agent_initiated_restart_toward_the_far_end_over_ws(
    ws_call: tuple[Served, WsClient, FarEnd, str],
) -> None:
    served, client, listener, call_id = ws_call
    agent_peer = served.backend.calls[call_id].call.peer
    await listener.until(lambda: listener.rtp >= 10, 10)

    assert await asyncio.wait_for(agent_peer.restart_ice(), 20)
    await client.peer.restart_settled(15)
    assert client.offers_answered == 1
    assert listener.restarts == [("started", 1, "remote"), ("completed", 1, "")]
    before = listener.rtp
    await listener.until(lambda: listener.rtp >= before + 10, 10)
    live = served.backend.calls[call_id].live()
    assert live["metrics"]["ice_restarts"]["local"] == 1
    assert live["metrics"]["ice_restarts"]["remote"] == 0


async def test_far_end_re_offer_restart_over_ws(
    ws_call: tuple[Served, WsClient, FarEnd, str],
) -> None:
    served, client, listener, call_id = ws_call
    assert await asyncio.wait_for(client.peer.restart_ice(), 20)
    await served.backend.calls[call_id].call.peer.restart_settled(15)
    live = served.backend.calls[call_id].live()
    assert live["metrics"]["ice_restarts"]["remote"] == 1
    assert live["metrics"]["ice_restarts"]["local"] == 0
    before = listener.rtp
    await listener.until(lambda: listener.rtp >= before + 10, 10)


async def test_bad_messages_get_errors_and_the_channel_stays_open(
    ws_call: tuple[Served, WsClient, FarEnd, str],
) -> None:
    served, client, listener, call_id = ws_call
    await client.socket.send_str("not json")
    await client.send({"type": "dance"})
    await client.send({"type": "answer", "sdp": "v=0\r\n"})
    await client.send({"type": "offer", "sdp": "garbage"})
    await client.send({"type": "candidate", "candidate": "candidate:nonsense"})
    errors = [await asyncio.wait_for(client.errors.get(), 10) for _ in range(5)]
    assert "not JSON" in errors[0]
    assert "message type must be one of" in errors[1]
    assert "without a pending offer" in errors[2]
    assert "not SDP" in errors[3]
    assert "candidate" in errors[4]
    before = listener.rtp
    await listener.until(lambda: listener.rtp >= before + 10, 10)
    assert call_id in served.backend.calls


async def test_bye_ends_the_call_and_writes_its_report(
    ws_call: tuple[Served, WsClient, FarEnd, str], tmp_path: Path
) -> None:
    served, client, _, call_id = ws_call
    task = served.backend.calls[call_id].task
    assert task is not None
    await client.send({"type": "bye", "reason": "done"})
    await asyncio.wait_for(asyncio.shield(task), 10)
    report = json.loads((tmp_path / f"{call_id}.json").read_text())
    (entry,) = report["calls"]
    assert entry["mode"] == "ws-server" and entry["hung_up_by"] == "caller"
    assert entry["ended_by"] == "done" and entry["connected"]
    await asyncio.wait_for(client.reader, 10)  # the server closed the socket


async def test_server_shutdown_says_bye(
    ws_call: tuple[Served, WsClient, FarEnd, str],
) -> None:
    served, client, _, _ = ws_call
    await served.backend.shutdown("test shutdown")
    assert await asyncio.wait_for(client.byes.get(), 10) == "call ended"


def test_message_codec() -> None:
    assert parse_message('{"type":"candidate","candidate":""}') == WsMessage(
        "candidate"
    )
    message = WsMessage("candidate", candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host")
    assert parse_message(encode_message(message)) == message
    for bad in ("[]", '{"type":"offer"}', '{"type":"candidate","candidate":5}'):
        with pytest.raises(SignalingError):
            parse_message(bad)
