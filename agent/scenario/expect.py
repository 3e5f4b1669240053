"""Judge one call's report against a scenario's expectations. Pure: no I/O.

Theory of operation
-------------------
The JSON report of a call is the source of truth (DESIGN.md); expectations are
checked against *that dict*, not against live objects, so a verdict can be
recomputed from a saved report and a test can hand in a literal dict.

Each expectation that is set yields one :class:`Check` carrying the expected
and actual values as short human strings, ready for the terminal summary and
JUnit. Unset expectations yield nothing, except ``call_up`` which is on by
default. A value the report lacks (``None`` or a missing key) fails its
check with actual ``"not measured"``: an expectation that cannot be verified
must not pass silently.

Media figures judge the network's and the far end's share (``max_gap_ms``);
the agent's own share (``agent_gap_ms``: gaps its own lateness explains) is
shown beside it. When the agent's share alone exceeds the limit, a network gap
that long could hide inside the agent's stall: the check is *inconclusive*
(``passed`` false, ``inconclusive`` true), and the call's verdict is
INCONCLUSIVE, never FAIL, unless another check failed.

The same rule holds for every figure the agent's lateness can distort. The
timeline's ``note`` events of cause ``agent_stall`` (the loop watch, and each
RTP sender that sent late) say when the agent stalled; a figure over its
limit whose excess those stalls explain is inconclusive, with "agent stalled
N ms" in its ``actual``:

* ``max_setup_ms``: any stall between the call's start and ``setup_ms``
  (setup is a chain of round trips: a check or flight a stall delays costs a
  retransmission timeout, more than the stall itself);
* ``max_media_start_ms``: likewise, any stall between setup and the
  direction's first packet;
* ``max_packets_lost`` / ``packets_lost`` (over the maximum): the packets
  missing across media gaps that overlap a stall;
* ``media_gap_ms`` (over the maximum): as ``max_media_gap_ms``;
* ``call_up``: a direction silent until hang-up because its sender was late.

A figure within its limit passes whatever the stalls; a stall never turns a
figure into a failure.

``call_up`` is defined by media as well as ICE/DTLS: a call whose state says
``connected`` while a direction that sends has stopped (``media.<d>.state``)
is not up (after a NAT rebind the ICE state flaps while no audio arrives).

Report keys read (one call)::

    connected, final_state, ended_early, setup_ms
    events[] of type note with cause agent_stall: t_ms, detail.stall_ms
    events[] of type media_gap: t_ms, detail.{direction,length_ms,packets_missing}
    metrics.{ice_restarts,dtls_rehandshakes}.{total,level}
    metrics.selected_pair_changes
    local_side, events[].{type,side,initiator,cause}
    media.{caller_to_callee,callee_to_caller}.{max_gap_ms,agent_gap_ms,
        packets_lost,packets_received,start_ms,state,state_since_ms,sends,observed}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agent.observe.correlate import is_fault_effect
from agent.observe.model import COUNTED, DIRECTIONS
from agent.report.entries import CheckEntry
from agent.scenario.model import (
    CountRange,
    Expectations,
    SideCounts,
    SidePairChanges,
)
from agent.scenario.stalls import lost_in_stalls, stalled_ms, stalled_to_the_end

__all__ = ["DIRECTIONS", "Check", "check_expectations"]


_NOT_MEASURED = "not measured"
_NEVER_CONNECTED = "never connected"


#: One expectation's verdict, as the report's ``expectations.checks`` hold it.
Check = CheckEntry


def _lookup(result: Mapping[str, Any], dotted: str) -> Any:
    """``result["a"]["b"]`` for ``"a.b"``; None where any part is missing."""
    node: Any = result
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _judged_span(
    name: str, expected: str, actual: str, value: float, limit: float, stalled: float
) -> Check:
    """A span of round trips (setup, media start) over ``limit`` while the
    agent stalled in it: inconclusive, never a failure. Any stall counts, not
    only its length: a check or flight lost to a stall costs a whole
    retransmission timeout (RFC 8445 §14.3, RFC 6347 §4.2.4.1) on top."""
    if stalled > 0:
        actual += f"; agent stalled {_ms(stalled)}"
    if value <= limit:
        return Check(name, expected, actual, True)
    return Check(name, expected, actual, False, inconclusive=True if stalled else None)


def _never_started(result: Mapping[str, Any]) -> list[str]:
    """Directions due (sending, observed, not on hold at hang-up) that brought
    no packet at all."""

    def on_hold(d: str) -> bool:
        spans = _lookup(result, f"media.{d}.not_due")
        return isinstance(spans, list) and any(
            isinstance(s, Mapping) and s.get("end_ms") is None for s in spans
        )

    return [
        d
        for d, received in _per_direction(result, "packets_received").items()
        if received == 0 and not on_hold(d)
    ]


def _call_up(result: Mapping[str, Any]) -> Check:
    expected = "connected until the end"
    if not result.get("connected"):
        return Check("call_up", expected, _NEVER_CONNECTED, False)
    final_state = str(result.get("final_state"))
    ended_early = bool(result.get("ended_early"))
    if final_state == "connected" and not ended_early:
        directions = [
            (d, since)
            for d, since in _per_direction(result, "state_since_ms").items()
            if _lookup(result, f"media.{d}.state") == "stopped"
        ]
        stopped = [f"{d} stopped at {_ms(since or 0.0)}" for d, since in directions]
        never = [f"{d} never started" for d in _never_started(result)]
        if never or stopped:
            actual = "connected, but " + ", ".join(stopped + never)
            # A silence until hang-up that the agent's own sender stall
            # explains (it was behind when the call ended) is no stop of
            # the network's or the far end's.
            mine = stalled_to_the_end(result, [d for d, _ in directions])
            if not never and mine is not None:
                actual += f"; agent stalled {_ms(mine)}"
                return Check("call_up", expected, actual, False, inconclusive=True)
            return Check("call_up", expected, actual, False)
        return Check("call_up", expected, "connected", True)
    actual = f"{final_state} (ended early)" if ended_early else final_state
    return Check("call_up", expected, actual, False)


def _max_setup(result: Mapping[str, Any], limit_ms: float) -> Check:
    expected = f"<= {_ms(limit_ms)}"
    setup_ms = _number(result.get("setup_ms"))
    if setup_ms is None:
        actual = _NOT_MEASURED if result.get("connected") else _NEVER_CONNECTED
        return Check("max_setup_ms", expected, actual, False)
    stalled = stalled_ms(result, 0.0, setup_ms)
    return _judged_span(
        "max_setup_ms", expected, _ms(setup_ms), setup_ms, limit_ms, stalled
    )


def _max_media_start(result: Mapping[str, Any], limit_ms: float) -> Check:
    name, expected = "max_media_start_ms", f"<= {_ms(limit_ms)} after setup"
    if not result.get("connected"):
        return Check(name, expected, _NEVER_CONNECTED, False)
    never = _never_started(result)
    if never:
        actual = ", ".join(
            f"{d} never started (no packet until hang-up)" for d in never
        )
        return Check(name, expected, actual, False)
    starts = _per_direction(result, "start_ms")
    measured = {d: v for d, v in starts.items() if v is not None}
    if not measured or len(measured) < len(starts):
        return Check(name, expected, _NOT_MEASURED, False)
    worst = max(measured.values())
    setup = _number(result.get("setup_ms")) or 0.0
    stalled = stalled_ms(result, setup, setup + worst)
    actual = ", ".join(f"{_ms(v)} ({d})" for d, v in measured.items())
    return _judged_span(name, expected, actual, worst, limit_ms, stalled)


def _count(
    name: str, dotted: str, result: Mapping[str, Any], want: CountRange
) -> Check:
    value = _lookup(result, dotted)
    if isinstance(value, bool) or not isinstance(value, int):
        return Check(name, str(want), _NOT_MEASURED, False)
    return Check(name, str(want), str(value), want.contains(value))


def _level(metric: str, result: Mapping[str, Any], want: str) -> Check:
    actual = _lookup(result, f"metrics.{metric}.level")
    if actual is None:
        return Check(f"levels.{metric}", want, _NOT_MEASURED, False)
    return Check(f"levels.{metric}", want, str(actual), str(actual) == want)


#: the event type each contract metric counts
_EVENT_TYPE = {metric: str(kind) for kind, metric in COUNTED.items()}


def _counted_events(
    result: Mapping[str, Any], metric: str
) -> list[Mapping[str, Any]] | None:
    """The events behind ``metrics.<metric>``: the local side's, of its type."""
    events = result.get("events")
    local = result.get("local_side")
    if not isinstance(events, list) or not isinstance(local, str):
        return None
    return [
        e
        for e in events
        if isinstance(e, Mapping)
        and e.get("type") == _EVENT_TYPE[metric]
        and e.get("side") == local
    ]


