"""Cause attribution and media-gap attribution over a finished timeline.

Pure functions over :class:`~agent.observe.model.Event` lists, so every rule here
is unit-tested without sockets.

Rules (DESIGN.md):

* A network fault (``fault_start`` .. ``fault_end``) gives its cause to the
  effects that begin while it lasts or within ``FAULT_EFFECT_WINDOW_MS`` after
  it ended, on either side: connection states, non-initial selected-pair
  changes, media gaps, and restarts/rehandshakes whose only cause so far is
  their trigger (``disconnected``, ``failed``) or unknown. Such an event gets
  ``detail.fault`` (the fault's id, kind and start). Chosen causes (a step's
  ``manual``) are kept. The latest fault started before the event wins.

* When both sides are observed, a remote-initiated restart or rehandshake of
  unknown cause takes the cause the initiating side recorded for it
  (``detail.cause_from`` names that side).
* A DTLS rehandshake that starts within ``window_ms`` after an ICE restart seen by
  the same side is *triggered by ICE, not DTLS itself*: it gets
  ``detail.triggered_by = "ice_restart"``, ``detail.correlated_with`` (the
  restart's start time and generation), and — unless it already has a more
  specific cause — the restart's cause.
* Each ICE restart and DTLS rehandshake carries the media gap seen by each
  receiver around it: the longest recorded ``media_gap`` per direction that
  overlaps ``[start, start + duration + slack_ms]``. Gaps shorter than the gap
  threshold are not recorded, so ``0`` means "below the threshold".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from agent.observe.model import Event, EventType, Initiator

#: Default window in which a rehandshake is attributed to a preceding restart.
CORRELATION_WINDOW_MS = 5000.0
#: Media resumes a little after the signalling says "done"; look that far past.
GAP_SLACK_MS = 1500.0
DIRECTIONS = ("caller_to_callee", "callee_to_caller")


#: Both sides see one restart/rehandshake within this long of each other.
SAME_EVENT_WINDOW_MS = 2000.0


def share_causes(
    events: Sequence[Event], window_ms: float = SAME_EVENT_WINDOW_MS
) -> list[Event]:
    """Give a remote-initiated event of unknown cause the cause its initiator
    recorded, when both sides are observed (a loopback call): the far end's
    observer knows *why* it restarted; the near end only sees *that* it did."""
    out: list[Event] = []
    for event in events:
        if (
            event.type in (EventType.ICE_RESTART, EventType.DTLS_REHANDSHAKE)
            and event.cause is None
            and event.initiator is Initiator.REMOTE
        ):
            origin = next(
                (
                    e
                    for e in events
                    if e.type is event.type
                    and e.side is not event.side
                    and e.initiator is Initiator.LOCAL
                    and e.cause is not None
                    and abs(e.t_ms - event.t_ms) <= window_ms
                ),
                None,
            )
            if origin is not None:
                detail = {**event.detail, "cause_from": str(origin.side)}
                event = dataclasses.replace(event, cause=origin.cause, detail=detail)
        out.append(event)
    return out


#: Effects of a fault show up after it: consent intervals, ``disconnected_after``.
FAULT_EFFECT_WINDOW_MS = 10000.0

_FAULT_EFFECTS = (
    EventType.CONNECTION_STATE,
    EventType.SELECTED_PAIR_CHANGE,
    EventType.MEDIA_GAP,
    EventType.ICE_RESTART,
    EventType.DTLS_REHANDSHAKE,
)


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    fault_id: object
    kind: str
    cause: str | None
    start_ms: float
    end_ms: float  # inf while the fault never ended


def fault_windows(events: Sequence[Event]) -> list[FaultWindow]:
    ends = {
        e.detail.get("fault_id"): e.t_ms
        for e in events
        if e.type is EventType.FAULT_END
    }
    return [
        FaultWindow(
            e.detail.get("fault_id"),
            str(e.detail.get("fault")),
            e.cause,
            e.t_ms,
            ends.get(e.detail.get("fault_id"), float("inf")),
        )
        for e in events
        if e.type is EventType.FAULT_START
    ]


def _open_to_attribution(event: Event) -> bool:
    if event.type not in _FAULT_EFFECTS:
        return False
    if event.type is EventType.SELECTED_PAIR_CHANGE and event.detail.get("initial"):
        return False
    if event.type is EventType.CONNECTION_STATE and event.detail.get("state") not in (
        "disconnected",
        "failed",
        "connected",
    ):
        return False  # setup and teardown are nobody's fault
    # A restart's trigger stands in for its cause until we know better.
    return event.cause in (None, "disconnected", "failed") or event.cause == (
        event.detail.get("trigger")
    )


def _effect_end(event: Event) -> float:
    # A media gap starts at the last packet before it, a moment before the
    # fault that caused it; what counts is that it runs into the fault.
    if event.type is EventType.MEDIA_GAP:
        return event.t_ms + float(event.detail.get("length_ms") or 0.0)
    return event.t_ms


def attribute_faults(
    events: Sequence[Event], window_ms: float = FAULT_EFFECT_WINDOW_MS
) -> list[Event]:
    """Give the effects of network faults their fault's cause (rules above)."""
    windows = fault_windows(events)
    if not windows:
        return list(events)
    out: list[Event] = []
    for event in events:
        if _open_to_attribution(event):
            fault = max(
                (
                    w
                    for w in windows
                    if w.start_ms <= _effect_end(event)
                    and event.t_ms <= w.end_ms + window_ms
                    and w.cause is not None
                ),
                key=lambda w: w.start_ms,
                default=None,
            )
            if fault is not None:
                detail = {
                    **event.detail,
                    "fault": {
                        "fault_id": fault.fault_id,
                        "kind": fault.kind,
                        "t_ms": round(fault.start_ms, 1),
                    },
                }
                event = dataclasses.replace(event, cause=fault.cause, detail=detail)
        out.append(event)
    return out


