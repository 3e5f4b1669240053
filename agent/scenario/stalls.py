"""When the agent itself stalled, read back from a finished call's report.

The timeline's ``agent_stall`` notes (the stall watch and each sender's own
lateness, :mod:`agent.observe.correlate`) say when the agent's event loop was
late; the expectations use them to call a figure *inconclusive* instead of
failed when the agent's lateness, not the network or the far end, explains
it (README: "Verdicts you can believe").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["lost_in_stalls", "stalled_ms", "stalled_to_the_end", "stalls"]

_AGENT_STALL = "agent_stall"


def stalls(result: Mapping[str, Any]) -> list[tuple[float, float]]:
    """When the agent stalled: ``(start, end)`` on the call clock."""
    events = result.get("events")
    out: list[tuple[float, float]] = []
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, Mapping) or e.get("cause") != _AGENT_STALL:
            continue
        if e.get("type") != "note":
            continue
        t = _number(e.get("t_ms"))
        detail = e.get("detail")
        length = (
            _number(detail.get("stall_ms")) if isinstance(detail, Mapping) else None
        )
        if t is not None and length is not None:
            out.append((t, t + length))
    return out


def stalled_ms(result: Mapping[str, Any], start: float, end: float) -> float:
    """How long the agent was stalled within ``[start, end]`` (overlaps merged)."""
    spans = sorted(
        (max(a, start), min(b, end))
        for a, b in stalls(result)
        if a <= end and b >= start
    )
    total, reach = 0.0, start
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            total += b - a
            reach = b
    return total


def lost_in_stalls(result: Mapping[str, Any], directions: list[str]) -> int:
    """Packets missing across media gaps of ``directions`` that overlap a
    stall of the agent (its lateness may have made them, or kept them out)."""
    spans = stalls(result)
    events = result.get("events")
    total = 0
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, Mapping) or e.get("type") != "media_gap":
            continue
        detail = e.get("detail")
        if not isinstance(detail, Mapping) or detail.get("direction") not in directions:
            continue
        start = _number(e.get("t_ms")) or 0.0
        end = start + (_number(detail.get("length_ms")) or 0.0)
        if any(a <= end and b >= start for a, b in spans):
            total += int(_number(detail.get("packets_missing")) or 0)
    return total


def stalled_to_the_end(
    result: Mapping[str, Any], directions: list[str]
) -> float | None:
    """The longest agent stall behind the silences until hang-up of
    ``directions`` (each direction's ``until_end`` gap of cause
    ``agent_stall``: its sender was behind when the call ended), when every
    one of them is the agent's; None otherwise."""
    events = result.get("events")
    longest: float | None = None
    for direction in directions:
        stall = None
        for e in events if isinstance(events, list) else []:
            if not isinstance(e, Mapping) or e.get("type") != "media_gap":
                continue
            detail = e.get("detail")
            if (
                isinstance(detail, Mapping)
                and detail.get("direction") == direction
                and detail.get("until_end")
                and e.get("cause") == _AGENT_STALL
            ):
                stall = _number(detail.get("stall_ms")) or 0.0
        if stall is None:
            return None
        longest = max(longest or 0.0, stall)
    return longest


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
