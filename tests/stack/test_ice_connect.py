"""ICE checks end when the check list does (agent.stack.iceconnect).

aioice's own ``connect()`` sleeps 20 ms between its ordinary checks and reads
the outcome only after a sleep, so ICE never completes sooner than 20 ms after
checking began, however fast the checks succeed. Ours waits on the outcome
with the pacing interval as the timeout: ICE completes as soon as a pair is
nominated, while ordinary checks still start one per interval.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioice import Candidate
from aioice.ice import CandidatePair

from agent.stack.ice import AgentIceConnection, SelectedPair
from agent.stack.iceconnect import CHECK_PACING_S
from agent.stack.peer import Peer, PeerConfig
from tests.support.peers import Recorder, clock


@dataclass
class IceTimes(Recorder):
    """A Recorder that also stamps, on the loop's clock, when generation 0's
    ICE states and first selected pair were reported."""

    ice_at: dict[str, float] = field(default_factory=dict)
    pair_at: float | None = None

    def on_ice_state(self, state: str, generation: int) -> None:
        super().on_ice_state(state, generation)
        if generation == 0:
            self.ice_at.setdefault(state, asyncio.get_running_loop().time())

    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None:
        super().on_selected_pair(pair, generation)
        if generation == 0 and self.pair_at is None:
            self.pair_at = asyncio.get_running_loop().time()


async def _one_call(seed: int) -> list[IceTimes]:
    recorders = [IceTimes(), IceTimes()]
    caller, callee = (
        Peer(
            PeerConfig(host_addresses=[address], rng=random.Random(seed + i)),
            recorders[i],
            clock,
            name=address,
        )
        for i, address in enumerate(("127.0.0.1", "127.0.0.2"))
    )
    try:
        answer = await callee.accept_offer(await caller.create_offer())
        await caller.accept_answer(answer)
        await asyncio.gather(caller.wait_connected(10), callee.wait_connected(10))
    finally:
        await caller.close()
        await callee.close()
    return recorders


async def test_ice_completes_as_soon_as_the_pair_is_nominated_not_on_a_tick() -> None:
    # Five real loopback calls. A loopback check takes a millisecond or two,
    # so checking -> completed stays under one pacing interval unless
    # completion waits for a tick (aioice's loop: never under 20 ms). A busy
    # host may stall one call; four of five must show it.
    prompt = 0
    spans: list[tuple[float, float]] = []
    for call in range(5):
        recorders = await _one_call(100 + 2 * call)
        for recorder in recorders:
            # The nominated pair is reported first, then completed.
            assert recorder.pair_at is not None
            assert recorder.ice_at["checking"] <= recorder.pair_at
            assert recorder.pair_at <= recorder.ice_at["completed"]
        span = [r.ice_at["completed"] - r.ice_at["checking"] for r in recorders]
        spans.append((span[0], span[1]))
        prompt += max(span) < CHECK_PACING_S
    assert prompt >= 4, f"checking -> completed (s, caller/callee): {spans}"


class StartStamps(AgentIceConnection):
    """Our ICE agent, stamping when each of its checks started."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started: list[float] = []
        self.check_started = asyncio.Event()

    async def check_start(self, pair: CandidatePair) -> None:
        self.started.append(asyncio.get_running_loop().time())
        self.check_started.set()
        await super().check_start(pair)

    async def until_started(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.started) < count:
                self.check_started.clear()
                await self.check_started.wait()


async def _checks_toward_a_silent_far_end(
    silent: socket.socket, pacing_s: float
) -> StartStamps:
    """A controlling agent with three host candidates (three foundations, so
    three Waiting pairs, RFC 8445 §6.1.2.6) checking a far end that never
    answers (``silent``, a socket nobody reads)."""
    agent = StartStamps(
        host_addresses=["127.0.0.1", "127.0.0.3", "127.0.0.4"],
        ice_controlling=True,
        rng=random.Random(7),
    )
    agent.check_pacing_s = pacing_s
    agent.remote_username = "silentfarend"
    agent.remote_password = "s" * 22
    await agent.gather_candidates()
    await agent.add_remote_candidate(
        Candidate(
            foundation="silent",
            component=1,
            transport="udp",
            priority=2130706431,
            host="127.0.0.2",
            port=silent.getsockname()[1],
            type="host",
        )
    )
    await agent.add_remote_candidate(None)
    return agent


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    yield sock
    sock.close()


async def test_ordinary_checks_still_start_one_per_pacing_interval(
    silent: socket.socket,
) -> None:
    pacing_s = 0.2
    agent = await _checks_toward_a_silent_far_end(silent, pacing_s)
    connecting = asyncio.create_task(agent.connect())
    try:
        await agent.until_started(3, 5)
        first, second, third = agent.started
        # RFC 8445 §6.1.4.2: one new check per Ta; a busy loop only delays.
        assert second - first >= 0.9 * pacing_s
        assert third - second >= 0.9 * pacing_s
        assert not connecting.done()  # the checks are still in flight
    finally:
        connecting.cancel()
        await agent.close()


async def test_closing_while_checking_fails_connect_at_once(
    silent: socket.socket,
) -> None:
    # aioice's outcome: a close while checking ends connect() with
    # ConnectionError (RTCIceTransport -> failed); ours must not wait for the
    # next pacing interval (30 s here) to see it.
    agent = await _checks_toward_a_silent_far_end(silent, pacing_s=30.0)
    connecting = asyncio.create_task(agent.connect())
    try:
        await agent.until_started(1, 5)
        await agent.close()
        with pytest.raises(ConnectionError, match="ICE negotiation failed"):
            await asyncio.wait_for(connecting, 2)
        assert len(agent.started) == 1  # the next check was 30 s away
    finally:
        connecting.cancel()
        await agent.close()
