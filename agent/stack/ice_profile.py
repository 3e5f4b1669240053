"""Whose ICE behaviour a peer imitates, as numbers and decisions (no I/O).

A test agent stands in for a browser or for a server, and a far end reacts
to what the agent does on the wire: how often it pings the selected pair,
whether those pings nominate, and when a controlled side moves to another
pair. :class:`~agent.stack.config.IceProfile` names two behaviours:

``libwebrtc`` (Chrome, and every app built on libwebrtc; the default)
    * both sides ping the selected pair; a pair is pinged every
      ``STRONG_AND_STABLE_WRITABLE_CONNECTION_PING_INTERVAL`` (2500 ms) once it
      is *stable* and the channel is strong, and every
      ``WEAK_OR_STABILIZING_WRITABLE_CONNECTION_PING_INTERVAL`` (900 ms) while
      it is stabilizing or weak (both in libwebrtc's
      ``p2p/base/p2p_constants.h``). *Stable* is ``Connection::stable()`` in
      ``p2p/base/connection.cc``: the RTT has converged (more than
      ``RTT_RATIO + 1`` = 4 RTT samples) and no ping response is missing;
      *weak* is not receiving for ``WEAK_CONNECTION_RECEIVE_TIMEOUT`` (2500 ms).
      The channel looks for a pair due a ping every ``STRONG_PING_INTERVAL``
      (480 ms) while strong, every ``WEAK_PING_INTERVAL`` (48 ms) while weak
      (``P2PTransportChannel::CheckAndPing``), so a pair's ping waits for the
      next such tick: 2500 ms becomes 2880 ms, 900 ms becomes 960 ms.
      The stable interval is RTCConfiguration's
      ``stable_writable_connection_ping_interval_ms``: a scenario's
      ``consent_interval`` sets it.
    * the controlling side's pings carry USE-CANDIDATE: Chrome's default
      ``NominationMode::SEMI_AGGRESSIVE`` nominates the selected connection on
      every ping (``P2PTransportChannel::GetUseCandidateAttr`` in
      ``p2p/base/p2p_transport_channel.cc``, the rule itself in
      ``basic_ice_controller.cc``);
    * the controlled side moves at once to a nominated pair that receives
      (``P2PTransportChannel::OnNominated``: an immediate switch,
      ``NOMINATION_ON_CONTROLLED_SIDE``), and to a valid pair that receives
      when the selected one has received nothing for 2.5 s (connection states
      outrank the current choice in ``BasicIceController::CompareConnections``).

``rfc`` (plain RFC 8445 / RFC 7675, what aioice does)
    consent checks every ``consent_interval`` (5 s) randomised to 0.8..1.2
    (RFC 7675 §5.1), never nominating: RFC 8445 §8.1.1 ends nomination once a
    pair is nominated, so the controlled side stays on its selected pair
    until an ICE restart.

The intervals below are the libwebrtc constants in seconds; the decisions are
pure functions of what the ping loop in :mod:`agent.stack.ice` observed.
"""

from __future__ import annotations

import math

from agent.stack.config import CONSENT_INTERVAL_S, IceProfile

#: p2p_constants.h STRONG_AND_STABLE_WRITABLE_CONNECTION_PING_INTERVAL (ms/1000)
STABLE_PING_INTERVAL_S = 2.5
#: p2p_constants.h WEAK_OR_STABILIZING_WRITABLE_CONNECTION_PING_INTERVAL
STABILIZING_PING_INTERVAL_S = 0.9
#: p2p_constants.h STRONG_PING_INTERVAL: the channel's tick while strong
STRONG_TICK_S = 0.48
#: p2p_constants.h WEAK_PING_INTERVAL: the channel's tick while weak
WEAK_TICK_S = 0.048
#: p2p_constants.h WEAK_CONNECTION_RECEIVE_TIMEOUT: not receiving -> weak
WEAK_RECEIVE_TIMEOUT_S = 2.5
#: connection.cc rtt_converged(): more than RTT_RATIO + 1 (= 4) RTT samples
RTT_SAMPLES_TO_CONVERGE = 5


def stable_ping_interval_s(profile: IceProfile, configured_s: float | None) -> float:
    """The interval between pings (consent checks) on a healthy selected pair."""
    if configured_s is not None:
        return configured_s
    if profile is IceProfile.LIBWEBRTC:
        return STABLE_PING_INTERVAL_S
    return CONSENT_INTERVAL_S


def libwebrtc_ping_interval_s(
    stable_interval_s: float,
    *,
    rtt_samples: int,
    missing_response: bool,
    receiving: bool,
) -> float:
    """libwebrtc's next ping on the selected pair: the stable interval once the
    pair is stable and receiving, the faster stabilizing/weak one otherwise,
    each rounded up to the channel's next tick."""
    stable = rtt_samples >= RTT_SAMPLES_TO_CONVERGE and not missing_response
    if stable and receiving:
        interval = stable_interval_s
    else:
        interval = min(STABILIZING_PING_INTERVAL_S, stable_interval_s)
    tick = STRONG_TICK_S if receiving and not missing_response else WEAK_TICK_S
    # round() first: 2.4 / 0.48 must be 5 ticks, not 5.000000001 -> 6.
    return math.ceil(round(interval / tick, 6)) * tick


def nominates_on_ping(profile: IceProfile, *, controlling: bool) -> bool:
    """Whether a ping on the selected pair carries USE-CANDIDATE."""
    return profile is IceProfile.LIBWEBRTC and controlling


def follows_far_end(profile: IceProfile) -> bool:
    """Whether a controlled side leaves a selected pair that stopped receiving
    for a valid pair that receives (libwebrtc), or stays put (RFC 8445)."""
    return profile is IceProfile.LIBWEBRTC
