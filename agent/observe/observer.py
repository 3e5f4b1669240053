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
fail. The stack (or the wire tap) opens a span; it becomes an :class:`Event`
when it closes, stamped with its start time. Spans still open when the call ends
close with outcome ``incomplete`` — or ``failed`` for a rehandshake the wire saw
start but our stack never completed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.observe.dtlswire import (
    AlertSeen,
    Direction,
    HandshakeStart,
    HandshakeTracker,
)
from agent.observe.media import MediaAnalyzer, MediaStats
from agent.observe.model import (
    COUNTED,
    Event,
    EventType,
    Initiator,
    MetricCount,
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
    """An ICE restart or DTLS rehandshake in progress."""

    type: EventType
    t_ms: float
    initiator: Initiator
    cause: str | None
    detail: dict[str, Any] = field(default_factory=dict)


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

    # -- recording helpers ------------------------------------------------
    def record(
        self,
        type_: EventType,
        *,
        initiator: Initiator | None = None,
        cause: str | None = None,
        t_ms: float | None = None,
        **detail: Any,
    ) -> Event:
        event = Event(
            type=type_,
            t_ms=self._clock_ms() if t_ms is None else t_ms,
            side=self.side,
            initiator=initiator,
            cause=cause,
            detail=detail,
        )
        self.events.append(event)
        return event

    def open_span(
        self,
        type_: EventType,
        initiator: Initiator,
        cause: str | None,
        **detail: Any,
    ) -> Span:
        span = Span(type_, self._clock_ms(), initiator, cause, dict(detail))
        self._open_spans.append(span)
        return span

    def close_span(self, span: Span, outcome: Outcome, **detail: Any) -> Event:
        if span in self._open_spans:
            self._open_spans.remove(span)
        span.detail.update(detail)
        span.detail["outcome"] = str(outcome)
        span.detail["duration_ms"] = round(self._clock_ms() - span.t_ms, 1)
        return self.record(
            span.type,
            initiator=span.initiator,
            cause=span.cause,
            t_ms=span.t_ms,
            **span.detail,
        )

    def open_spans(self, type_: EventType) -> list[Span]:
        return [s for s in self._open_spans if s.type is type_]

    # -- PeerListener -------------------------------------------------------
    def on_ice_gathering(self, state: str, generation: int) -> None:
        self.record(EventType.ICE_GATHERING, state=state, generation=generation)

    def on_ice_state(self, state: str, generation: int) -> None:
        self.record(EventType.ICE_STATE, state=state, generation=generation)

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
            self.record(
                EventType.NOTE,
                text=f"ICE restart offer (generation {generation}) rolled back (glare)",
            )
            return
        if outcome == "completed":
            self.ice_generation = max(self.ice_generation, generation)
        self.close_span(
            span,
            Outcome(outcome),
            selected_pair=None if pair is None else pair.to_dict(),
        )

    def on_dtls_state(self, state: str) -> None:
        self.record(EventType.DTLS_STATE, state=state)
        if state == "connected" and not self._dtls_established:
            self._dtls_established = True
            self._handshakes.mark_established()

    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        wire = next(
            (
                s
                for s in self.open_spans(EventType.DTLS_REHANDSHAKE)
                if s.detail.get("detected_by") == "wire"
            ),
            None,
        )
        if wire is not None and initiator == "remote":
            # The wire tap saw the far end's ClientHello before the stack did.
            wire.cause = cause
            wire.detail.update(trigger=trigger, detected_by="wire+stack")
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
            self.close_span(span, Outcome(outcome), **detail)

    def on_certificate(self, info: dict[str, Any]) -> None:
        # The validity windows are in the report's sides.<side>.certificates;
        # the timeline shows an expired certificate that stays in use.
        if info.get("expired"):
            self.record(
                EventType.NOTE,
                cause="cert_expiry",
                text="certificate expired; kept in use",
                fingerprint_sha256=info.get("fingerprint_sha256"),
            )

    def on_connection_state(self, state: PeerState) -> None:
        self.state = state
        self.record(EventType.CONNECTION_STATE, state=str(state))
        if state is PeerState.CONNECTED and self.connected_at_ms is None:
            self.connected_at_ms = self._clock_ms()

    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None:
        # The first pair of a generation is its initial selection, not a change.
        initial = generation not in self._generations_with_pair
        self._generations_with_pair.add(generation)
        self.record(
            EventType.SELECTED_PAIR_CHANGE,
            initial=initial,
            generation=generation,
            **pair.to_dict(),
        )

    def on_wire(self, direction: WireDirection, data: bytes) -> None:
        if not data or data[0] not in _DTLS_FIRST_BYTE:
            return
        seen = self._handshakes.feed(Direction(str(direction)), data, self._clock_ms())
        for item in seen:
            if isinstance(item, HandshakeStart):
                self._on_handshake_start(item)
            elif isinstance(item, AlertSeen):
                self.record(
                    EventType.DTLS_RECORD,
                    t_ms=item.t_ms,
                    record="alert",
                    direction=str(item.direction),
                    epoch=item.epoch,
                    level=item.level,
                    description=item.description,
                )

    def _on_handshake_start(self, start: HandshakeStart) -> None:
        if start.is_initial:
            return
        # A rehandshake the stack already announced (e.g. our own rotation)
        # has a span; the wire only confirms it started.
        for span in self.open_spans(EventType.DTLS_REHANDSHAKE):
            span.detail.setdefault("wire_started_ms", round(start.t_ms, 1))
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
                {"detected_by": "wire", "first_message": start.kind},
            )
        )

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        analyzer = self._analyzers.get(ssrc)
        if analyzer is None:
            analyzer = self._analyzers[ssrc] = MediaAnalyzer(
                gap_threshold_ms=self._media_settings.gap_threshold_ms,
                jitter_budget_ms=self._media_settings.jitter_budget_ms,
            )
        gap = analyzer.add(seq, timestamp, arrival_ms)
        # A sender pause (DTX, silence) is not an interruption of media.
        if gap is not None and not gap.sender_paused:
            self.record(
                EventType.MEDIA_GAP,
                t_ms=gap.start_ms,
                direction=f"{self.side.other}_to_{self.side}",
                length_ms=round(gap.length_ms, 1),
                packets_missing=gap.packets_missing,
                ssrc=ssrc,
            )

    # -- results ------------------------------------------------------------
    def finish(self) -> None:
        """Close the spans still open when the call ends."""
        for span in list(self._open_spans):
            outcome = Outcome.INCOMPLETE
            if (
                span.type is EventType.DTLS_REHANDSHAKE
                and span.detail.get("detected_by") == "wire"
            ):
                # Seen on the wire, never completed by our stack.
                outcome = Outcome.FAILED
            self.close_span(span, outcome)

    def media_stats(self) -> MediaStats | None:
        """The received stream's stats (the SSRC with the most packets)."""
        if not self._analyzers:
            return None
        stats = [a.stats() for a in self._analyzers.values()]
        return max(stats, key=lambda s: s.packets_received)

    def metrics(self, thresholds: dict[str, Thresholds]) -> dict[str, Any]:
        counts: dict[str, Any] = {}
        pending = [
            Event(s.type, s.t_ms, self.side, s.initiator, s.cause)
            for s in self._open_spans
        ]
        for kind, key in COUNTED.items():
            count: MetricCount = count_metric(
                [*self.events, *pending], kind, thresholds.get(key, Thresholds())
            )
            counts[key] = count.to_dict()
        counts["selected_pair_changes"] = sum(
            1
            for e in self.events
            if e.type is EventType.SELECTED_PAIR_CHANGE and not e.detail.get("initial")
        )
        return counts