def _initiator_side(event: Mapping[str, Any], local: str) -> str:
    initiator = event.get("initiator")
    if initiator == "local":
        return local
    if initiator == "remote":
        return "callee" if local == "caller" else "caller"
    return str(initiator)


def _initiated_by(
    metric: str, result: Mapping[str, Any], want: SideCounts
) -> Iterator[Check]:
    events = _counted_events(result, metric)
    local = str(result.get("local_side"))
    for who in ("caller", "callee", "network"):
        wanted: CountRange | None = getattr(want, who)
        if wanted is None:
            continue
        name = f"initiated_by.{metric}.{who}"
        if events is None:
            yield Check(name, str(wanted), _NOT_MEASURED, False)
            continue
        count = sum(1 for e in events if _initiator_side(e, local) == who)
        yield Check(name, str(wanted), str(count), wanted.contains(count))


def _every_event(
    name: str,
    metric: str,
    result: Mapping[str, Any],
    want: str,
    read: Callable[[Mapping[str, Any]], object],
) -> Check:
    """Every counted event of ``metric`` must have ``read(event) == want``."""
    events = _counted_events(result, metric)
    if events is None:
        return Check(name, want, _NOT_MEASURED, False)
    if not events:
        return Check(name, want, "no events", False)
    values = sorted({str(read(e)) for e in events})
    return Check(name, want, ", ".join(values), values == [want])


