"""Two real peers of our stack on loopback, and a listener that records what
they report: the helpers the stack's live tests share."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.stack.ice import SelectedPair, WireDirection
from agent.stack.peer import Peer, PeerConfig, PeerState


@dataclass
class Recorder:
    """A PeerListener that keeps what it is told."""

    states: list[str] = field(default_factory=list)
    gathering: list[str] = field(default_factory=list)
    pairs: list[SelectedPair] = field(default_factory=list)
    wire: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    rtp: list[tuple[int, int, int, float]] = field(default_factory=list)
    got_rtp: asyncio.Event = field(default_factory=asyncio.Event)
    want_rtp: int = 25

    restarts: list[tuple[str, int, str]] = field(default_factory=list)
    rehandshakes: list[tuple[str, str, str]] = field(default_factory=list)
    dtls_states: list[str] = field(default_factory=list)
    certificates: list[dict[str, Any]] = field(default_factory=list)
    #: set on every callback; :meth:`until` re-checks its condition then
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait, by events not polling, until ``condition()`` holds."""
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def on_ice_gathering(self, state: str, generation: int) -> None:
        self.changed.set()
        self.gathering.append(state)

    def on_ice_state(self, state: str, generation: int) -> None:
        self.changed.set()

    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None:
        self.changed.set()
        self.restarts.append(("started", generation, initiator))

    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None:
        self.changed.set()
        self.restarts.append((outcome, generation, ""))

    def on_dtls_state(self, state: str, at_ms: float | None = None) -> None:
        self.changed.set()
        self.dtls_states.append(state)

    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        self.changed.set()
        self.rehandshakes.append(("started", initiator, trigger))

    def on_dtls_rehandshake_ended(self, outcome: str, detail: dict[str, Any]) -> None:
        self.changed.set()
        self.rehandshakes.append((outcome, "", str(detail.get("error", ""))))

    def on_certificate(self, info: dict[str, Any]) -> None:
        self.changed.set()
        self.certificates.append(info)

    def on_connection_state(self, state: PeerState) -> None:
        self.changed.set()
        self.states.append(str(state))

    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None:
        self.changed.set()
        self.pairs.append(pair)

    def on_wire(self, direction: WireDirection, data: bytes) -> None:
        self.changed.set()
        self.wire[str(direction)] += 1

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        self.changed.set()
        self.rtp.append((ssrc, seq, timestamp, arrival_ms))
        if len(self.rtp) >= self.want_rtp:
            self.got_rtp.set()

    def on_rtp_bye(self, ssrc: int) -> None:
        self.changed.set()

    def on_media_direction(self, direction: str) -> None:
        self.changed.set()


def clock() -> float:
    return time.monotonic() * 1000


def make_peer(address: str, seed: int, **kwargs: object) -> tuple[Peer, Recorder]:
    recorder = Recorder()
    config = PeerConfig(host_addresses=[address], rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]
    return Peer(config, recorder, clock, name=address), recorder


async def connect(caller: Peer, callee: Peer) -> None:
    answer = await callee.accept_offer(await caller.create_offer())
    await caller.accept_answer(answer)
    await asyncio.gather(caller.wait_connected(10), callee.wait_connected(10))


@dataclass
class Blackhole:
    """Drops everything both ways (a path that died)."""

    dropped: int = 0

    def admit(
        self, direction: WireDirection, data: bytes, addr: tuple[str, int]
    ) -> bool:
        self.dropped += 1
        return False


async def connected_pair(**kwargs: object) -> tuple[Peer, Recorder, Peer, Recorder]:
    caller, rec_a = make_peer("127.0.0.1", 11, **kwargs)
    callee, rec_b = make_peer("127.0.0.2", 12, **kwargs)
    caller.renegotiate = callee.accept_offer
    callee.renegotiate = caller.accept_offer
    answer = await callee.accept_offer(await caller.create_offer())
    await caller.accept_answer(answer)
    await asyncio.gather(caller.wait_connected(10), callee.wait_connected(10))
    return caller, rec_a, callee, rec_b


async def wait_state(
    peer: Peer, recorder: Recorder, state: PeerState, timeout: float
) -> None:
    await recorder.until(lambda: peer.state is state, timeout)


async def packets_after(recorder: Recorder, count: int, timeout: float = 5) -> None:
    target = len(recorder.rtp) + count
    await recorder.until(lambda: len(recorder.rtp) >= target, timeout)


def ufrag(peer: Peer) -> str:
    return str(peer.gatherer.getLocalParameters().usernameFragment)
