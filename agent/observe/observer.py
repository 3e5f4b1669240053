"""One observer per peer: turns what the stack reports into timeline events.

The observer implements :class:`agent.stack.peer.PeerListener`. It never asks
the stack for state; it only records what the stack told it, stamped with the
call clock. Three sources feed it:

* state changes of the ICE gatherer, ICE transport, DTLS transport and the
  aggregated connection;
* the wire tap — every non-STUN datagram both ways — parsed by
  :class:`~agent.observe.dtlswire.HandshakeTracker`, so a DTLS handshake that
  starts after the initial one is seen *even if our stack ignores it* (aiortc
  1.16 does ignore a ClientHello on an established association);
* every received RTP packet, analysed per SSRC by
  :class:`~agent.observe.media.MediaAnalyzer`.

ICE restarts and DTLS rehandshakes are *spans*: they start, then complete or
fail. The stack (or the wire tap) opens a span; it becomes an event
when it closes, stamped with its start time. Spans still open when the call ends
close with outcome ``incomplete`` — or ``failed`` for a rehandshake the wire saw
start but our stack never completed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.observe.dtlswire import (
    AlertSeen,
    Direction,
    HandshakeStart,
    HandshakeTracker,
)
from agent.observe.due import DueWindows, discount, not_due_overlap
from agent.observe.events import (
    AssociationInfo,
    ConnectionStateDetail,
    ConnectionStateEvent,
    DtlsRecordDetail,
    DtlsRecordEvent,
    DtlsRehandshakeDetail,
    DtlsRehandshakeEvent,
    DtlsStateEvent,
    Event,
    IceGatheringEvent,
    IceRestartDetail,
    IceRestartEvent,
    IceStateDetail,
    IceStateEvent,
    MediaGapDetail,
    MediaGapEvent,
    NoteDetail,
    NoteEvent,
    PairInfo,
    SelectedPairChangeEvent,
    SelectedPairDetail,
    StateDetail,
)
from agent.observe.media import MediaAnalyzer, MediaGap, MediaStats, until_end
from agent.observe.model import (
    COUNTED,
    Countable,
    EventType,
    Initiator,
    MetricCount,
    Metrics,
    Outcome,
    Side,
    Thresholds,
    count_metric,
)
from agent.stack.ice import SelectedPair, WireDirection
from agent.stack.peer import PeerState

logger = logging.getLogger(__name__)

#: RFC 7983 §7: first byte 20..63 is DTLS.
_DTLS_FIRST_BYTE = range(20, 64)


@dataclass
class MediaSettings:
    gap_threshold_ms: float = 60.0
    jitter_budget_ms: float = 60.0


@dataclass
class Span:
    """An ICE restart or DTLS rehandshake in progress; an event once closed."""

    type: EventType
    t_ms: float
    initiator: Initiator
    cause: str | None
    trigger: str | None = None
    #: ICE restarts: the generation it opens
    generation: int = 0
    #: DTLS rehandshakes: ``stack``, ``wire`` or ``wire+stack``
    detected_by: str = "stack"
    first_message: str | None = None
    wire_started_ms: float | None = None


class PeerObserver:
    """Records one peer's view of a call as a list of events."""

    def __init__(
        self,
        side: Side,
        clock_ms: Callable[[], float],
        media: MediaSettings | None = None,
    ) -> None:
        self.side = side
        self._clock_ms = clock_ms
        self._media_settings = media or MediaSettings()
        self.events: list[Event] = []
        self._handshakes = HandshakeTracker()
        self._analyzers: dict[int, MediaAnalyzer] = {}
        self._open_spans: list[Span] = []
        self.ice_generation = 0
        self._generations_with_pair: set[int] = set()
        self._restart_spans: dict[int, Span] = {}
        self.connected_at_ms: float | None = None
        self.state: PeerState = PeerState.NEW
        self._dtls_established = False
        self._dtls_span: Span | None = None
        #: call-clock time this side's DTLS first reached ``connected``
        self.dtls_connected_at_ms: float | None = None
        #: the last RTP arrival (any SSRC) and the longest time a packet waited
        #: in the kernel before this process read it (the receive loop's stall)
        self._last_rtp_ms: float | None = None
        self.receive_lag_max_ms = 0.0
        #: when media to this side stopped being due (hang-up); see finish()
        self.media_until_ms: float | None = None
        #: when the far end said an SSRC stopped (RTCP BYE)
        self._bye_ms: dict[int, float] = {}
        #: when media to this side was not due (a re-offer without send)
        self.not_due = DueWindows()

    # -- recording helpers ------------------------------------------------
    def now_ms(self) -> float:
        return self._clock_ms()

    def add(self, event: Event) -> Event:
        """Append an event built by the caller (``side`` must be this one's)."""
        self.events.append(event)
        return event

    def note(
        self,
        text: str | None = None,
        *,
        cause: str | None = None,
        t_ms: float | None = None,
        stall_ms: float | None = None,
        fingerprint_sha256: str | None = None,
    ) -> Event:
        return self.add(
            NoteEvent(
                t_ms=self._clock_ms() if t_ms is None else t_ms,
                side=self.side,
                cause=cause,
                detail=NoteDetail(
                    text=text, stall_ms=stall_ms, fingerprint_sha256=fingerprint_sha256
                ),
            )
        )

    def open_span(
        self,
        type_: EventType,
        initiator: Initiator,
        cause: str | None,
        **fields: Any,
    ) -> Span:
        span = Span(type_, self._clock_ms(), initiator, cause, **fields)
        self._open_spans.append(span)
        return span

    def close_span(
        self,
        span: Span,
        outcome: Outcome,
        *,
        pair: SelectedPair | None = None,
        stack_detail: Mapping[str, Any] | None = None,
    ) -> Event:
        """Record ``span`` as an event; ``stack_detail`` is what the stack
        reported about a rehandshake (``before``/``after``/``error``)."""
        if span in self._open_spans:
            self._open_spans.remove(span)
        duration_ms = round(self._clock_ms() - span.t_ms, 1)
        event: Event
        if span.type is EventType.ICE_RESTART:
            event = IceRestartEvent(
                t_ms=span.t_ms,
                side=self.side,
                initiator=span.initiator,
                cause=span.cause,
                detail=IceRestartDetail(
                    outcome=outcome,
                    duration_ms=duration_ms,
                    trigger=span.trigger,
                    generation=span.generation,
                    selected_pair=None
                    if pair is None
                    else PairInfo.from_stack(pair.to_dict()),
                ),
            )
        else:
            extra = stack_detail or {}
            error = extra.get("error")
            event = DtlsRehandshakeEvent(
                t_ms=span.t_ms,
                side=self.side,
                initiator=span.initiator,
                cause=span.cause,
                detail=DtlsRehandshakeDetail(
                    outcome=outcome,
                    duration_ms=duration_ms,
                    trigger=span.trigger,
                    detected_by=span.detected_by,
                    first_message=span.first_message,
                    wire_started_ms=span.wire_started_ms,
                    before=AssociationInfo.from_stack(extra.get("before")),
                    after=AssociationInfo.from_stack(extra.get("after")),
                    error=None if error is None else str(error),
                ),
            )
        return self.add(event)

    def open_spans(self, type_: EventType) -> list[Span]:
        return [s for s in self._open_spans if s.type is type_]

    # -- PeerListener -------------------------------------------------------
    def on_ice_gathering(self, state: str, generation: int) -> None:
        self.add(
            IceGatheringEvent(
                t_ms=self._clock_ms(),
                side=self.side,
                detail=IceStateDetail(state=state, generation=generation),
            )
        )

    def on_ice_state(self, state: str, generation: int) -> None:
        self.add(
            IceStateEvent(
                t_ms=self._clock_ms(),
                side=self.side,
                detail=IceStateDetail(state=state, generation=generation),
            )
        )

    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None:
        self._restart_spans[generation] = self.open_span(
            EventType.ICE_RESTART,
            Initiator(initiator),
            # A far end does not say why it restarted: unknown, not "remote".
            cause or {"step": "manual", "remote": None}.get(trigger, trigger),
            generation=generation,
            trigger=trigger,
        )

    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None:
        span = self._restart_spans.pop(generation, None)
        if span is None:
            return
        if outcome == "rolled_back":
            # Glare: this side's offer was withdrawn in favour of the far end's;
            # no generation came of it, so nothing is counted (a note says so).
            self._open_spans.remove(span)
            self.note(
                f"ICE restart offer (generation {generation}) rolled back (glare)"
            )
            return
        if outcome == "completed":
            self.ice_generation = max(self.ice_generation, generation)
        self.close_span(span, Outcome(outcome), pair=pair)

    def on_dtls_state(self, state: str, at_ms: float | None = None) -> None:
        # ``at_ms``: when the completing flight reached the host (kernel time)
        self.add(
            DtlsStateEvent(
                t_ms=self._clock_ms() if at_ms is None else at_ms,
                side=self.side,
                detail=StateDetail(state=state),
            )
        )
        if state == "connected" and not self._dtls_established:
            self._dtls_established = True
            self.dtls_connected_at_ms = self.events[-1].t_ms
            self._handshakes.mark_established()

    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        wire = next(
            (
                s
                for s in self.open_spans(EventType.DTLS_REHANDSHAKE)
                if s.detected_by == "wire"
            ),
            None,
        )
        if wire is not None and initiator == "remote":
            # The wire tap saw the far end's ClientHello before the stack did.
            wire.cause = cause
            wire.trigger = trigger
            wire.detected_by = "wire+stack"
            self._dtls_span = wire
            return
        self._dtls_span = self.open_span(
            EventType.DTLS_REHANDSHAKE,
            Initiator(initiator),
            cause,
            trigger=trigger,
            detected_by="stack",
        )

    def on_dtls_rehandshake_ended(self, outcome: str, detail: dict[str, Any]) -> None:
        span, self._dtls_span = self._dtls_span, None
        if span is not None:
            self.close_span(span, Outcome(outcome), stack_detail=detail)

    def on_certificate(self, info: dict[str, Any]) -> None:
        # The validity windows are in the report's sides.<side>.certificates;
        # the timeline shows an expired certificate that stays in use.
        if info.get("expired"):
            fingerprint = info.get("fingerprint_sha256")
            self.note(
                "certificate expired; kept in use",
                cause="cert_expiry",
                fingerprint_sha256=None if fingerprint is None else str(fingerprint),
            )

    def on_connection_state(self, state: PeerState) -> None:
        self.state = state
        self.add(
            ConnectionStateEvent(
                t_ms=self._clock_ms(),
                side=self.side,
                detail=ConnectionStateDetail(state=str(state)),
            )
        )
        if state is PeerState.CONNECTED and self.connected_at_ms is None:
            self.connected_at_ms = self._clock_ms()

    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None:
        # The first pair of a generation is its initial selection, not a change.
        initial = generation not in self._generations_with_pair
        self._generations_with_pair.add(generation)
        info = PairInfo.from_stack(pair.to_dict())
        self.add(
            SelectedPairChangeEvent(
                t_ms=self._clock_ms(),
                side=self.side,
                detail=SelectedPairDetail(
                    initial=initial,
                    generation=generation,
                    local=info.local,
                    remote=info.remote,
                    local_type=info.local_type,
                    remote_type=info.remote_type,
                ),
            )
        )

    def on_wire(self, direction: WireDirection, data: bytes) -> None:
        if not data or data[0] not in _DTLS_FIRST_BYTE:
            return
        seen = self._handshakes.feed(Direction(str(direction)), data, self._clock_ms())
        for item in seen:
            if isinstance(item, HandshakeStart):
                self._on_handshake_start(item)
            elif isinstance(item, AlertSeen):
                self.add(
                    DtlsRecordEvent(
                        t_ms=item.t_ms,
                        side=self.side,
                        detail=DtlsRecordDetail(
                            record="alert",
                            direction=str(item.direction),
                            epoch=item.epoch,
                            level=item.level,
                            description=item.description,
                        ),
                    )
                )

    def _on_handshake_start(self, start: HandshakeStart) -> None:
        if start.is_initial:
            return
        # A rehandshake the stack already announced (e.g. our own rotation)
        # has a span; the wire only confirms it started.
        for span in self.open_spans(EventType.DTLS_REHANDSHAKE):
            if span.wire_started_ms is None:
                span.wire_started_ms = round(start.t_ms, 1)
            return
        initiator = (
            Initiator.LOCAL
            if start.direction is Direction.OUTBOUND
            else Initiator.REMOTE
        )
        self._open_spans.append(
            Span(
                EventType.DTLS_REHANDSHAKE,
                start.t_ms,
                initiator,
                None,
                detected_by="wire",
                first_message=str(start.kind),
            )
        )

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        # ``arrival_ms`` is the kernel's receive time: how long the datagram
        # waited for this process is the receive loop's stall, not the network.
        lag_ms = self._clock_ms() - arrival_ms
        if lag_ms > self.receive_lag_max_ms:
            self.receive_lag_max_ms = lag_ms
        if self._last_rtp_ms is not None and arrival_ms < self._last_rtp_ms:
            # Read out of kernel order (two sockets after a restart): keep
            # the analysis monotonic.
            arrival_ms = self._last_rtp_ms
        self._last_rtp_ms = arrival_ms
        analyzer = self._analyzers.get(ssrc)
        if analyzer is None:
            analyzer = self._analyzers[ssrc] = MediaAnalyzer(
                gap_threshold_ms=self._media_settings.gap_threshold_ms,
                jitter_budget_ms=self._media_settings.jitter_budget_ms,
            )
        gap = analyzer.add(seq, timestamp, arrival_ms)
        # A sender pause (DTX, silence) is not an interruption of media.
        if gap is not None and not gap.sender_paused:
            self._add_due_gap(gap, ssrc)

    def on_rtp_bye(self, ssrc: int) -> None:
        # Its media is no longer due: silence after this is no gap.
        self._bye_ms.setdefault(ssrc, self._clock_ms())

    def on_media_direction(self, direction: str) -> None:
        # Our negotiated direction: without receive, the far end does not
        # send to us, so its silence from now on is agreed, not a gap.
        receives = direction in ("sendrecv", "recvonly")
        self.not_due.receiving(receives, self._clock_ms())

    def _add_due_gap(self, gap: MediaGap, ssrc: int) -> None:
        """A gap between arrivals, less any time media was not due in it."""
        overlap = not_due_overlap(gap.start_ms, gap.end_ms, self.not_due.closed)
        if overlap > 0:
            length = gap.length_ms - overlap
            if length < self._media_settings.gap_threshold_ms:
                return
            gap = MediaGap(gap.start_ms, length, gap.packets_missing)
        self._add_gap(gap, ssrc)

    def _add_gap(self, gap: MediaGap, ssrc: int) -> None:
        self.add(
            MediaGapEvent(
                t_ms=gap.start_ms,
                side=self.side,
                detail=MediaGapDetail(
                    direction=f"{self.side.other}_to_{self.side}",
                    length_ms=round(gap.length_ms, 1),
                    packets_missing=gap.packets_missing,
                    ssrc=ssrc,
                    until_end=True if gap.until_end else None,
                ),
            )
        )

    def note_sender_late(self, pauses: list[tuple[float, float]]) -> None:
        """This side's RTP sender paused, busy (``(t_ms, length_ms)`` each: its
        last send before, the time to its next): the far end's gaps then are
        the agent's (cause ``agent_stall``)."""
        for t_ms, length_ms in pauses:
            self.note(
                "the agent's RTP sender sent late",
                cause="agent_stall",
                t_ms=t_ms,
                stall_ms=length_ms,
            )

    # -- results ------------------------------------------------------------
    def finish(self, media_until_ms: float | None = None) -> None:
        """Close the spans still open when the call ends; media to this side
        was due until ``media_until_ms`` (hang-up): silence up to then is a gap
        (module docstring of :mod:`agent.observe.media`)."""
        if media_until_ms is not None and self.media_until_ms is None:
            self.media_until_ms = media_until_ms
            main = self._main_stream()
            if main is not None:
                ssrc = main[0]
                judged = self.media_stats()
                if judged is not None and judged.gaps and judged.gaps[-1].until_end:
                    self._add_gap(judged.gaps[-1], ssrc)
        for span in list(self._open_spans):
            outcome = Outcome.INCOMPLETE
            if span.type is EventType.DTLS_REHANDSHAKE and span.detected_by == "wire":
                # Seen on the wire, never completed by our stack.
                outcome = Outcome.FAILED
            self.close_span(span, outcome)

    def _main_stream(self) -> tuple[int, MediaStats] | None:
        if not self._analyzers:
            return None
        stats = [(ssrc, a.stats()) for ssrc, a in self._analyzers.items()]
        return max(stats, key=lambda item: item[1].packets_received)

    def media_stats(self) -> MediaStats | None:
        """The received stream's stats (the SSRC with the most packets),
        judged against media due until hang-up once :meth:`finish` knows it."""
        main = self._main_stream()
        if main is None:
            return None
        ssrc, stats = main
        threshold = self._media_settings.gap_threshold_ms
        stats = discount(stats, self.not_due.closed, threshold)
        if self.media_until_ms is None:
            return stats
        end = min(self.media_until_ms, self._bye_ms.get(ssrc, self.media_until_ms))
        end = self.not_due.end_of_due(end)
        return until_end(stats, end, threshold, self._last_rtp_ms)

    def metrics(self, thresholds: Mapping[str, Thresholds]) -> Metrics:
        """Counted from the events, and from spans still open (a restart under
        way when the call ended counts: it started)."""
        counted: list[Countable] = [*self.events, *self._open_spans]

        def count(kind: EventType) -> MetricCount:
            key = COUNTED[kind]
            return count_metric(counted, kind, thresholds.get(key, Thresholds()))

        return Metrics(
            dtls_rehandshakes=count(EventType.DTLS_REHANDSHAKE),
            ice_restarts=count(EventType.ICE_RESTART),
            selected_pair_changes=sum(
                1
                for e in self.events
                if isinstance(e, SelectedPairChangeEvent) and not e.detail.initial
            ),
        )