def attribute_rehandshakes(
    events: Sequence[Event], window_ms: float = CORRELATION_WINDOW_MS
) -> list[Event]:
    """Return the events with rehandshakes attributed to preceding restarts."""
    restarts = [e for e in events if e.type is EventType.ICE_RESTART]
    out: list[Event] = []
    for event in events:
        if event.type is EventType.DTLS_REHANDSHAKE:
            trigger = _latest_restart_before(event, restarts, window_ms)
            if trigger is not None:
                detail = dict(event.detail)
                detail["triggered_by"] = "ice_restart"
                detail["correlated_with"] = {
                    "type": "ice_restart",
                    "t_ms": round(trigger.t_ms, 1),
                    "generation": trigger.detail.get("generation"),
                }
                cause = event.cause or trigger.cause or "ice_restart"
                event = dataclasses.replace(event, cause=cause, detail=detail)
        out.append(event)
    return out


def _latest_restart_before(
    event: Event, restarts: Iterable[Event], window_ms: float
) -> Event | None:
    best: Event | None = None
    for restart in restarts:
        if restart.side is not event.side:
            continue
        if 0 <= event.t_ms - restart.t_ms <= window_ms and (
            best is None or restart.t_ms > best.t_ms
        ):
            best = restart
    return best


def attach_media_gaps(
    events: Sequence[Event], slack_ms: float = GAP_SLACK_MS
) -> list[Event]:
    """Give every restart/rehandshake the longest gap per direction around it."""
    gaps = [e for e in events if e.type is EventType.MEDIA_GAP]
    out: list[Event] = []
    for event in events:
        if event.type in (EventType.ICE_RESTART, EventType.DTLS_REHANDSHAKE):
            start = event.t_ms
            end = start + float(event.detail.get("duration_ms") or 0.0) + slack_ms
            per_direction: dict[str, Any] = {}
            missing: dict[str, int] = {}
            for direction in DIRECTIONS:
                around = [
                    g
                    for g in gaps
                    if g.detail.get("direction") == direction
                    and _overlaps(
                        g.t_ms,
                        g.t_ms + float(g.detail.get("length_ms", 0.0)),
                        start,
                        end,
                    )
                ]
                lengths = [float(g.detail.get("length_ms", 0.0)) for g in around]
                per_direction[direction] = round(max(lengths, default=0.0), 1)
                missing[direction] = sum(
                    int(g.detail.get("packets_missing", 0)) for g in around
                )
            event = dataclasses.replace(
                event,
                detail={
                    **event.detail,
                    "media_gap_ms": per_direction,
                    # sequence numbers skipped across those gaps; the call's
                    # media stats say how many later arrived (delayed) or not
                    "packets_missing": missing,
                },
            )
        out.append(event)
    return out


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 <= b1 and b0 <= a1


#: The agent's own event loop stalling shows up as gaps; the watch records it
#: as a ``note`` with this cause.
AGENT_STALL = "agent_stall"


def attribute_stalls(events: Sequence[Event]) -> list[Event]:
    """A media gap no fault explains, overlapping a stall of the agent's own
    event loop, is the agent's doing: cause ``agent_stall`` (so a loaded test
    machine is not mistaken for a network problem)."""
    stalls = [
        (e.t_ms, e.t_ms + float(e.detail.get("stall_ms", 0.0)))
        for e in events
        if e.type is EventType.NOTE and e.cause == AGENT_STALL
    ]
    if not stalls:
        return list(events)
    out: list[Event] = []
    for event in events:
        if event.type is EventType.MEDIA_GAP and event.cause is None:
            end = event.t_ms + float(event.detail.get("length_ms", 0.0))
            stall = next(
                (s for s in stalls if _overlaps(s[0], s[1], event.t_ms, end)), None
            )
            if stall is not None:
                detail = {**event.detail, "stall_ms": round(stall[1] - stall[0], 1)}
                event = dataclasses.replace(event, cause=AGENT_STALL, detail=detail)
        out.append(event)
    return out


def build_timeline(*sides: Sequence[Event]) -> list[Event]:
    """Merge the sides' events in time order and apply the attributions."""
    merged = sorted((e for side in sides for e in side), key=lambda e: e.t_ms)
    return attach_media_gaps(
        attribute_rehandshakes(attribute_stalls(attribute_faults(share_causes(merged))))
    )
