"""ICE restarts for real (RFC 8445 §9): both directions, make-before-break,
a dead old path, recovery policy, glare, and stable negotiated values."""

from __future__ import annotations

import asyncio

import pytest

from agent.stack.peer import PeerState, RecoveryPolicy
from tests.support.peers import (
    Blackhole,
    connected_pair,
    make_peer,
    packets_after,
    ufrag,
    wait_state,
)


@pytest.mark.parametrize("restarting", ["caller", "callee"])
async def test_restart_from_either_side_gives_a_new_generation_and_keeps_media(
    restarting: str,
) -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        by_caller = restarting == "caller"
        initiator, other = (caller, callee) if by_caller else (callee, caller)
        rec_i, rec_o = (rec_a, rec_b) if by_caller else (rec_b, rec_a)
        old = (ufrag(caller), ufrag(callee))
        old_pair = caller.selected_pair
        await packets_after(rec_o, 10)

        assert await asyncio.wait_for(initiator.restart_ice(), 15)
        await other.restart_settled(15)

        # Both sides have new credentials and a new selected pair (new sockets).
        assert ufrag(caller) != old[0] and ufrag(callee) != old[1]
        assert caller.ice_generation == callee.ice_generation == 1
        assert caller.selected_pair != old_pair
        assert rec_i.restarts == [("started", 1, "local"), ("completed", 1, "")]
        assert rec_o.restarts == [("started", 1, "remote"), ("completed", 1, "")]
        # The DTLS association is kept, as browsers do: no new handshake.
        assert caller.dtls.state == callee.dtls.state == "connected"
        # Media keeps flowing both ways on the new generation.
        await packets_after(rec_a, 25)
        await packets_after(rec_b, 25)
        assert caller.state is callee.state is PeerState.CONNECTED
    finally:
        await caller.close()
        await callee.close()


async def test_reoffer_keeps_payload_type_and_extension_ids() -> None:
    caller, _ = make_peer("127.0.0.1", 11)
    callee, _ = make_peer("127.0.0.2", 12)
    try:
        initial = await caller.create_offer()
        await caller.accept_answer(await callee.accept_offer(initial))
        await asyncio.gather(caller.wait_connected(10), callee.wait_connected(10))
        restart = await caller.create_offer(ice_restart=True)

        def media_lines(sdp: str) -> list[str]:
            keep = ("a=rtpmap", "a=fmtp", "a=extmap", "a=mid", "m=audio")
            return [
                line.split(" ", 1)[0] if line.startswith("m=") else line
                for line in sdp.splitlines()
                if line.startswith(keep)
            ]

        assert media_lines(restart) == media_lines(initial)
        assert [x for x in restart.splitlines() if x.startswith("a=ice-ufrag")] != [
            x for x in initial.splitlines() if x.startswith("a=ice-ufrag")
        ]
        await caller.accept_answer(await callee.accept_offer(restart))
        await caller.restart_settled(15)
        assert caller.ice_generation == 1
    finally:
        await caller.close()
        await callee.close()


async def test_dead_path_is_disconnected_quickly_and_a_restart_recovers() -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        hole = Blackhole()
        assert caller.current is not None
        caller.current.connection.filters.append(hole)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await wait_state(caller, rec_a, PeerState.DISCONNECTED, 5)
        await wait_state(callee, rec_b, PeerState.DISCONNECTED, 5)
        # Reported within the 2.5 s target after the path died.
        assert loop.time() - t0 <= 2.5
        before = len(rec_b.rtp)
        assert await asyncio.wait_for(caller.restart_ice(trigger="step"), 15)
        await wait_state(caller, rec_a, PeerState.CONNECTED, 5)
        await wait_state(callee, rec_b, PeerState.CONNECTED, 5)
        await packets_after(rec_b, 25)
        await packets_after(rec_a, 25)
        assert len(rec_b.rtp) > before and hole.dropped > 0
        # The old generation is still blackholed: media came through the new one.
        assert caller.current is not None
        assert hole not in caller.current.connection.filters
    finally:
        await caller.close()
        await callee.close()


