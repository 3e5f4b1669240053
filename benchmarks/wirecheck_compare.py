"""Compare one call's report with what its capture shows (pure; no I/O).

Each :class:`Check` is one figure the report states and the wire can show:

* ``handshakes``: ``metrics.dtls_rehandshakes.total`` + 1 equals the number
  of distinct ClientHellos;
* ``ufrags.<side>``: ``metrics.ice_restarts.total`` + 1 equals that side's
  distinct ufrags;
* ``srtp_sent.<dir>``: ``media.<dir>.packets_sent`` equals the RTP packets
  on the wire;
* ``max_gap_ms.<dir>``: the larger of ``media.<dir>.max_gap_ms`` (the
  network's share) and ``agent_gap_ms`` (the agent's own stalls) is within
  20 ms of the wire's longest silence;
* ``gaps.<dir>``: each of ``media.<dir>.gaps`` (not ``sender_paused``) is
  within 20 ms of the wire's longest silence over it;
* ``setup_ms``: ends within 10 ms of the end of the wire's setup.

Where the wire is blind
-----------------------
The agent's faults act inside its own process (:mod:`agent.net.filters`, the
user-space NAT). A datagram a fault drops on the *sender* never reaches the
wire, though the report counts it as sent; one dropped or held on the
*receiver* (its filter, or the NAT in front of it) is on the wire, though the
receiver never got it in time. So a differing figure is marked ``blind``, not
``DIFF``, when the report's own timeline explains it: ``srtp_sent`` when a
fault on the sender dropped datagrams outbound; a gap (and ``max_gap_ms``
through it) when it overlaps a fault window on the receiver that acts inbound
(the fault's ``fault_start``..``fault_end``), or a failover of the receiver
(it dropped its keys, so SRTP on the wire is no media to it until its new
handshake completes; :func:`failover_windows`). Every other difference is a
disagreement. An old address a fault left dead (``old_address_alive: false``)
is not blindness: what the wire carries there afterwards counts as
undelivered (:func:`dead_endpoints`).

An ICE restart renews both sides' credentials (RFC 8445 §9: the answerer's
too), so each side shows one ufrag per generation of the *call*. The wire's
silences include the one from a direction's last packet to the hang-up: media
is due until then. A wire silence of at least the scenario's gap threshold +
20 ms that no report gap covers is a gap the report missed.

Times are put on one clock through the report's ``started_at`` (the call's
t=0, wall clock, ms) and the capture's kernel timestamps (same host clock):
``setup_ms`` ends when the report says both sides were connected; the wire's
setup ends with the last datagram of the first DTLS handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from benchmarks.wirecheck_facts import DIRECTIONS, SIDES, DirectionFacts, WireFacts

__all__ = [
    "GAP_TOLERANCE_MS",
    "SETUP_TOLERANCE_MS",
    "Check",
    "FaultWindow",
    "compare",
    "dead_endpoints",
    "fault_windows",
    "seed_endpoints",
]

GAP_TOLERANCE_MS = 20.0
SETUP_TOLERANCE_MS = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    report: str
    wire: str
    agrees: bool
    #: why a difference is one the wire cannot see (see "Where the wire is blind")
    blind: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.agrees else "blind" if self.blind else "DIFF"


@dataclass(frozen=True)
class FaultWindow:
    """One in-process fault, from the report's fault_start/fault_end."""

    name: str
    side: str
    #: both / inbound / outbound; None for the NAT's faults (inbound filtering)
    direction: str | None
    start_ms: float
    end_ms: float
    dropped: int

    def hides_inbound(self, receiver: str, begin_ms: float, end_ms: float) -> bool:
        return (
            self.side == receiver
            and self.direction in (None, "both", "inbound")
            and self.start_ms < end_ms
            and begin_ms < self.end_ms
        )

    def drops_outbound(self, sender: str) -> bool:
        return (
            self.side == sender
            and self.direction in ("both", "outbound")
            and self.dropped > 0
        )


def fault_windows(call: Mapping[str, Any]) -> list[FaultWindow]:
    starts: dict[Any, Mapping[str, Any]] = {}
    windows: list[FaultWindow] = []
    end_of_call = float(call.get("duration_ms") or 0.0)
    for event in call.get("events") or []:
        detail = event.get("detail") or {}
        if event.get("type") == "fault_start":
            starts[detail.get("fault_id")] = event
        elif event.get("type") == "fault_end" and detail.get("fault_id") in starts:
            start = starts.pop(detail.get("fault_id"))
            dropped = int(detail.get("dropped") or 0)
            windows.append(_window(start, float(event["t_ms"]), dropped))
    windows += [_window(start, end_of_call, 0) for start in starts.values()]
    return windows + failover_windows(call)


