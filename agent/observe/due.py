"""When a direction's media was not due: the far end said it stopped sending.

A receiver judges media against what was due (:mod:`agent.observe.media`):
from the first packet until hang-up. The far end can say, mid-call, that it
stops sending: an offer/answer that leaves the direction without send
(``recvonly``/``inactive`` from the sender's side: a hold, RFC 3264 §8.4; a
mute by re-offer). From the moment the receiver applied that description
until one puts send back (``sendrecv``), silence is what was agreed: no gap,
no lost packet, not one-way. :class:`DueWindows` records those intervals on
the call clock; :func:`discount` takes them out of a stream's gaps.

Pure: no I/O, no clock of its own (times are given).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from agent.observe.media import MediaGap, MediaStats

__all__ = ["DueWindows", "discount", "not_due_overlap"]


@dataclass
class DueWindows:
    """The intervals (call clock, ms) when this receiver's media was not due."""

    #: closed ``(start, end)`` intervals, in order
    closed: list[tuple[float, float]] = field(default_factory=list)
    #: start of an interval still open (media not due since then)
    open_since: float | None = None

    def receiving(self, receives: bool, t_ms: float) -> None:
        """The negotiated direction at ``t_ms`` does (not) bring media here."""
        if not receives and self.open_since is None:
            self.open_since = t_ms
        elif receives and self.open_since is not None:
            self.closed.append((self.open_since, t_ms))
            self.open_since = None

    def end_of_due(self, end_ms: float) -> float:
        """When media stopped being due, for a call that ends at ``end_ms``."""
        if self.open_since is None:
            return end_ms
        return min(end_ms, self.open_since)

    def intervals(self) -> list[tuple[float, float | None]]:
        """Every interval, the open one with end ``None`` (for the report)."""
        spans: list[tuple[float, float | None]] = list(self.closed)
        if self.open_since is not None:
            spans.append((self.open_since, None))
        return spans


def not_due_overlap(
    start_ms: float, end_ms: float, windows: list[tuple[float, float]]
) -> float:
    """How much of ``[start_ms, end_ms)`` falls inside closed not-due windows."""
    return sum(
        max(0.0, min(end_ms, w_end) - max(start_ms, w_start))
        for w_start, w_end in windows
    )


def discount(
    stats: MediaStats, windows: list[tuple[float, float]], gap_threshold_ms: float
) -> MediaStats:
    """``stats`` with the not-due time taken out of every gap it overlaps.

    A gap whose due part is below the threshold is dropped; the longest gap
    is recomputed from the rest (the largest spacing below the threshold
    stays the floor).
    """
    if not windows or not stats.gaps:
        return stats
    gaps: list[MediaGap] = []
    changed = False
    for gap in stats.gaps:
        overlap = not_due_overlap(gap.start_ms, gap.end_ms, windows)
        if overlap <= 0:
            gaps.append(gap)
            continue
        changed = True
        due = gap.length_ms - overlap
        if due >= gap_threshold_ms:
            gaps.append(dataclasses.replace(gap, length_ms=due))
    if not changed:
        return stats
    longest = max(
        (g.length_ms for g in gaps if not g.sender_paused),
        default=0.0,
    )
    return dataclasses.replace(
        stats,
        gaps=tuple(gaps),
        gap_count=stats.gap_count - (len(stats.gaps) - len(gaps)),
        max_gap_ms=max(stats.max_spacing_ms, longest),
    )