async def test_recovery_policy_restarts_on_disconnected_by_itself() -> None:
    caller, rec_a, callee, rec_b = await connected_pair(
        recovery=RecoveryPolicy.RESTART_ON_DISCONNECTED
    )
    try:
        assert caller.current is not None and callee.current is not None
        caller.current.connection.filters.append(Blackhole())
        await wait_state(caller, rec_a, PeerState.DISCONNECTED, 5)
        await wait_state(caller, rec_a, PeerState.CONNECTED, 15)
        await wait_state(callee, rec_b, PeerState.CONNECTED, 15)
        await packets_after(rec_b, 25)
        # Both sides may have wanted to restart; glare leaves exactly one new
        # generation, and each side reports the restart once.
        assert caller.ice_generation == callee.ice_generation == 1
        completed = [r for r in rec_a.restarts if r[0] == "completed"]
        assert completed == [("completed", 1, "")]
    finally:
        await caller.close()
        await callee.close()


async def test_glare_leaves_one_generation() -> None:
    caller, rec_a, callee, _ = await connected_pair()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(caller.restart_ice(), callee.restart_ice()), 20
        )
        await caller.restart_settled(15)
        await callee.restart_settled(15)
        assert sorted(results) == [False, True]
        assert caller.ice_generation == callee.ice_generation == 1
        await packets_after(rec_a, 25)
        assert caller.state is callee.state is PeerState.CONNECTED
    finally:
        await caller.close()
        await callee.close()


async def test_role_conflict_after_a_restart_is_resolved_without_dropping_media() -> (
    None
):
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        # The callee wrongly believes it is controlling from now on (as a far
        # end that changes roles on restart would): both new generations
        # claim controlling, and RFC 8445 §7.3.1.1 (487 Role Conflict, the
        # tie-breakers decide) must sort it out.
        callee.generations[0].connection.ice_controlling = True
        assert await asyncio.wait_for(caller.restart_ice(), 15)
        await callee.restart_settled(15)
        assert caller.ice_generation == callee.ice_generation == 1
        roles = {
            caller.current.connection.ice_controlling,  # type: ignore[union-attr]
            callee.current.connection.ice_controlling,  # type: ignore[union-attr]
        }
        assert roles == {True, False}
        await packets_after(rec_a, 25)
        await packets_after(rec_b, 25)
        assert caller.state is callee.state is PeerState.CONNECTED
    finally:
        await caller.close()
        await callee.close()


async def test_a_dead_peer_fails_when_consent_expires_not_closes() -> None:
    """RFC 7675 §5.1: no consent response for the expiry time -> ``failed``
    (aiortc would silently close the transport and report ``closed``).

    Short timers (3 s expiry instead of 30 s) run the same code as the real
    ones; tests/stack/test_liveness.py checks the real defaults are RFC 7675's.
    """
    expiry_s = 3.0
    caller, rec_a, callee, _ = await connected_pair(
        consent_interval_s=0.5, consent_expiry_s=expiry_s, disconnected_after_s=1.0
    )
    try:
        assert caller.current is not None and callee.current is not None
        caller.current.connection.filters.append(Blackhole())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await wait_state(caller, rec_a, PeerState.DISCONNECTED, 3)
        assert caller.state is PeerState.DISCONNECTED  # not failed yet
        await wait_state(caller, rec_a, PeerState.FAILED, expiry_s + 5)
        # The last answered check was at most one interval (x1.2) before the
        # blackhole; expiry is judged after each check (interval x1.2 plus the
        # unanswered request's timeout) and seen at the next liveness tick.
        assert expiry_s - 0.6 <= loop.time() - t0 <= expiry_s + 2.5
        assert caller.ended.is_set()  # no recovery policy: failed is final
        assert "closed" not in rec_a.states
    finally:
        await caller.close()
        await callee.close()