def failover_windows(call: Mapping[str, Any]) -> list[FaultWindow]:
    """A side that failed over (``sbc.failover``) dropped its DTLS state: until
    its new handshake completes it cannot decrypt what the far end still sends
    under the old keys. Those packets are on the wire, but not media to the
    receiver (a real backup SBC has no keys either): the wire is blind to that
    gap, as to an in-process filter on the receiver."""
    windows: list[FaultWindow] = []
    for event in call.get("events") or []:
        detail = event.get("detail") or {}
        if (
            event.get("type") == "dtls_rehandshake"
            and event.get("initiator") == "local"
            and detail.get("trigger") == "failover"
        ):
            start = float(event["t_ms"])
            duration = float(detail.get("duration_ms") or 0.0)
            side = str(event.get("side"))
            windows.append(
                FaultWindow("failover", side, "inbound", start, start + duration, 0)
            )
    return windows


def dead_endpoints(call: Mapping[str, Any]) -> dict[str, float]:
    """Old addresses a fault left dead (a VPN reconnect), from when (epoch s).

    What is sent there afterwards is on the wire but received by nobody: the
    agent drops it in-process, where the kernel would have sent no ICMP either.
    """
    t0 = call_t0(call)
    dead: dict[str, float] = {}
    for event in call.get("events") or []:
        detail = event.get("detail") or {}
        if (
            event.get("type") == "fault_start"
            and detail.get("old_address_alive") is False
        ):
            for endpoint in detail.get("old") or []:
                dead.setdefault(str(endpoint), t0 + float(event["t_ms"]) / 1000)
    return dead


def _window(start: Mapping[str, Any], end_ms: float, dropped: int) -> FaultWindow:
    detail = start.get("detail") or {}
    return FaultWindow(
        str(detail.get("fault")),
        str(detail.get("target") or start.get("side")),
        detail.get("direction"),
        float(start["t_ms"]),
        end_ms,
        dropped,
    )


def seed_endpoints(call: Mapping[str, Any]) -> dict[str, str]:
    """Endpoints whose side the report names: every selected pair, both views."""
    seeds: dict[str, str] = {}
    other = dict(zip(SIDES, reversed(SIDES), strict=True))
    pairs: list[tuple[str, Mapping[str, Any]]] = []
    for side, entry in (call.get("sides") or {}).items():
        pairs.append((side, entry.get("selected_pair") or {}))
    for event in call.get("events") or []:
        detail = event.get("detail")
        if isinstance(detail, Mapping):
            pairs.append((event.get("side"), detail))
            pairs.append((event.get("side"), detail.get("selected_pair") or {}))
    for side, pair in pairs:
        if side not in other:
            continue
        local, remote = pair.get("local"), pair.get("remote")
        if isinstance(local, str) and ":" in local:
            seeds.setdefault(local, side)
        if isinstance(remote, str) and ":" in remote:
            seeds.setdefault(remote, other[side])
    return seeds


def call_t0(call: Mapping[str, Any]) -> float:
    """The call's t=0 in seconds since the epoch (``started_at``, ms precision)."""
    return datetime.fromisoformat(
        str(call["started_at"]).replace("Z", "+00:00")
    ).timestamp()


def compare(
    call: Mapping[str, Any], facts: WireFacts, gap_threshold_ms: float
) -> list[Check]:
    t0 = call_t0(call)
    windows = fault_windows(call)
    metrics = call.get("metrics") or {}
    checks = [
        _equal(
            "handshakes",
            _total(metrics, "dtls_rehandshakes") + 1,
            len(facts.handshakes),
            ", ".join(f"{h.client_side}@{_ms(h.t, t0)}" for h in facts.handshakes),
        )
    ]
    generations = _total(metrics, "ice_restarts") + 1
    for side in SIDES:
        checks.append(
            _equal(
                f"ufrags.{side}",
                generations,
                len(facts.ufrags[side]),
                " ".join(facts.ufrags[side]),
            )
        )
    media = call.get("media") or {}
    for (sender, receiver), direction in DIRECTIONS.items():
        entry = media.get(direction) or {}
        wire = facts.media[direction]
        sent = entry.get("packets_sent")
        if sent is not None:
            check = _equal(
                f"srtp_sent.{direction}", int(sent), wire.packets, _rtp_note(wire)
            )
            droppers = [w for w in windows if w.drops_outbound(sender)]
            if not check.agrees and droppers:
                why = ", ".join(f"{w.name} dropped {w.dropped}" for w in droppers)
                check = replace(check, blind=f"{sender}: {why} before the wire")
            checks.append(check)
        if len(wire.times) >= 2 and entry.get("max_gap_ms") is not None:
            silences = _silences(wire, facts.hangup_t)
            hiding = [w for w in windows if w.side == receiver]
            gaps, blind_at = _gaps(
                receiver, direction, entry, silences, t0, gap_threshold_ms, hiding
            )
            longest = max(length for _, length in silences) * 1000
            # The report splits the longest gap into the network's share
            # (``max_gap_ms``) and the agent's own (``agent_gap_ms``); the
            # wire sees whichever was longer.
            report_max = max(
                float(entry["max_gap_ms"]), float(entry.get("agent_gap_ms") or 0.0)
            )
            check = Check(
                f"max_gap_ms.{direction}",
                f"{report_max:.1f}",
                f"{longest:.1f}",
                abs(longest - report_max) <= GAP_TOLERANCE_MS,
            )
            # Over the threshold, the report's longest gap is one it lists.
            if not check.agrees and round(report_max) in blind_at:
                check = replace(check, blind=blind_at[round(report_max)])
            elif not check.agrees and report_max < gap_threshold_ms and hiding:
                # Below the threshold the report lists no gap, so its longest
                # spacing cannot be placed: any receiver-side window may hold it.
                names = ", ".join(sorted({w.name for w in hiding}))
                check = replace(
                    check, blind=f"{receiver}: {names} in-process (not located)"
                )
            checks += [check, gaps]
    checks.append(_setup(call, facts, t0))
    return checks


