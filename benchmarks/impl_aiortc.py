"""One benchmark call made of two plain ``aiortc.RTCPeerConnection``s.

This is the "plain aiortc with Opus encode/decode" profile: each side sends an
``AudioStreamTrack`` (silence, encoded to Opus by aiortc's sender in the default
executor) and consumes the far end's track with ``recv()`` (decoded by aiortc's
per-receiver decoder thread). Signaling is in-process: ``setLocalDescription``
waits for gathering, so each ``localDescription`` is complete (no trickle).

``iceServers`` is an explicit empty list: aiortc's default is a public STUN
server, and nothing here may leave the machine.
"""

from __future__ import annotations

import asyncio
import re

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

LOOPBACK = "127.0.0.1"
#: upper bound on frames one consumer reads (an hour of 20 ms frames)
MAX_FRAMES = 3600 * 50


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [LOOPBACK]


def prepare() -> None:
    """Make aioice gather its host candidate on 127.0.0.1.

    aioice skips 127.0.0.1 when gathering, and this machine may have no other
    interface (or one that is not loopback, which the benchmark must not use).
    This changes which address the host candidate is bound to, nothing else:
    ICE checks, DTLS, SRTP, RTP pacing and Opus encode/decode — the path being
    measured — are aiortc's own, untouched.
    """
    aioice.ice.get_host_addresses = _loopback_host_addresses


def _first_audio_codec(sdp: str) -> str:
    """The codec the answer puts first, i.e. the one both sides will send."""
    media = re.search(r"^m=audio \d+ \S+ (\d+)", sdp, re.MULTILINE)
    if media is None:
        return "none"
    rtpmap = re.search(rf"^a=rtpmap:{media.group(1)} (\S+)", sdp, re.MULTILINE)
    return rtpmap.group(1).lower() if rtpmap else "unknown"


def _connected(pc: RTCPeerConnection) -> asyncio.Future[None]:
    """A future done when ``pc`` is connected, failing if it fails or closes."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if future.done():
            return
        if pc.connectionState == "connected":
            future.set_result(None)
        elif pc.connectionState in ("failed", "closed"):
            future.set_exception(ConnectionError(f"connection {pc.connectionState}"))

    return future


class AiortcCall:
    """Two ``RTCPeerConnection``s, each sending and receiving Opus audio."""

    def __init__(self, index: int) -> None:
        self.index = index
        configuration = RTCConfiguration(iceServers=[])
        self.caller = RTCPeerConnection(configuration)
        self.callee = RTCPeerConnection(configuration)
        self._frames = 0
        self._consumers: list[asyncio.Task[None]] = []
        for pc in (self.caller, self.callee):
            pc.addTrack(AudioStreamTrack())
            pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._consumers.append(
            asyncio.create_task(self._consume(track), name=f"consume-{self.index}")
        )

    async def _consume(self, track: MediaStreamTrack) -> None:
        for _ in range(MAX_FRAMES):
            try:
                await track.recv()
            except MediaStreamError:
                return
            self._frames += 1

    async def connect(self, timeout_s: float) -> None:
        """Offer creation through both sides connected (in-process signaling)."""
        waiters = [_connected(self.caller), _connected(self.callee)]
        await self.caller.setLocalDescription(await self.caller.createOffer())
        await self.callee.setRemoteDescription(self.caller.localDescription)
        await self.callee.setLocalDescription(await self.callee.createAnswer())
        answer = self.callee.localDescription.sdp
        codec = _first_audio_codec(answer)
        if not codec.startswith("opus/"):
            raise ConnectionError(f"negotiated {codec}, not Opus")
        await self.caller.setRemoteDescription(self.callee.localDescription)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*waiters, return_exceptions=True), timeout_s
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def packets_received(self) -> int:
        """RTP packets received by both sides (``inbound-rtp`` stats, public API)."""
        total = 0
        for pc in (self.caller, self.callee):
            for receiver in pc.getReceivers():
                report = await receiver.getStats()
                total += sum(
                    stats.packetsReceived
                    for stats in report.values()
                    if stats.type == "inbound-rtp"
                )
        return total

    def frames_decoded(self) -> int | None:
        return self._frames

    async def close(self) -> None:
        await self.caller.close()
        await self.callee.close()
        for consumer in self._consumers:
            consumer.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)


def new_call(index: int) -> AiortcCall:
    return AiortcCall(index)
