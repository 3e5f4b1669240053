"""Cause attribution and media-gap attribution over a finished timeline.

Pure functions over lists of typed events (:mod:`agent.observe.events`), so
every rule here is unit-tested without sockets.

Rules (DESIGN.md):

* A network fault (``fault_start`` .. ``fault_end``) gives its cause to the
  effects that begin while it lasts or within ``FAULT_EFFECT_WINDOW_MS`` after
  it ended, on either side: what a fault produces (:func:`is_fault_effect`,
  the one list the scenario's ``all_events_attributed`` check also uses) and
  the ``connected`` state of a recovery; of restarts/rehandshakes only those
  whose cause so far is their trigger (``disconnected``, ``failed``) or
  unknown. Such an event gets ``detail.fault`` (the fault's id, kind and
  start). Chosen causes (a step's ``manual``) are kept. The latest fault
  started before the event wins.

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

import bisect
import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

from agent.observe.events import (
    ConnectionStateEvent,
    CorrelatedWith,
    CountPerDirection,
    DtlsRehandshakeEvent,
    Event,
    FaultEndEvent,
    FaultRef,
    FaultStartEvent,
    GapPerDirection,
    IceRestartEvent,
    MediaGapEvent,
    NoteEvent,
    SelectedPairChangeEvent,
)
from agent.observe.model import DIRECTIONS, EventType, Initiator, Side

#: Default window in which a rehandshake is attributed to a preceding restart.
CORRELATION_WINDOW_MS = 5000.0
#: Media resumes a little after the signalling says "done"; look that far past.
GAP_SLACK_MS = 1500.0


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
            isinstance(event, IceRestartEvent | DtlsRehandshakeEvent)
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
                event = _with_span_detail(
                    event, origin.cause, cause_from=Side(origin.side)
                )
        out.append(event)
    return out


#: Effects of a fault show up after it: consent intervals, ``disconnected_after``.
FAULT_EFFECT_WINDOW_MS = 10000.0

#: What a network fault produces: the event types that must carry a cause
#: (scenario expectation ``all_events_attributed``) and that a fault gives its
#: cause to. Connection states and selected-pair changes only in part, below.
FAULT_EFFECT_TYPES = frozenset(
    {
        EventType.ICE_RESTART,
        EventType.DTLS_REHANDSHAKE,
        EventType.MEDIA_GAP,
        EventType.SELECTED_PAIR_CHANGE,
        EventType.CONNECTION_STATE,
    }
)
#: The connection states a fault leads to (setup and teardown are nobody's).
FAULT_STATES = frozenset({"disconnected", "failed"})


def is_fault_effect(
    kind: str, *, state: object = None, initial: object = False
) -> bool:
    """Whether an event of type ``kind`` is something a fault produces.

    Takes plain values so that both the typed timeline (here) and a saved
    report's JSON (``agent.scenario.expect``) ask the same question.
    """
    if kind not in FAULT_EFFECT_TYPES:
        return False
    if kind == EventType.SELECTED_PAIR_CHANGE:
        return not initial  # a generation's first pair is no change
    if kind == EventType.CONNECTION_STATE:
        return state in FAULT_STATES
    return True


def event_is_fault_effect(event: Event) -> bool:
    if isinstance(event, ConnectionStateEvent):
        return is_fault_effect(event.type, state=event.detail.state)
    if isinstance(event, SelectedPairChangeEvent):
        return is_fault_effect(event.type, initial=event.detail.initial)
    return is_fault_effect(event.type)


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    fault_id: int
    kind: str
    cause: str | None
    start_ms: float
    end_ms: float  # inf while the fault never ended


def fault_windows(events: Sequence[Event]) -> list[FaultWindow]:
    ends = {e.detail.fault_id: e.t_ms for e in events if isinstance(e, FaultEndEvent)}
    return [
        FaultWindow(
            e.detail.fault_id,
            e.detail.fault,
            e.cause,
            e.t_ms,
            ends.get(e.detail.fault_id, float("inf")),
        )
        for e in events
        if isinstance(e, FaultStartEvent)
    ]


def _open_to_attribution(event: Event) -> bool:
    recovered = (
        isinstance(event, ConnectionStateEvent) and event.detail.state == "connected"
    )
    if not (event_is_fault_effect(event) or recovered):
        return False
    # A restart's trigger stands in for its cause until we know better.
    trigger = (
        event.detail.trigger
        if isinstance(event, IceRestartEvent | DtlsRehandshakeEvent)
        else None
    )
    return event.cause in (None, "disconnected", "failed") or event.cause == trigger


def _effect_end(event: Event) -> float:
    # A media gap starts at the last packet before it, a moment before the
    # fault that caused it; what counts is that it runs into the fault.
    if isinstance(event, MediaGapEvent):
        return event.t_ms + event.detail.length_ms
    return event.t_ms


def _with_fault(event: Event, cause: str | None, ref: FaultRef) -> Event:
    if isinstance(event, ConnectionStateEvent):
        return dataclasses.replace(
            event, cause=cause, detail=dataclasses.replace(event.detail, fault=ref)
        )
    if isinstance(event, SelectedPairChangeEvent):
        return dataclasses.replace(
            event, cause=cause, detail=dataclasses.replace(event.detail, fault=ref)
        )
    if isinstance(event, MediaGapEvent):
        return dataclasses.replace(
            event, cause=cause, detail=dataclasses.replace(event.detail, fault=ref)
        )
    if isinstance(event, IceRestartEvent | DtlsRehandshakeEvent):
        return _with_span_detail(event, cause, fault=ref)
    return event


_Span = TypeVar("_Span", IceRestartEvent, DtlsRehandshakeEvent)


def _with_span_detail(
    event: IceRestartEvent | DtlsRehandshakeEvent,
    cause: str | None,
    *,
    fault: FaultRef | None = None,
    cause_from: Side | None = None,
) -> Event:
    # Each branch gets its own type for mypy's check of the replaced fields.
    if isinstance(event, IceRestartEvent):
        return _replace_span(event, cause, fault, cause_from)
    return _replace_span(event, cause, fault, cause_from)


def _replace_span(
    event: _Span, cause: str | None, fault: FaultRef | None, cause_from: Side | None
) -> _Span:
    detail = event.detail
    if fault is not None:
        detail = dataclasses.replace(detail, fault=fault)
    if cause_from is not None:
        detail = dataclasses.replace(detail, cause_from=cause_from)
    return dataclasses.replace(event, cause=cause, detail=detail)


def _with_gaps(
    event: _Span, gaps: GapPerDirection, missing: CountPerDirection
) -> _Span:
    detail = dataclasses.replace(
        event.detail, media_gap_ms=gaps, packets_missing=missing
    )
    return dataclasses.replace(event, detail=detail)


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
                ref = FaultRef(
                    fault_id=fault.fault_id,
                    kind=fault.kind,
                    t_ms=round(fault.start_ms, 1),
                )
                event = _with_fault(event, fault.cause, ref)
        out.append(event)
    return out


def attribute_rehandshakes(
    events: Sequence[Event], window_ms: float = CORRELATION_WINDOW_MS
) -> list[Event]:
    """Return the events with rehandshakes attributed to preceding restarts."""
    restarts = [e for e in events if isinstance(e, IceRestartEvent)]
    out: list[Event] = []
    for event in events:
        if isinstance(event, DtlsRehandshakeEvent):
            trigger = _latest_restart_before(event, restarts, window_ms)
            if trigger is not None:
                detail = dataclasses.replace(
                    event.detail,
                    triggered_by="ice_restart",
                    correlated_with=CorrelatedWith(
                        t_ms=round(trigger.t_ms, 1),
                        generation=trigger.detail.generation,
                    ),
                )
                cause = event.cause or trigger.cause or "ice_restart"
                event = dataclasses.replace(event, cause=cause, detail=detail)
        out.append(event)
    return out


def _latest_restart_before(
    event: Event, restarts: Iterable[IceRestartEvent], window_ms: float
) -> IceRestartEvent | None:
    best: IceRestartEvent | None = None
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
    gaps = [e for e in events if isinstance(e, MediaGapEvent)]
    out: list[Event] = []
    for event in events:
        if isinstance(event, IceRestartEvent | DtlsRehandshakeEvent):
            start = event.t_ms
            end = start + event.detail.duration_ms + slack_ms
            longest: dict[str, float] = {}
            missing: dict[str, int] = {}
            for direction in DIRECTIONS:
                around = [
                    g
                    for g in gaps
                    if g.detail.direction == direction
                    and _overlaps(g.t_ms, g.t_ms + g.detail.length_ms, start, end)
                ]
                lengths = [g.detail.length_ms for g in around]
                longest[direction] = round(max(lengths, default=0.0), 1)
                missing[direction] = sum(g.detail.packets_missing for g in around)
            # Sequence numbers skipped across those gaps; the call's media
            # stats say how many later arrived (delayed) or not.
            gap, count = GapPerDirection(**longest), CountPerDirection(**missing)
            if isinstance(event, IceRestartEvent):
                event = _with_gaps(event, gap, count)
            else:
                event = _with_gaps(event, gap, count)
        out.append(event)
    return out


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 <= b1 and b0 <= a1


#: The agent's own event loop stalling shows up as gaps; the watch records it
#: as a ``note`` with this cause, and so does each RTP sender that sent late.
AGENT_STALL = "agent_stall"
#: The text of the event-loop watch's note: a stall of the whole process.
LOOP_STALL = "the agent's event loop stalled"
#: A gap is the agent's when its own lateness leaves less than this of it
#: unexplained (the default gap threshold: what is left is no gap).
STALL_SLACK_MS = 60.0


def _sender(direction: str) -> str:
    return direction.split("_to_", 1)[0]


def attribute_stalls(
    events: Sequence[Event], slack_ms: float = STALL_SLACK_MS
) -> list[Event]:
    """A media gap that the agent's own lateness explains is the agent's doing:
    cause ``agent_stall``, so a loaded test machine is not mistaken for a
    network problem.

    The lateness is the *sender's*: a ``note`` of cause ``agent_stall`` on the
    side that sends the gap's direction (its RTP sender's late runs), or the
    event loop's own stall (:data:`LOOP_STALL`), which holds up every sender
    in this process (every side with an observer). Arrival times are the
    kernel's, so a receiver that stalled makes no gap. The stalls overlapping
    a gap explain it together (a sender's late run, then the loop stalling
    again) when at most ``slack_ms`` of the gap is left over. That
    attribution wins over a fault window (a stall during an MTU fault that
    dropped nothing is not the MTU's), but a gap the stalls explain only in
    part keeps its fault's cause.
    """
    # Per sender (None: the loop's own stall), the stall spans sorted by
    # start with the longest one, so each gap looks only at the stalls that
    # can reach it: a loaded call has hundreds of stall notes and gaps.
    by_side: dict[str | None, list[tuple[float, float]]] = {}
    for e in events:
        if isinstance(e, NoteEvent) and e.cause == AGENT_STALL:
            side = None if e.detail.text == LOOP_STALL else str(e.side)
            span = (e.t_ms, e.t_ms + (e.detail.stall_ms or 0.0))
            by_side.setdefault(side, []).append(span)
    if not by_side:
        return list(events)
    index = {
        side: (sorted(spans), max(s1 - s0 for s0, s1 in spans))
        for side, spans in by_side.items()
    }
    # Sides whose senders run in this process: those with an observer.
    ours = {str(e.side) for e in events if isinstance(e, ConnectionStateEvent)}
    out: list[Event] = []
    for event in events:
        if isinstance(event, MediaGapEvent) and (
            event.cause is None or event.detail.fault is not None
        ):
            start, length = event.t_ms, event.detail.length_ms
            sender = _sender(event.detail.direction)
            keys = [sender, None] if sender in ours else [sender]
            spans = sorted(
                span
                for key in keys
                if key in index
                for span in _reaching(*index[key], start, start + length)
            )
            covered, late = _union(spans, start, start + length)
            if spans and length - covered <= slack_ms:
                detail = dataclasses.replace(
                    event.detail, stall_ms=round(late, 1), fault=None
                )
                event = dataclasses.replace(event, cause=AGENT_STALL, detail=detail)
        out.append(event)
    return out


def _reaching(
    spans: list[tuple[float, float]], longest: float, start: float, end: float
) -> list[tuple[float, float]]:
    """Of ``spans`` sorted by start, none longer than ``longest``: those that
    overlap ``[start, end]``."""
    low = bisect.bisect_left(spans, (start - longest, -math.inf))
    high = bisect.bisect_right(spans, (end, math.inf))
    return [(s0, s1) for s0, s1 in spans[low:high] if _overlaps(s0, s1, start, end)]


def _union(
    spans: list[tuple[float, float]], start: float, end: float
) -> tuple[float, float]:
    """Of sorted ``spans``: how much of ``[start, end]`` they cover, and the
    longest run of them that overlaps one another (the stall's length)."""
    covered, reach = 0.0, start
    longest, run_start, run_end = 0.0, None, None
    for s0, s1 in spans:
        a, b = max(s0, reach), min(s1, end)
        if b > a:
            covered += b - a
            reach = b
        if run_end is None or s0 > run_end:
            run_start, run_end = s0, s1
        else:
            run_end = max(run_end, s1)
        assert run_start is not None
        longest = max(longest, run_end - run_start)
    return covered, longest


def build_timeline(*sides: Sequence[Event]) -> list[Event]:
    """Merge the sides' events in time order and apply the attributions."""
    merged = sorted((e for side in sides for e in side), key=lambda e: e.t_ms)
    return attach_media_gaps(
        attribute_rehandshakes(attribute_stalls(attribute_faults(share_causes(merged))))
    )
