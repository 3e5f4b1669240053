"""Impairments on the agent's own sockets: small composable datagram filters.

Each class is a :class:`~agent.stack.ice.DatagramFilter`: it sees every datagram
(STUN, DTLS, RTP) of one side in each direction and says whether it passes,
is dropped, or passes late (:class:`~agent.stack.ice.Delay`). The side's
:class:`~agent.stack.ice.SideNet` holds the active ones; a fault adds its filter
and removes it when it ends (toxiproxy's toxics, pion vnet's loss filter).

Every random choice comes from a ``random.Random`` the caller seeds, so a run
replays exactly. :class:`Passthrough` is the documented no-op: the template.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from agent.stack.ice import Address, Delay, WireDirection

__all__ = [
    "Blackhole",
    "DelayFilter",
    "Direction",
    "Loss",
    "MtuLimit",
    "Passthrough",
]


class Direction(enum.StrEnum):
    """Which way a filter acts, seen from the side it is installed on."""

    BOTH = "both"
    INBOUND = "inbound"
    OUTBOUND = "outbound"

    def matches(self, direction: WireDirection) -> bool:
        if self is Direction.BOTH:
            return True
        return (self is Direction.INBOUND) == (direction is WireDirection.INBOUND)


@dataclass
class Passthrough:
    """Lets everything through and counts it: the minimal filter."""

    seen: int = 0

    def admit(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> bool | Delay:
        self.seen += 1
        return True


@dataclass
class Blackhole:
    """Drops everything in ``direction``: a dead path, a firewall that closed."""

    direction: Direction = Direction.BOTH
    dropped: int = 0

    def admit(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> bool | Delay:
        if self.direction.matches(direction):
            self.dropped += 1
            return False
        return True


@dataclass
class Loss:
    """Drops each datagram with probability ``rate`` (independent losses)."""

    rate: float
    rng: random.Random
    direction: Direction = Direction.BOTH
    dropped: int = 0

    def admit(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> bool | Delay:
        if self.direction.matches(direction) and self.rng.random() < self.rate:
            self.dropped += 1
            return False
        return True


@dataclass
class DelayFilter:
    """Adds ``delay_s`` plus a uniform ``0..jitter_s`` to each datagram.

    Jitter reorders datagrams, as a real queue with variable delay does.
    """

    delay_s: float
    jitter_s: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    direction: Direction = Direction.BOTH
    delayed: int = 0

    def admit(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> bool | Delay:
        if not self.direction.matches(direction):
            return True
        self.delayed += 1
        extra = self.rng.uniform(0.0, self.jitter_s) if self.jitter_s > 0 else 0.0
        return Delay(self.delay_s + extra)


@dataclass
class MtuLimit:
    """Drops datagrams larger than ``max_bytes`` of UDP payload.

    What a path with a small MTU and no fragmentation (DF set, ICMP filtered)
    does: big DTLS handshake flights (certificates) vanish; small audio packets
    and STUN pass, so the call may look healthy until a handshake is needed.
    """

    max_bytes: int
    direction: Direction = Direction.BOTH
    dropped: int = 0
    largest_dropped: int = 0

    def admit(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> bool | Delay:
        if self.direction.matches(direction) and len(data) > self.max_bytes:
            self.dropped += 1
            self.largest_dropped = max(self.largest_dropped, len(data))
            return False
        return True
