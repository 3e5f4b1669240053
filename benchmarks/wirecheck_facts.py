"""What one call did on the wire, from its capture alone (pure; no I/O).

:func:`wire_facts` takes the datagrams of a capture and a few *seed*
endpoints whose side is known (from the report: each side's selected pairs)
and works out:

* **sides of the other endpoints**, by content, not by address: a STUN check's
  USERNAME is ``receiver ufrag:sender ufrag`` (RFC 8445 §7.2.2), so a ufrag
  seen from a known endpoint names the side of every other endpoint that uses
  it; an RTP SSRC does the same. A datagram counts only when its two ends are
  on *different* sides. That is also how a user-space NAT is handled: a leg
  between the inside socket and the NAT's public socket (both the NAT side's)
  would be dropped here, and only the leg that crossed to the far side counts.
  (The agent's NAT hands datagrams to the inside in-process, so today there is
  no inside leg on the wire at all; the rule keeps the count right if there
  were.) Endpoints with no side (the STUN server outside the NAT; anyone
  else's traffic on a shared ``lo``) are left out and listed.
* **ICE generations per side**: the distinct ufrags each side used.
* **DTLS handshakes**: one per distinct ClientHello random (retransmissions
  and the cookie exchange repeat it, RFC 6347 §4.2.1), with who sent it.
* **SRTP per direction**: RTP packets on the wire, SSRCs, and every interval
  between consecutive *delivered* packets, plus the silence from the last one
  to the hang-up (the first DTLS alert, a close_notify, of the final burst).
  A packet the kernel answered with an ICMP port unreachable was not
  delivered: that is how a user-space NAT's retired public port (a rebind, an
  expired mapping) shows on the wire; so is one sent to an address the caller
  says is dead from a time on (a VPN reconnect's old address). A drop
  *inside* the agent's process (a fault's filter on the receiving side, the
  NAT's filtering) is invisible here, by construction.
* **Setup on the wire**: from the first connectivity check (the first Binding
  request with a USERNAME between the two sides) to the last datagram of the
  first DTLS handshake, in either direction (the last datagram on that
  handshake's 5-tuple carrying a handshake or ChangeCipherSpec record before
  any later ClientHello). A gathering request to a STUN server is not a
  connectivity check and does not start it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from benchmarks.wirecheck_pcap import (
    Datagram,
    DtlsRecord,
    Rtp,
    Stun,
    Unreachable,
    classify,
)

__all__ = ["SIDES", "DirectionFacts", "Handshake", "WireFacts", "wire_facts"]

SIDES = ("caller", "callee")
DIRECTIONS = {
    ("caller", "callee"): "caller_to_callee",
    ("callee", "caller"): "callee_to_caller",
}
_CHANGE_CIPHER_SPEC = 20
_ALERT = 21
_HANDSHAKE = 22
#: the close_notify alerts of one hang-up all fall within this
_HANGUP_BURST_S = 0.5


@dataclass
class DirectionFacts:
    """One media direction's RTP as the wire carried it."""

    #: RTP packets sent on the wire
    packets: int = 0
    #: of those, answered by an ICMP port unreachable or sent to a dead address
    undelivered: int = 0
    rtcp_packets: int = 0
    ssrcs: set[int] = field(default_factory=set)
    #: capture times of the delivered RTP packets, seconds since the epoch
    times: list[float] = field(default_factory=list)
    #: (ssrc, seq) seen more than once: a retransmission or a doubled leg
    duplicates: int = 0

    def intervals(self) -> list[tuple[float, float]]:
        """(start, length) of every interval between consecutive packets, in s."""
        return [(a, b - a) for a, b in zip(self.times, self.times[1:], strict=False)]


@dataclass(frozen=True)
class Handshake:
    """One DTLS handshake: its first ClientHello on the wire."""

    t: float
    client: str
    server: str
    client_side: str
    transmissions: int


@dataclass
class WireFacts:
    ufrags: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SIDES})
    handshakes: list[Handshake] = field(default_factory=list)
    media: dict[str, DirectionFacts] = field(
        default_factory=lambda: {d: DirectionFacts() for d in DIRECTIONS.values()}
    )
    first_check_t: float | None = None
    first_handshake_end_t: float | None = None
    #: the first DTLS alert of the last burst: the hang-up, as the wire shows it
    hangup_t: float | None = None
    sides: dict[str, str] = field(default_factory=dict)
    #: datagrams left out (an end with no side, or both ends on one side), by pair
    excluded: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def setup_s(self) -> float | None:
        if self.first_check_t is None or self.first_handshake_end_t is None:
            return None
        return self.first_handshake_end_t - self.first_check_t


