"""``/ws``: a small bidirectional signalling channel (JSON over a WebSocket).

Theory of operation
-------------------
WHIP lets only the client restart ICE, and nothing else can be renegotiated
(RFC 9725 §4.3). A test agent must also re-offer *toward* the far end (its own
ICE restart, a new certificate), so the server also speaks this channel: one
WebSocket per call, one JSON object per text message::

    {"type": "offer",     "sdp": "v=0..."}
    {"type": "answer",    "sdp": "v=0...", "call": "ws-1a2b..."}
    {"type": "candidate", "candidate": "candidate:1 1 udp ...", "sdpMid": "0"}
    {"type": "candidate", "candidate": null}          end-of-candidates
    {"type": "bye",       "reason": "..."}
    {"type": "error",     "message": "..."}           server -> client only

The client opens the call with an ``offer`` and gets an ``answer`` (with the
call id). After that, either side may send an ``offer`` at any time and the
other answers it; the server's peer re-offers through :meth:`WsChannel.
request_answer` (wired as ``Peer.renegotiate``), which waits for the answer
with a timeout. Glare (both offered at once): the server is the polite side
(JSEP §4.1.8.2, "perfect negotiation"): it rolls its own offer back and
answers the client's. A bad message gets an ``error`` message back and the
channel stays open; ``bye`` or closing the socket ends the call, and when the
call ends on the server (hang-up, failure, shutdown) the server sends ``bye``
and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from agent.errors import AgentError, SignalingError
from agent.signaling.candidates import (
    CandidateBudget,
    check_candidate,
    check_sdp_candidates,
)
from agent.signaling.session import CallBackend, CallSession, OfferContext, ServerBusy

logger = logging.getLogger(__name__)

__all__ = ["WsChannel", "WsMessage", "encode_message", "parse_message", "serve_ws"]

MESSAGE_TYPES = ("offer", "answer", "candidate", "bye", "error")
#: How long a re-offer waits for the far end's answer.
ANSWER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WsMessage:
    type: str
    sdp: str | None = None
    candidate: str | None = None
    sdp_mid: str | None = None
    text: str | None = None  # bye reason or error message


def parse_message(raw: str) -> WsMessage:
    """One JSON message; :class:`SignalingError` (one sentence) if unusable."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SignalingError(f"message is not JSON: {exc}") from exc
    except RecursionError as exc:
        # '[' * 2000 is valid-looking JSON that exhausts the parser's stack.
        raise SignalingError("message is nested too deeply to be one") from exc
    if not isinstance(data, dict):
        raise SignalingError("message must be a JSON object")
    kind = data.get("type")
    if kind not in MESSAGE_TYPES:
        raise SignalingError(
            f"message type must be one of {', '.join(MESSAGE_TYPES)}, got {kind!r}"
        )
    if kind in ("offer", "answer"):
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise SignalingError(f"{kind} message needs an 'sdp' string")
        return WsMessage(kind, sdp=sdp)
    if kind == "candidate":
        candidate = data.get("candidate")
        if candidate is not None and not isinstance(candidate, str):
            raise SignalingError("candidate message: 'candidate' must be a string")
        mid = data.get("sdpMid")
        # An empty candidate string is how browsers say end-of-candidates.
        return WsMessage(
            kind,
            candidate=candidate or None,
            sdp_mid=mid if isinstance(mid, str) else None,
        )
    text = data.get("reason") if kind == "bye" else data.get("message")
    return WsMessage(kind, text=text if isinstance(text, str) else None)


def encode_message(message: WsMessage, **extra: Any) -> str:
    out: dict[str, Any] = {"type": message.type}
    if message.type in ("offer", "answer"):
        out["sdp"] = message.sdp
    elif message.type == "candidate":
        out["candidate"] = message.candidate
        out["sdpMid"] = message.sdp_mid
    elif message.type == "bye":
        out["reason"] = message.text
    elif message.type == "error":
        out["message"] = message.text
    out.update(extra)
    return json.dumps(out)


class TextSocket(Protocol):
    """What we use of aiohttp's server and client WebSockets."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...


class WsChannel:
    """Our end of one ``/ws`` socket: sending, and re-offers awaiting answers."""

    def __init__(
        self, socket: TextSocket, *, answer_timeout_s: float = ANSWER_TIMEOUT_S
    ) -> None:
        self.socket = socket
        self.answer_timeout_s = answer_timeout_s
        self._pending: asyncio.Future[str] | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: WsMessage, **extra: Any) -> None:
        if self.socket.closed:
            raise ConnectionError("signalling WebSocket is closed")
        await self.socket.send_str(encode_message(message, **extra))

    @property
    def offer_pending(self) -> bool:
        return self._pending is not None and not self._pending.done()

    async def request_answer(self, offer: str) -> str:
        """Send our offer and wait for the far end's answer (``Peer.renegotiate``)."""
        async with self._lock:  # one offer in flight at a time
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._pending = future
            try:
                await self.send(WsMessage("offer", sdp=offer))
                return await asyncio.wait_for(future, self.answer_timeout_s)
            except TimeoutError:
                raise TimeoutError(
                    f"no answer on /ws within {self.answer_timeout_s:g} s"
                ) from None
            finally:
                self._pending = None

    def take_answer(self, sdp: str) -> bool:
        """Deliver an answer to our pending offer; False if none is pending."""
        if not self.offer_pending:
            return False
        assert self._pending is not None
        self._pending.set_result(sdp)
        return True

    def fail_pending(self, why: str) -> None:
        if self.offer_pending:
            assert self._pending is not None
            self._pending.set_exception(SignalingError(why))