def _total(metrics: Mapping[str, Any], name: str) -> int:
    value = (metrics.get(name) or {}).get("total")
    return int(value) if value is not None else 0


def _equal(name: str, report: int, wire: int, note: str) -> Check:
    return Check(
        name, str(report), f"{wire} ({note})" if note else str(wire), report == wire
    )


def _rtp_note(wire: DirectionFacts) -> str:
    note = "ssrc " + ",".join(f"{s:08x}" for s in sorted(wire.ssrcs))
    if wire.duplicates:
        note += f", {wire.duplicates} dup"
    if wire.undelivered:
        note += f", {wire.undelivered} undelivered"
    return note


def _ms(t: float, t0: float) -> str:
    return f"{(t - t0) * 1000:.0f}"


def _silences(
    wire: DirectionFacts, hangup_t: float | None
) -> list[tuple[float, float]]:
    silences = wire.intervals()
    if hangup_t is not None and hangup_t > wire.times[-1]:
        silences.append((wire.times[-1], hangup_t - wire.times[-1]))
    return silences


def _gaps(
    receiver: str,
    direction: str,
    entry: Mapping[str, Any],
    silences: list[tuple[float, float]],
    t0: float,
    threshold_ms: float,
    receiver_faults: list[FaultWindow],
) -> tuple[Check, dict[int, str]]:
    """Each report gap against the wire's longest silence over it, and back.

    Also returns, by rounded length, the report gaps that a fault on the
    receiver hides from the wire, with the fault's name.
    """
    blind_at: dict[int, str] = {}
    wire_ms = [((start - t0) * 1000, length * 1000) for start, length in silences]
    reported = [g for g in entry.get("gaps") or [] if not g.get("sender_paused")]
    agrees = True
    report_text: list[str] = []
    covered: list[tuple[float, float]] = []
    for gap in reported:
        start, length = float(gap["start_ms"]), float(gap["length_ms"])
        covered.append((start, start + length))
        # The wire silence that shares most time with it (clocks differ by a
        # millisecond or so, so a neighbouring silence may touch it).
        shared = [
            (min(start + length, s + w) - max(start, s), w)
            for s, w in wire_ms
            if s < start + length and s + w > start
        ]
        longest = max(shared, default=(0.0, 0.0))[1]
        ok = abs(longest - length) <= GAP_TOLERANCE_MS
        hiders = [
            w.name
            for w in receiver_faults
            if w.hides_inbound(receiver, start, start + length)
        ]
        if not ok and hiders:
            blind_at[round(length)] = f"{receiver}: {', '.join(hiders)} in-process"
            report_text.append(f"{length:.0f}@{start:.0f} (wire {longest:.0f}, blind)")
            continue
        agrees &= ok
        report_text.append(
            f"{length:.0f}@{start:.0f}" + ("" if ok else f" (wire {longest:.0f})")
        )
    missed = [
        (s, w)
        for s, w in wire_ms
        if w >= threshold_ms + GAP_TOLERANCE_MS
        and not any(s < end and s + w > begin for begin, end in covered)
    ]
    agrees &= not missed
    wire_text = [f"{w:.0f}@{s:.0f}" for s, w in wire_ms if w >= threshold_ms]
    if missed:
        wire_text.append(
            "not in report: " + " ".join(f"{w:.0f}@{s:.0f}" for s, w in missed)
        )
    blind = None
    if agrees and blind_at:
        agrees = False
        blind = "; ".join(sorted(set(blind_at.values())))
    check = Check(
        f"gaps.{direction}",
        f"{len(reported)}: " + " ".join(report_text) if reported else "0",
        " ".join(wire_text) if wire_text else "0",
        agrees,
        blind,
    )
    return check, blind_at


def _setup(call: Mapping[str, Any], facts: WireFacts, t0: float) -> Check:
    setup_ms = call.get("setup_ms")
    end = facts.first_handshake_end_t
    if setup_ms is None or end is None:
        both_missing = setup_ms is None and end is None
        return Check(
            "setup_ms",
            str(setup_ms),
            "no handshake" if end is None else "ends",
            both_missing,
        )
    wire_end_ms = (end - t0) * 1000
    span = (
        ""
        if facts.setup_s is None
        else f", check->handshake {facts.setup_s * 1000:.1f}"
    )
    return Check(
        "setup_ms",
        f"{float(setup_ms):.1f}",
        f"{wire_end_ms:.1f}{span}",
        abs(wire_end_ms - float(setup_ms)) <= SETUP_TOLERANCE_MS,
    )
