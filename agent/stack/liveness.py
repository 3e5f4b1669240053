"""Liveness, consent and recovery as decisions on times handed in (no I/O).

aiortc 1.16 has no ``disconnected`` state and aioice closes a connection
silently when consent expires; browsers report both, and a test agent must
count what they trigger. Each decision here is a pure function (or a small class
holding only numbers) fed the time and what was observed; the asyncio tasks in
:mod:`agent.stack.ice` and :mod:`agent.stack.peer` only read the loop's clock
and call them, so the rules are tested without sockets or waiting:

* **disconnected**: nothing received on the selected pair for
  ``disconnected_after_s`` (libwebrtc's receiving timeout; back to
  ``connected`` when traffic resumes);
* **failed**: consent expired, i.e. no authenticated response to a consent check
  for ``consent_expiry_s`` (RFC 7675 §5.1), checks every ``consent_interval_s``
  randomised to 0.8..1.2 of it;
* **recovery**: which liveness change makes the peer restart ICE by itself
  (:class:`RecoveryPolicy`), as applications do with ``restartIce()``;
* **ICE failure**: held while the far end's checks are still due
  (:func:`ice_failure_held_s`);
* **peer state**: the browser's aggregate of ICE, DTLS and liveness.
"""

from __future__ import annotations

import random

from agent.stack.config import PeerState, RecoveryPolicy


def liveness_state(
    now: float,
    last_received: float | None,
    consent_expired: bool,
    disconnected_after_s: float,
) -> PeerState:
    """Liveness of the selected pair at ``now``: connected, disconnected, failed."""
    if consent_expired:
        return PeerState.FAILED
    if last_received is None or now - last_received >= disconnected_after_s:
        return PeerState.DISCONNECTED
    return PeerState.CONNECTED


#: After the far end was last heard, its own checks toward us are still due
#: this long: a libwebrtc far end keeps pinging a pair that is not writable
#: for CONNECTION_WRITE_CONNECT_TIMEOUT (5 s, p2p/base/p2p_constants.h), and
#: aioice retransmits a check for longer (RFC 8489 §6.2.1).
CHECKS_DUE_S = 5.0


def ice_failure_held_s(
    now: float, last_heard: float | None, checks_due_s: float = CHECKS_DUE_S
) -> float:
    """How long an ICE failure must still wait (0: declare it now).

    RFC 8445 fails a check list only when no pair can still succeed. A pair
    that failed on "source address mismatch" (§7.2.5.2.1) proves the far end
    alive behind an address we were not told of: its checks will reach us
    and make a peer-reflexive pair whose triggered check (§7.3.1.3-4) may
    succeed. So while anything was heard from the far end within
    ``checks_due_s``, failure waits; a far end never heard fails at once."""
    if last_heard is None:
        return 0.0
    return max(0.0, last_heard + checks_due_s - now)


class ConsentFreshness:
    """RFC 7675 consent on one ICE generation, on the clock it is handed."""

    def __init__(
        self,
        *,
        interval_s: float,
        expiry_s: float,
        rng: random.Random,
        started_at: float,
    ) -> None:
        self.interval_s = interval_s
        self.expiry_s = expiry_s
        self._rng = rng
        self.last_ok = started_at
        self.failures = 0

    def next_check_in(self) -> float:
        # RFC 7675 §5.1: randomise the interval to 0.8..1.2 of its value.
        return self.interval_s * (0.8 + 0.4 * self._rng.random())

    def answered(self, now: float) -> None:
        self.last_ok = now

    def unanswered(self) -> None:
        self.failures += 1

    def expired(self, now: float) -> bool:
        return now - self.last_ok >= self.expiry_s


def recovery_trigger(
    policy: RecoveryPolicy,
    liveness: PeerState,
    *,
    restart_pending: bool,
    can_renegotiate: bool,
) -> str | None:
    """The trigger of the ICE restart ``policy`` asks for on entering
    ``liveness``, or None (no restart: not asked for, one under way, or no
    signalling channel to restart over)."""
    if restart_pending or not can_renegotiate:
        return None
    if liveness is PeerState.DISCONNECTED:
        wanted = policy is RecoveryPolicy.RESTART_ON_DISCONNECTED
        return "disconnected" if wanted else None
    if liveness is PeerState.FAILED and policy is not RecoveryPolicy.NONE:
        return "failed"
    return None


def peer_state(
    ice: str, dtls: str, liveness: PeerState, *, restart_pending: bool
) -> PeerState:
    """``RTCPeerConnectionState`` from the current generation's ICE state, the
    DTLS transport's state and liveness. A failed generation does not fail the
    peer while a restart may still replace it."""
    if dtls == "failed" or (ice == "failed" and not restart_pending):
        return PeerState.FAILED
    if dtls == "closed" or ice == "closed":
        return PeerState.CLOSED
    if ice == "completed" and dtls == "connected":
        return liveness
    if ice == "new" and dtls == "new":
        return PeerState.NEW
    return PeerState.CONNECTING


def ends_call(
    state: PeerState,
    policy: RecoveryPolicy,
    *,
    can_renegotiate: bool,
    was_connected: bool,
) -> bool:
    """Whether entering ``state`` ends the call: closed always; failed unless
    a recovery restart may still bring a call that once connected back."""
    if state is PeerState.CLOSED:
        return True
    if state is not PeerState.FAILED:
        return False
    return policy is RecoveryPolicy.NONE or not can_renegotiate or not was_connected