def wire_facts(
    packets: Sequence[Datagram | Unreachable],
    seeds: Mapping[str, str],
    dead: Mapping[str, float] | None = None,
) -> WireFacts:
    """The call's facts; ``seeds`` maps ``ip:port`` to ``caller``/``callee``.

    ``dead`` names endpoints that receive nothing from a time on (epoch s).
    """
    dead = dead or {}
    parsed = [(d, classify(d.payload)) for d in packets if isinstance(d, Datagram)]
    refused = {_rtp_key(u.datagram) for u in packets if isinstance(u, Unreachable)}
    facts = WireFacts(sides=_assign_sides(parsed, seeds))
    side = facts.sides
    hellos: dict[bytes, list[Datagram]] = {}
    for datagram, what in parsed:
        src, dst = side.get(datagram.src), side.get(datagram.dst)
        if src is None or dst is None or src == dst:
            pair = (datagram.src, datagram.dst)
            facts.excluded[pair] = facts.excluded.get(pair, 0) + 1
            continue
        if isinstance(what, Stun) and what.is_binding_request and what.username:
            if facts.first_check_t is None:
                facts.first_check_t = datagram.t
            receiver, _, sender = what.username.partition(":")
            _note(facts.ufrags[dst], receiver)
            _note(facts.ufrags[src], sender)
        elif isinstance(what, Rtp):
            media = facts.media[DIRECTIONS[(src, dst)]]
            media.ssrcs.add(what.ssrc)
            if what.is_rtcp:
                media.rtcp_packets += 1
            elif _rtp_key(datagram) in refused or datagram.t >= dead.get(
                datagram.dst, float("inf")
            ):
                media.packets += 1
                media.undelivered += 1
            else:
                media.packets += 1
                media.times.append(datagram.t)
        elif isinstance(what, list):
            for record in what:
                if record.client_hello_random is not None:
                    hellos.setdefault(record.client_hello_random, []).append(datagram)
    facts.handshakes = sorted(
        (
            Handshake(seen[0].t, seen[0].src, seen[0].dst, side[seen[0].src], len(seen))
            for seen in hellos.values()
        ),
        key=lambda h: h.t,
    )
    for media in facts.media.values():
        media.duplicates = _duplicates(parsed, side, media)
    between = [(d, w) for d, w in parsed if _between_sides(d, side)]
    facts.first_handshake_end_t, facts.hangup_t = _handshake_end_and_hangup(
        between, facts.handshakes
    )
    return facts


def _between_sides(datagram: Datagram, side: Mapping[str, str]) -> bool:
    src, dst = side.get(datagram.src), side.get(datagram.dst)
    return src is not None and dst is not None and src != dst


def _rtp_key(datagram: Datagram) -> tuple[str, str, int, int] | None:
    what = classify(datagram.payload)
    if not isinstance(what, Rtp) or what.seq is None:
        return None
    return (datagram.src, datagram.dst, what.ssrc, what.seq)


def _note(seen: list[str], ufrag: str) -> None:
    if ufrag and ufrag not in seen:
        seen.append(ufrag)


def _assign_sides(
    parsed: Sequence[tuple[Datagram, object]], seeds: Mapping[str, str]
) -> dict[str, str]:
    """Seeds, then every endpoint that shows a ufrag or SSRC of a known side."""
    side = dict(seeds)
    marks: dict[str, str] = {}  # "u:<ufrag>" / "s:<ssrc>" -> side
    changed = True
    while changed:
        changed = False
        for datagram, what in parsed:
            own: list[tuple[str, str]] = []  # (endpoint, mark) pairs it proves
            if isinstance(what, Stun) and what.is_binding_request and what.username:
                receiver, _, sender = what.username.partition(":")
                own = [(datagram.src, f"u:{sender}"), (datagram.dst, f"u:{receiver}")]
            elif isinstance(what, Rtp):
                own = [(datagram.src, f"s:{what.ssrc}")]
            for endpoint, mark in own:
                if endpoint in side and mark not in marks:
                    marks[mark] = side[endpoint]
                    changed = True
                elif endpoint not in side and mark in marks:
                    side[endpoint] = marks[mark]
                    changed = True
    return side


def _duplicates(
    parsed: Sequence[tuple[Datagram, object]],
    side: Mapping[str, str],
    media: DirectionFacts,
) -> int:
    seen: set[tuple[int, int]] = set()
    duplicates = 0
    for datagram, what in parsed:
        if isinstance(what, Rtp) and not what.is_rtcp and what.seq is not None:
            src, dst = side.get(datagram.src), side.get(datagram.dst)
            if src is None or dst is None or src == dst or what.ssrc not in media.ssrcs:
                continue
            key = (what.ssrc, what.seq)
            duplicates += key in seen
            seen.add(key)
    return duplicates


def _handshake_end_and_hangup(
    parsed: Sequence[tuple[Datagram, object]], handshakes: Sequence[Handshake]
) -> tuple[float | None, float | None]:
    if not handshakes:
        return None, None
    first = handshakes[0]
    flow = {first.client, first.server}
    until = handshakes[1].t if len(handshakes) > 1 else float("inf")
    end: float | None = None
    alerts: list[float] = []
    for datagram, what in parsed:
        if not isinstance(what, list) or datagram.t < first.t:
            continue
        types = {r.content_type for r in what if isinstance(r, DtlsRecord)}
        on_flow = {datagram.src, datagram.dst} == flow
        if on_flow and datagram.t < until and types & {_CHANGE_CIPHER_SPEC, _HANDSHAKE}:
            end = datagram.t
        if _ALERT in types:
            alerts.append(datagram.t)
    # Hang-up closes every association at once (close_notify each way); an
    # alert earlier in the call is an old association going away.
    hangup = min((t for t in alerts if t >= alerts[-1] - _HANGUP_BURST_S), default=None)
    return end, hangup
