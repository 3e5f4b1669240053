"""Liveness, consent, recovery, peer state, certificate expiry and the DTLS
rehandshake span as pure decisions on times handed in (unit tier: no sockets,
no waiting)."""

from __future__ import annotations

import datetime
import itertools
import random

import pytest

from agent.stack.certs import expiry_delay_s
from agent.stack.config import (
    CONSENT_EXPIRY_S,
    CONSENT_INTERVAL_S,
    IceProfile,
    PeerConfig,
    PeerState,
    RecoveryPolicy,
)
from agent.stack.ice_profile import (
    follows_far_end,
    libwebrtc_ping_interval_s,
    nominates_on_ping,
    stable_ping_interval_s,
)
from agent.stack.liveness import (
    CHECKS_DUE_S,
    ConsentFreshness,
    ends_call,
    ice_failure_held_s,
    liveness_state,
    peer_state,
    recovery_trigger,
)
from agent.stack.rehandshake import (
    REHANDSHAKE_TRANSITIONS,
    IllegalRehandshakeTransition,
    RehandshakeEvent,
    RehandshakeMachine,
    RehandshakeState,
)


def test_the_real_timers_are_rfc_7675s_and_libwebrtcs() -> None:
    config = PeerConfig(host_addresses=["127.0.0.1"])
    assert config.consent_expiry_s == CONSENT_EXPIRY_S == 30.0
    # Unset, the ping interval is the ICE profile's: RFC 7675's 5 s, or
    # libwebrtc's STRONG_AND_STABLE_WRITABLE_CONNECTION_PING_INTERVAL.
    assert config.consent_interval_s is None
    assert config.ice_profile is IceProfile.LIBWEBRTC
    assert stable_ping_interval_s(IceProfile.RFC, None) == CONSENT_INTERVAL_S == 5.0
    assert stable_ping_interval_s(IceProfile.LIBWEBRTC, None) == 2.5
    assert stable_ping_interval_s(IceProfile.LIBWEBRTC, 10.0) == 10.0


def test_libwebrtc_pings_fast_until_stable_and_when_weak() -> None:
    def interval(samples: int, missing: bool = False, receiving: bool = True) -> float:
        return libwebrtc_ping_interval_s(
            2.5, rtt_samples=samples, missing_response=missing, receiving=receiving
        )

    # p2p_constants.h: 900 ms while stabilizing (RTT not converged), weak
    # (not receiving) or a response is missing; 2500 ms once stable; each
    # waits for the channel's next tick (480 ms strong, 48 ms weak).
    assert [interval(n) for n in range(7)] == pytest.approx([0.96] * 5 + [2.88] * 2)
    assert interval(9, missing=True) == pytest.approx(0.912)
    assert interval(9, receiving=False) == pytest.approx(0.912)
    # A configured interval is ticked too (0.5 s -> 0.96 s, 0.48 s stays).
    for configured, expected in ((0.5, 0.96), (0.48, 0.48)):
        ping_s = libwebrtc_ping_interval_s(
            configured, rtt_samples=0, missing_response=False, receiving=True
        )
        assert ping_s == pytest.approx(expected)


def test_only_a_controlling_libwebrtc_side_nominates_on_pings() -> None:
    assert nominates_on_ping(IceProfile.LIBWEBRTC, controlling=True)
    assert not nominates_on_ping(IceProfile.LIBWEBRTC, controlling=False)
    assert not nominates_on_ping(IceProfile.RFC, controlling=True)
    assert follows_far_end(IceProfile.LIBWEBRTC)
    assert not follows_far_end(IceProfile.RFC)


def test_ice_failure_waits_while_the_far_end_is_heard() -> None:
    # Never heard: every pair failed, nothing is due, fail now.
    assert ice_failure_held_s(10.0, None) == 0.0
    # Heard 1 s ago (a response from an unexpected address, a check): its
    # checks and the triggered checks they cause are due for 4 s more.
    assert ice_failure_held_s(10.0, 9.0) == pytest.approx(CHECKS_DUE_S - 1.0)
    assert ice_failure_held_s(10.0, 10.0 - CHECKS_DUE_S) == 0.0


def test_liveness_follows_silence_and_consent() -> None:
    def at(now: float, last: float | None, expired: bool = False) -> PeerState:
        return liveness_state(now, last, expired, disconnected_after_s=2.0)

    assert at(10.0, 9.0) is PeerState.CONNECTED
    assert at(10.0, 8.0) is PeerState.DISCONNECTED  # exactly the limit
    assert at(10.0, None) is PeerState.DISCONNECTED
    assert at(10.0, 9.9, expired=True) is PeerState.FAILED


def test_consent_expires_after_the_expiry_without_an_answer() -> None:
    consent = ConsentFreshness(
        interval_s=5.0, expiry_s=30.0, rng=random.Random(1), started_at=100.0
    )
    delays = [consent.next_check_in() for _ in range(200)]
    assert 4.0 <= min(delays) and max(delays) <= 6.0  # RFC 7675 §5.1: 0.8..1.2
    consent.answered(120.0)
    assert not consent.expired(149.9)
    consent.unanswered()
    assert consent.expired(150.0) and consent.failures == 1


