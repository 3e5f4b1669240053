"""Real peers over real loopback UDP: negotiation, connection, media, hangup."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.errors import SignalingError
from agent.stack.ice import SelectedPair, WireDirection
from agent.stack.peer import Peer, PeerConfig, PeerState, parse_sdp


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

    def on_dtls_state(self, state: str) -> None:
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


async def test_call_connects_on_chosen_addresses_and_media_flows_both_ways() -> None:
    caller, rec_a = make_peer("127.0.0.1", 1)
    callee, rec_b = make_peer("127.0.0.2", 2)
    try:
        offer = await caller.create_offer()
        # Only the address we chose, no interface the machine happens to have.
        candidates = [
            line for line in offer.splitlines() if line.startswith("a=candidate:")
        ]
        assert len(candidates) == 1 and " 127.0.0.1 " in candidates[0]
        answer = await callee.accept_offer(offer)
        assert "a=setup:active" in answer and " 127.0.0.2 " in answer
        await caller.accept_answer(answer)
        await asyncio.gather(caller.wait_connected(10), callee.wait_connected(10))

        await asyncio.wait_for(rec_a.got_rtp.wait(), 5)
        await asyncio.wait_for(rec_b.got_rtp.wait(), 5)
        # Each side receives the other's SSRC, with consecutive sequence numbers.
        assert {s for s, *_ in rec_a.rtp} == {callee.ssrc}
        assert {s for s, *_ in rec_b.rtp} == {caller.ssrc}
        seqs = [seq for _, seq, _, _ in rec_b.rtp[:20]]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        assert rec_a.pairs[0].local == caller.selected_pair.local  # type: ignore[union-attr]
        assert rec_a.gathering == ["gathering", "completed"]
        assert rec_a.wire["in"] > 0 and rec_a.wire["out"] > 0
    finally:
        await caller.close()
        await callee.close()
    assert rec_a.states[-1] == "closed"


async def test_hangup_is_seen_by_the_far_end_as_closed() -> None:
    caller, _ = make_peer("127.0.0.1", 3)
    callee, rec_b = make_peer("127.0.0.2", 4)
    try:
        await connect(caller, callee)
        await caller.close()
        # DTLS close_notify reaches the callee, which closes too.
        await asyncio.wait_for(callee.ended.wait(), 5)
        assert callee.state is PeerState.CLOSED
        assert rec_b.states[-2:] == ["connected", "closed"]
    finally:
        await caller.close()
        await callee.close()


async def test_decoding_option_decodes_real_opus() -> None:
    caller, _ = make_peer("127.0.0.1", 5)
    callee, rec_b = make_peer("127.0.0.2", 6, decode=True)
    try:
        await connect(caller, callee)
        await asyncio.wait_for(rec_b.got_rtp.wait(), 5)
        assert callee.receiver is not None
        assert callee.receiver.frames_decoded > 0
        assert callee.receiver.decode_errors == 0
    finally:
        await caller.close()
        await callee.close()


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "remote offer is empty"),
        ("hello world", "remote offer is not SDP"),
        (
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n",
            "has no audio m-section",
        ),
    ],
)
async def test_garbage_offers_are_rejected_with_one_clear_sentence(
    sdp: str, message: str
) -> None:
    callee, _ = make_peer("127.0.0.2", 7)
    try:
        with pytest.raises(SignalingError, match=message) as info:
            await callee.accept_offer(sdp)
        assert "\n" not in str(info.value)
    finally:
        await callee.close()


async def test_offer_without_fingerprint_is_rejected() -> None:
    caller, _ = make_peer("127.0.0.1", 8)
    callee, _ = make_peer("127.0.0.2", 9)
    try:
        offer = await caller.create_offer()
        stripped = "".join(
            line + "\r\n"
            for line in offer.splitlines()
            if not line.startswith("a=fingerprint")
        )
        with pytest.raises(SignalingError, match="no DTLS fingerprint"):
            await callee.accept_offer(stripped)
    finally:
        await caller.close()
        await callee.close()


def test_parse_sdp_keeps_type() -> None:
    assert (
        parse_sdp("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "answer").type
        == "answer"
    )