def _cause(metric: str, result: Mapping[str, Any], want: str) -> Check:
    return _every_event(
        f"causes.{metric}", metric, result, want, lambda e: e.get("cause")
    )


def _outcome(metric: str, result: Mapping[str, Any], want: str) -> Check:
    return _every_event(
        f"outcomes.{metric}",
        metric,
        result,
        want,
        lambda e: (e.get("detail") or {}).get("outcome"),
    )


def _per_direction(result: Mapping[str, Any], key: str) -> dict[str, float | None]:
    # A direction whose sender is receive-only by design has nothing to
    # measure; one a remote far end receives (``observed: false``, a WHIP call)
    # cannot be measured by us. Media checks judge the directions that remain
    # (and fail as "not measured" when none does).
    return {
        d: _number(_lookup(result, f"media.{d}.{key}"))
        for d in DIRECTIONS
        if _lookup(result, f"media.{d}.sends") is not False
        and _lookup(result, f"media.{d}.observed") is not False
    }


def _max_media_gap(result: Mapping[str, Any], limit_ms: float) -> Check:
    expected = f"<= {_ms(limit_ms)}"
    gaps = _per_direction(result, "max_gap_ms")
    measured = {d: gap for d, gap in gaps.items() if gap is not None}
    # Both directions must be measured: the gap a one-way outage leaves is
    # exactly what this expectation exists to catch.
    if len(measured) < len(gaps) or not measured:
        missing = ", ".join(d for d in gaps if d not in measured) or "no direction"
        actual = f"{_NOT_MEASURED} ({missing})"
        if not result.get("connected"):
            actual = _NEVER_CONNECTED
        return Check("max_media_gap_ms", expected, actual, False)
    direction, worst = max(measured.items(), key=lambda item: item[1])
    actual = f"{_ms(worst)} ({direction})"
    agent = {
        d: gap
        for d, gap in _per_direction(result, "agent_gap_ms").items()
        if gap is not None and gap > 0
    }
    if agent:
        mine, longest = max(agent.items(), key=lambda item: item[1])
        actual += f"; agent stalled {_ms(longest)} ({mine})"
        if worst <= limit_ms and longest > limit_ms:
            # A network gap over the limit could hide inside the stall.
            return Check("max_media_gap_ms", expected, actual, False, inconclusive=True)
    return Check("max_media_gap_ms", expected, actual, worst <= limit_ms)