ON_DISCONNECTED = RecoveryPolicy.RESTART_ON_DISCONNECTED


@pytest.mark.parametrize(
    ("policy", "liveness", "trigger"),
    [
        (RecoveryPolicy.NONE, PeerState.DISCONNECTED, None),
        (RecoveryPolicy.NONE, PeerState.FAILED, None),
        (
            RecoveryPolicy.RESTART_ON_DISCONNECTED,
            PeerState.DISCONNECTED,
            "disconnected",
        ),
        (RecoveryPolicy.RESTART_ON_DISCONNECTED, PeerState.FAILED, "failed"),
        (RecoveryPolicy.RESTART_ON_FAILED, PeerState.DISCONNECTED, None),
        (RecoveryPolicy.RESTART_ON_FAILED, PeerState.FAILED, "failed"),
        (RecoveryPolicy.RESTART_ON_FAILED, PeerState.CONNECTED, None),
    ],
)
def test_recovery_policy(
    policy: RecoveryPolicy, liveness: PeerState, trigger: str | None
) -> None:
    assert (
        recovery_trigger(policy, liveness, restart_pending=False, can_renegotiate=True)
        == trigger
    )
    # Never a second restart, never one without a signalling channel.
    assert (
        recovery_trigger(policy, liveness, restart_pending=True, can_renegotiate=True)
        is None
    )
    assert (
        recovery_trigger(policy, liveness, restart_pending=False, can_renegotiate=False)
        is None
    )


def test_peer_state_aggregates_like_a_browser() -> None:
    live = PeerState.CONNECTED
    assert peer_state("new", "new", live, restart_pending=False) is PeerState.NEW
    assert peer_state("checking", "new", live, restart_pending=False) is (
        PeerState.CONNECTING
    )
    assert peer_state("completed", "connected", live, restart_pending=False) is live
    assert peer_state(
        "completed", "connected", PeerState.DISCONNECTED, restart_pending=False
    ) is (PeerState.DISCONNECTED)
    # A failed generation does not fail the peer while a restart may replace it.
    assert peer_state("failed", "connected", live, restart_pending=True) is (
        PeerState.CONNECTING
    )
    assert peer_state("failed", "connected", live, restart_pending=False) is (
        PeerState.FAILED
    )
    assert peer_state("completed", "failed", live, restart_pending=True) is (
        PeerState.FAILED
    )
    assert peer_state("closed", "connected", live, restart_pending=False) is (
        PeerState.CLOSED
    )


def test_failed_ends_the_call_unless_recovery_may_bring_it_back() -> None:
    restart = RecoveryPolicy.RESTART_ON_FAILED
    kw = {"can_renegotiate": True, "was_connected": True}
    assert not ends_call(PeerState.FAILED, restart, **kw)
    assert ends_call(PeerState.FAILED, RecoveryPolicy.NONE, **kw)
    assert ends_call(
        PeerState.FAILED, restart, can_renegotiate=True, was_connected=False
    )
    assert ends_call(PeerState.CLOSED, restart, **kw)
    assert not ends_call(PeerState.DISCONNECTED, RecoveryPolicy.NONE, **kw)


def test_certificate_expiry_is_watched_only_when_near() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    soon = now + datetime.timedelta(seconds=90)
    assert expiry_delay_s(soon, now) == 90.0
    assert expiry_delay_s(now - datetime.timedelta(seconds=5), now) == 0.0
    assert expiry_delay_s(now + datetime.timedelta(days=30), now) is None


# -- the DTLS rehandshake span -------------------------------------------------
def state(machine: RehandshakeMachine) -> RehandshakeState:
    """Read afresh (mypy would otherwise keep an earlier assert's narrowing)."""
    return machine.state


def test_a_rehandshake_span_opens_and_closes_once() -> None:
    machine = RehandshakeMachine()
    assert machine.handle(RehandshakeEvent.BEGIN).opened
    # A far end's ClientHello while ours waits for its re-offer joins it.
    joined = machine.handle(RehandshakeEvent.BEGIN)
    assert not joined.opened and state(machine) is RehandshakeState.ANNOUNCED
    machine.handle(RehandshakeEvent.ASSOCIATE, association=3)
    assert state(machine) is RehandshakeState.HANDSHAKING
    # The outcome of an association this span did not start is stale.
    stale = machine.handle(RehandshakeEvent.COMPLETE, association=2)
    assert not stale.closed and state(machine) is RehandshakeState.HANDSHAKING
    assert machine.handle(RehandshakeEvent.COMPLETE, association=3).closed
    assert machine.idle
    assert not machine.handle(RehandshakeEvent.STOP).closed  # nothing open


def test_illegal_rehandshake_transitions_raise() -> None:
    for start, event in itertools.product(RehandshakeState, RehandshakeEvent):
        machine = RehandshakeMachine()
        machine.state = start
        if (start, event) in REHANDSHAKE_TRANSITIONS:
            machine.handle(event)
            assert state(machine) is REHANDSHAKE_TRANSITIONS[start, event]
        else:
            with pytest.raises(IllegalRehandshakeTransition):
                machine.handle(event)
            assert state(machine) is start
