"""ICE fails only when no check is in flight or due (RFC 8445).

The far end is reached only through a peer-reflexive pair: it answers our
checks from another address than the one it signalled (a route that changes
its source, as a multi-homed host or a NAT that maps per destination does),
so every signalled pair fails on "source address mismatch"
(§7.2.5.2.1) within milliseconds. Its own checks start a little later (it
got our candidates later); they reach us from the new address, make a
peer-reflexive pair and a triggered check (§7.3.1.3-4) that succeeds. Both
ends are real ICE agents of our stack on real loopback sockets.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioice.ice import CandidatePair

from agent.net.routes import PathChange
from agent.stack.ice import AgentIceConnection, SideNet
from agent.stack.liveness import CHECKS_DUE_S


class WatchedAgent(AgentIceConnection):
    """Our ICE agent, telling the test when a check finished."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_done = asyncio.Event()

    def check_complete(self, pair: CandidatePair) -> None:
        super().check_complete(pair)
        self.check_done.set()

    async def all_pairs_failed(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not self._check_list or any(
                p.state != CandidatePair.State.FAILED for p in self._check_list
            ):
                self.check_done.clear()
                await self.check_done.wait()


async def introduce(
    controlling: AgentIceConnection, controlled: AgentIceConnection
) -> None:
    for agent in (controlling, controlled):
        await agent.gather_candidates()
    controlling.remote_username = controlled.local_username
    controlling.remote_password = controlled.local_password
    controlled.remote_username = controlling.local_username
    controlled.remote_password = controlling.local_password
    for candidate in controlled.local_candidates:
        await controlling.add_remote_candidate(candidate)
    await controlling.add_remote_candidate(None)
    for candidate in controlling.local_candidates:
        await controlled.add_remote_candidate(candidate)
    await controlled.add_remote_candidate(None)


@pytest.fixture
async def moved_far_end() -> AsyncIterator[AgentIceConnection]:
    """The controlled far end, signalling 127.0.0.2 but answering from 127.0.0.5."""
    moved = SideNet()
    route = PathChange("127.0.0.5")
    moved.route = route
    callee = AgentIceConnection(
        host_addresses=["127.0.0.2"],
        ice_controlling=False,
        rng=random.Random(2),
        net=moved,
    )
    try:
        yield callee
    finally:
        await callee.close()
        route.close()


@pytest.mark.parametrize("far_end_delay_s", [0.05, 1.0])
async def test_a_peer_reflexive_pair_rescues_ice_after_every_signalled_pair_failed(
    far_end_delay_s: float, moved_far_end: AgentIceConnection
) -> None:
    callee = moved_far_end
    caller = WatchedAgent(
        host_addresses=["127.0.0.1"], ice_controlling=True, rng=random.Random(1)
    )
    try:
        await introduce(caller, callee)
        caller_connect = asyncio.create_task(caller.connect())
        # Every signalled pair fails at once: the answer comes from 127.0.0.5.
        await caller.all_pairs_failed(5)
        loop = asyncio.get_running_loop()
        failed_at = loop.time()
        await asyncio.sleep(far_end_delay_s)  # the far end starts checking later
        # Not declared failed meanwhile: the far end was heard, its checks are due.
        assert not caller_connect.done()
        await asyncio.wait_for(
            asyncio.gather(caller_connect, callee.connect()), CHECKS_DUE_S + 5
        )
        selected = caller.selected_pair
        assert selected is not None
        assert selected.remote[0] == "127.0.0.5"
        assert selected.remote_type == "prflx"
        assert loop.time() - failed_at < CHECKS_DUE_S
        # And data flows both ways over it.
        await caller.send(b"\x80hello")
        assert await asyncio.wait_for(callee.recv(), 2) == b"\x80hello"
        await callee.send(b"\x80back")
        assert await asyncio.wait_for(caller.recv(), 2) == b"\x80back"
    finally:
        await caller.close()


async def test_a_far_end_that_never_checks_fails_once_its_checks_are_overdue(
    moved_far_end: AgentIceConnection,
) -> None:
    callee = moved_far_end
    caller = AgentIceConnection(
        host_addresses=["127.0.0.1"], ice_controlling=True, rng=random.Random(3)
    )
    try:
        await introduce(caller, callee)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The far end answers (from elsewhere) but never starts its checks.
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(caller.connect(), CHECKS_DUE_S + 5)
        assert CHECKS_DUE_S - 0.5 <= loop.time() - started <= CHECKS_DUE_S + 2
    finally:
        await caller.close()
