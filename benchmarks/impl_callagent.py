"""One benchmark call made of two callagent ``Peer``s over loopback.

Caller on 127.0.0.1, callee on 127.0.0.2 (all of 127.0.0.0/8 is bindable on
Linux), each sending pre-encoded Opus (the default media path of
:mod:`agent.stack.media`) and counting the RTP it receives through the listener,
which is exactly where callagent's observer sits in a real run.
"""

from __future__ import annotations

import asyncio
import random
import time

from agent.stack.media import opus_packets
from agent.stack.peer import NullListener, Peer, PeerConfig

CALLER_ADDRESS = "127.0.0.1"
CALLEE_ADDRESS = "127.0.0.2"
PACKET_MS = 20


def clock_ms() -> float:
    return time.monotonic() * 1000


class RtpCounter(NullListener):
    """A ``PeerListener`` that only counts received RTP packets."""

    def __init__(self) -> None:
        self.rtp_packets = 0

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        self.rtp_packets += 1


def prepare() -> None:
    """Encode the looped Opus second once, before any call is timed.

    Every later sender reuses it (``opus_packets`` is cached per process); doing
    it here keeps a one-off ~50-frame encode out of the first call's setup.
    """
    opus_packets(PACKET_MS)


class CallagentCall:
    """Caller and callee ``Peer`` of one loopback call."""

    def __init__(self, index: int) -> None:
        self._counters = (RtpCounter(), RtpCounter())
        # Seeded per call so SSRCs, sequence numbers and session ids replay.
        self.caller = Peer(
            PeerConfig(
                host_addresses=[CALLER_ADDRESS],
                packet_ms=PACKET_MS,
                rng=random.Random(2 * index + 1),
            ),
            self._counters[0],
            clock_ms,
            name=f"caller-{index}",
        )
        self.callee = Peer(
            PeerConfig(
                host_addresses=[CALLEE_ADDRESS],
                packet_ms=PACKET_MS,
                rng=random.Random(2 * index + 2),
            ),
            self._counters[1],
            clock_ms,
            name=f"callee-{index}",
        )

    async def connect(self, timeout_s: float) -> None:
        """Offer creation through both sides connected (in-process signaling)."""
        offer = await self.caller.create_offer()
        answer = await self.callee.accept_offer(offer)
        await self.caller.accept_answer(answer)
        await asyncio.gather(
            self.caller.wait_connected(timeout_s), self.callee.wait_connected(timeout_s)
        )

    async def packets_received(self) -> int:
        return sum(counter.rtp_packets for counter in self._counters)

    def frames_decoded(self) -> int | None:
        return None  # the default path does not decode (PeerConfig.decode=False)

    async def close(self) -> None:
        await self.caller.close()
        await self.callee.close()


def new_call(index: int) -> CallagentCall:
    return CallagentCall(index)
