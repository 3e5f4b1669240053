"""The ICE profile on the wire: a libwebrtc side pings its selected pair at
libwebrtc's cadence, nominating when controlling, and a controlled side
follows a far end that moved by the next nominating ping; an ``rfc`` side
sends RFC 7675 consent checks only and never nominates again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aioice import stun

from agent.net.routes import Rebind
from agent.stack.ice import WireDirection
from agent.stack.ice_profile import (
    STABILIZING_PING_INTERVAL_S,
    STABLE_PING_INTERVAL_S,
    STRONG_TICK_S,
)
from agent.stack.peer import IceProfile, Peer
from tests.support.peers import Recorder, connect, make_peer

#: the pair intervals as the channel's 480 ms tick lets them out
STABLE_PING_S = 6 * STRONG_TICK_S  # 2500 ms -> 2880 ms
STABILIZING_PING_S = 2 * STRONG_TICK_S  # 900 ms -> 960 ms


@dataclass
class PingLog:
    """Passes everything; notes each inbound binding request (time,
    USE-CANDIDATE) - the far end's pings as this side receives them."""

    pings: list[tuple[float, bool]] = field(default_factory=list)
    sources: list[tuple[float, tuple[str, int]]] = field(default_factory=list)

    def admit(
        self, direction: WireDirection, data: bytes, addr: tuple[str, int]
    ) -> bool:
        if direction is WireDirection.INBOUND and data and data[0] < 4:
            try:
                message = stun.parse_message(data)
            except ValueError:
                return True
            if message.message_class == stun.Class.REQUEST:
                loop = asyncio.get_running_loop()
                nominated = "USE-CANDIDATE" in message.attributes
                self.pings.append((loop.time(), nominated))
                self.sources.append((loop.time(), addr))
        return True


async def call(profile: IceProfile) -> tuple[Peer, Recorder, Peer, Recorder]:
    caller, rec_a = make_peer("127.0.0.1", 41, ice_profile=profile)
    callee, rec_b = make_peer("127.0.0.2", 42, ice_profile=profile)
    await connect(caller, callee)
    return caller, rec_a, callee, rec_b


async def test_a_libwebrtc_caller_pings_with_use_candidate_at_libwebrtcs_cadence() -> (
    None
):
    caller, _, callee, rec_b = await call(IceProfile.LIBWEBRTC)
    log = PingLog()
    try:
        assert callee.current is not None
        callee.current.connection.filters.append(log)
        # 5 pings to converge the RTT at 900 ms, then 2500 ms apart, each
        # on the channel's next 480 ms tick.
        budget = 5 * STABILIZING_PING_INTERVAL_S + 3 * STABLE_PING_INTERVAL_S + 3
        await rec_b.until(lambda: len(log.pings) >= 7, budget)
        assert all(nominated for _, nominated in log.pings)
        gaps = [b[0] - a[0] for a, b in zip(log.pings, log.pings[1:], strict=False)]
        assert gaps[-1] == pytest.approx(STABLE_PING_S, abs=0.2)
        assert min(gaps) == pytest.approx(STABILIZING_PING_S, abs=0.2)
    finally:
        await caller.close()
        await callee.close()


async def test_an_rfc_caller_sends_consent_checks_that_never_nominate() -> None:
    caller, _, callee, rec_b = await call(IceProfile.RFC)
    log = PingLog()
    try:
        assert callee.current is not None
        callee.current.connection.filters.append(log)
        await rec_b.until(lambda: len(log.pings) >= 2, 15)
        assert not any(nominated for _, nominated in log.pings)
        # RFC 7675 §5.1: 5 s randomised to 0.8..1.2.
        gap = log.pings[1][0] - log.pings[0][0]
        assert 4.0 - 0.3 <= gap <= 6.0 + 0.3
    finally:
        await caller.close()
        await callee.close()


@pytest.mark.parametrize("profile", [IceProfile.LIBWEBRTC, IceProfile.RFC])
async def test_the_callee_follows_a_rebound_caller_by_its_profile(
    profile: IceProfile,
) -> None:
    caller, _, callee, rec_b = await call(profile)
    route = Rebind()
    try:
        old = callee.selected_pair
        assert old is not None and callee.current is not None
        log = PingLog()
        callee.current.connection.filters.append(log)
        loop = asyncio.get_running_loop()
        await rec_b.until(lambda: len(rec_b.rtp) >= 25, 5)
        caller.config.net.route = route  # the caller's NAT rebinds
        rebound = loop.time()
        wait_s = STABLE_PING_S + 1.0
        if profile is IceProfile.LIBWEBRTC:
            # The next nominating ping from the new port moves the callee at
            # once (OnNominated); pings are at most 2.88 s apart.
            await rec_b.until(lambda: callee.selected_pair != old, wait_s)
            switched = loop.time()
            assert switched - rebound <= wait_s
            new = callee.selected_pair
            assert new is not None and new.remote != old.remote
            assert new.remote_type == "prflx"
            # At once: within a round trip of the first ping from the new port,
            # not after the 2.5 s receiving timeout.
            first = min(t for t, addr in log.sources if addr == new.remote)
            assert switched - first < 0.3
        else:
            # RFC 8445 §8.1.1: nomination is over; the callee stays put.
            with pytest.raises(TimeoutError):
                await rec_b.until(lambda: callee.selected_pair != old, wait_s)
    finally:
        await caller.close()
        await callee.close()
        route.close()