def _lost_check(
    name: str, expected: str, result: Mapping[str, Any], limit: int | None
) -> tuple[Check | None, int, str, int]:
    lost = _per_direction(result, "packets_lost")
    if not lost or any(value is None for value in lost.values()):
        actual = _NEVER_CONNECTED if not result.get("connected") else _NOT_MEASURED
        return Check(name, expected, actual, False), 0, "", 0
    total = int(sum(value for value in lost.values() if value is not None))
    detail = ", ".join(f"{d} {int(v or 0)}" for d, v in lost.items())
    return None, total, f"{total} ({detail})", lost_in_stalls(result, list(lost))


def _packets(count: float) -> str:
    return f"{count:.0f} packets"


def _max_packets_lost(result: Mapping[str, Any], limit: int) -> Check:
    expected = f"<= {limit}"
    missing, total, actual, mine = _lost_check(
        "max_packets_lost", expected, result, limit
    )
    if missing is not None:
        return missing
    if mine and total > limit:
        actual += f"; {mine} in gaps while the agent stalled"
        stalled = stalled_ms(result, 0.0, float("inf"))
        if total - mine <= limit:
            actual += f"; agent stalled {_ms(stalled)}"
            return Check("max_packets_lost", expected, actual, False, inconclusive=True)
    return Check("max_packets_lost", expected, actual, total <= limit)


def _media_gap_range(result: Mapping[str, Any], want: CountRange) -> Check:
    gaps = _per_direction(result, "max_gap_ms")
    measured = {d: gap for d, gap in gaps.items() if gap is not None}
    if not measured or len(measured) < len(gaps):
        actual = _NOT_MEASURED if result.get("connected") else _NEVER_CONNECTED
        return Check("media_gap_ms", str(want), actual, False)
    direction, worst = max(measured.items(), key=lambda item: item[1])
    actual = f"{_ms(worst)} ({direction})"
    if want.contains(round(worst)) or want.max is None:
        return Check("media_gap_ms", str(want), actual, want.contains(round(worst)))
    # Over the maximum: as max_media_gap_ms, the agent's share may hide more.
    agent = max(
        (g or 0.0 for g in _per_direction(result, "agent_gap_ms").values()),
        default=0.0,
    )
    if agent > want.max:
        actual += f"; agent stalled {_ms(agent)}"
        return Check("media_gap_ms", str(want), actual, False, inconclusive=True)
    return Check("media_gap_ms", str(want), actual, False)


def _packets_lost_range(result: Mapping[str, Any], want: CountRange) -> Check:
    missing, total, actual, mine = _lost_check("packets_lost", str(want), result, None)
    if missing is not None:
        return missing
    if (
        want.max is not None
        and total > want.max
        and mine
        and want.contains(max(total - mine, want.min or 0))
    ):
        stalled = stalled_ms(result, 0.0, float("inf"))
        actual += f"; {mine} in gaps while the agent stalled {_ms(stalled)}"
        return Check("packets_lost", str(want), actual, False, inconclusive=True)
    return Check("packets_lost", str(want), actual, want.contains(total))