#: frames that end the channel (``async for`` on the socket stops on these)
_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


async def serve_ws(
    request: web.Request,
    backend: CallBackend,
    *,
    max_message: int,
    first_offer_timeout_s: float = 10.0,
) -> web.WebSocketResponse:
    """Run one ``/ws`` connection until the socket closes or the call ends.

    A socket that sends no offer within ``first_offer_timeout_s`` is closed: it
    would hold a connection slot with no call to show for it.
    """
    socket = web.WebSocketResponse(heartbeat=15.0, max_msg_size=max_message)
    await socket.prepare(request)
    channel = WsChannel(socket)
    session: CallSession | None = None
    watcher: asyncio.Task[None] | None = None
    budget = CandidateBudget()
    try:
        while True:
            try:
                frame = await socket.receive(
                    timeout=first_offer_timeout_s if session is None else None
                )
            except TimeoutError:
                await _error(
                    channel, f"no offer within {first_offer_timeout_s:g} s; closing"
                )
                break
            if frame.type in _CLOSING:
                break
            if frame.type is not WSMsgType.TEXT:
                if frame.type is WSMsgType.BINARY:
                    await _error(channel, "binary messages are not understood")
                continue
            try:
                message = parse_message(frame.data)
                if message.type == "offer":
                    assert message.sdp is not None
                    count = check_sdp_candidates(message.sdp, "offer")
                    if session is None:
                        budget.restart(count)
                        session = await _open(request, backend, channel, message.sdp)
                        if session is None:
                            break
                        watcher = asyncio.create_task(_bye_when_ended(session, channel))
                        continue
                    if channel.offer_pending:
                        # Glare: we are polite; the peer rolls our offer back.
                        channel.fail_pending("glare: the far end offered too")
                    answer = await session.accept_offer(message.sdp)
                    # Every re-offer may restart ICE: count its candidates anew.
                    budget.restart(count)
                    await channel.send(WsMessage("answer", sdp=answer))
                elif message.type == "answer":
                    assert message.sdp is not None
                    if not channel.take_answer(message.sdp):
                        await _error(channel, "answer without a pending offer")
                elif message.type == "candidate":
                    if session is None:
                        await _error(channel, "candidate before the offer")
                    elif message.candidate is None:
                        await session.add_candidate(None)
                    else:
                        candidate = check_candidate(message.candidate)
                        budget.take(1)
                        await session.add_candidate(candidate)
                elif message.type == "bye":
                    if session is not None:
                        await session.hang_up(
                            by_remote=True, reason=message.text or "bye on /ws"
                        )
                    break
                else:
                    await _error(channel, "error messages go server -> client only")
            except (SignalingError, ValueError) as exc:
                await _error(channel, str(exc))
            except AgentError as exc:
                # Our side could not act on it (a call that cannot bind):
                # the far end hears why, and the channel stays open.
                await _error(channel, str(exc), code=503)
    finally:
        channel.fail_pending("the signalling WebSocket closed")
        if watcher is not None:
            watcher.cancel()
        if session is not None and not session.ended.is_set():
            await session.hang_up(by_remote=True, reason="WebSocket closed")
        await socket.close()
    return socket


async def _open(
    request: web.Request, backend: CallBackend, channel: WsChannel, offer: str
) -> CallSession | None:
    context = OfferContext(
        mode="ws-server",
        remote_address=request.remote,
        user_agent=request.headers.get("User-Agent"),
    )
    try:
        session, answer = await backend.open_call(
            offer, context, renegotiate=channel.request_answer
        )
    except ServerBusy as exc:
        await _error(channel, str(exc), code=503)
        return None
    await channel.send(WsMessage("answer", sdp=answer), call=session.call_id)
    return session


async def _bye_when_ended(session: CallSession, channel: WsChannel) -> None:
    await session.ended.wait()
    try:
        await channel.send(WsMessage("bye", text="call ended"))
        socket = channel.socket
        if isinstance(socket, web.WebSocketResponse):
            await socket.close()
    except ConnectionError:
        pass


async def _error(channel: WsChannel, text: str, **extra: Any) -> None:
    try:
        await channel.send(WsMessage("error", text=text), **extra)
    except ConnectionError:
        logger.debug("cannot report %r: socket closed", text)