def _pair_changes_by_side(
    result: Mapping[str, Any], want: SidePairChanges
) -> Iterator[Check]:
    for side in ("caller", "callee"):
        wanted: CountRange | None = getattr(want, side)
        if wanted is not None:
            yield _count(
                f"selected_pair_changes_by_side.{side}",
                f"sides.{side}.metrics.selected_pair_changes",
                result,
                wanted,
            )


def _needs_cause(event: Mapping[str, Any]) -> bool:
    # What a network fault produces: the one list the attribution uses too.
    detail = event.get("detail")
    detail = detail if isinstance(detail, Mapping) else {}
    return is_fault_effect(
        str(event.get("type")),
        state=detail.get("state"),
        initial=detail.get("initial"),
    )


def _all_attributed(result: Mapping[str, Any]) -> Check:
    events = result.get("events")
    if not isinstance(events, list):
        return Check(
            "all_events_attributed", "every effect has a cause", _NOT_MEASURED, False
        )
    effects = [e for e in events if isinstance(e, Mapping) and _needs_cause(e)]
    missing = [e for e in effects if not e.get("cause")]
    if not missing:
        actual = f"all {len(effects)} attributed"
    else:
        first = missing[0]
        actual = (
            f"{len(missing)} of {len(effects)} without a cause (first: "
            f"{first.get('type')} at {first.get('t_ms')} ms, {first.get('side')})"
        )
    return Check(
        "all_events_attributed", "every effect has a cause", actual, not missing
    )


def _checks(expect: Expectations, result: Mapping[str, Any]) -> Iterator[Check]:
    # Order: is the call there at all, then the contract metrics, then media.
    if expect.call_up:
        yield _call_up(result)
    if expect.max_setup_ms is not None:
        yield _max_setup(result, expect.max_setup_ms)
    for metric in ("ice_restarts", "dtls_rehandshakes"):
        want = getattr(expect, metric)
        if want is not None:
            yield _count(metric, f"metrics.{metric}.total", result, want)
    if expect.selected_pair_changes is not None:
        yield _count(
            "selected_pair_changes",
            "metrics.selected_pair_changes",
            result,
            expect.selected_pair_changes,
        )
    for metric in ("ice_restarts", "dtls_rehandshakes"):
        level = getattr(expect.levels, metric)
        if level is not None:
            yield _level(metric, result, str(level))
    for metric in ("ice_restarts", "dtls_rehandshakes"):
        by_side = getattr(expect.initiated_by, metric)
        if by_side is not None:
            yield from _initiated_by(metric, result, by_side)
        cause = getattr(expect.causes, metric)
        if cause is not None:
            yield _cause(metric, result, cause)
        outcome = getattr(expect.outcomes, metric)
        if outcome is not None:
            yield _outcome(metric, result, outcome)
    if expect.max_media_start_ms is not None:
        yield _max_media_start(result, expect.max_media_start_ms)
    if expect.max_media_gap_ms is not None:
        yield _max_media_gap(result, expect.max_media_gap_ms)
    if expect.max_packets_lost is not None:
        yield _max_packets_lost(result, expect.max_packets_lost)
    if expect.media_gap_ms is not None:
        yield _media_gap_range(result, expect.media_gap_ms)
    if expect.packets_lost is not None:
        yield _packets_lost_range(result, expect.packets_lost)
    if expect.selected_pair_changes_by_side is not None:
        yield from _pair_changes_by_side(result, expect.selected_pair_changes_by_side)
    if expect.all_events_attributed:
        yield _all_attributed(result)


def check_expectations(expect: Expectations, result: Mapping[str, Any]) -> list[Check]:
    """One :class:`Check` per expectation that is set, in a fixed order."""
    return list(_checks(expect, result))
