"""Media gap, loss and delay analysis from received RTP packets.

Theory of operation
-------------------
One :class:`MediaAnalyzer` watches one RTP stream: one SSRC in one direction.
Demultiplexing by SSRC, and deciding that an SSRC change (a new sender after an
SBC failover, say) starts a new stream, is the caller's business: RTP sequence
numbers and timestamps only mean something within one SSRC (RFC 3550 §3, §8).

The analyzer is fed every received packet, in arrival order, as
``(sequence number, RTP timestamp, arrival time)``. It keeps O(1) state per
stream (a fixed-size window of recently seen sequence numbers, a handful of
counters, at most ``MAX_STORED_GAPS`` gap records and one short list of
"elevated" packets, see *Delayed*), so it can run on every packet of hundreds of
calls. Out of that it derives what a receiver experienced:

Sequence numbers (RFC 3550 §A.1)
    16-bit sequence numbers are extended with a wrap count, as in ``update_seq``
    of RFC 3550 §A.1: a packet up to ``max_dropout`` ahead of the highest one
    seen is in order (any skipped numbers are missing), up to ``max_misorder``
    behind it is a reordered packet or a duplicate. A jump further than that is
    "very large": as in §A.1 the packet is set aside (``packets_discarded``)
    unless the very next arrival is its successor, in which case the sender has
    restarted its numbering; the analyzer then closes the current segment of the
    sequence space (keeping its counts) and opens a new one with both packets.
    The defaults are §A.1's 3000 and 100; 3000 is 60 s of 20 ms audio but only
    3 s of 1000 packet/s video, so a video stream should pass a larger
    ``max_dropout``. There is no §A.1 probation: the caller only feeds packets
    that passed SRTP authentication, so every packet is genuine.

Expected, received, lost (RFC 3550 §A.3)
    ``packets_expected`` is highest - lowest extended sequence number + 1 (summed
    over segments); ``packets_received`` counts unique packets, so a late packet
    that fills a hole stops being lost, and a duplicate counts only in
    ``packets_duplicated``. ``packets_lost`` = expected - received, never
    negative (unlike RFC 3550's cumulative-lost field, because duplicates are not
    counted as received here).

Jitter (RFC 3550 §6.4.1)
    The interarrival jitter estimator ``J += (|D| - J) / 16`` where ``D`` is the
    difference between consecutive arrivals' spacing and their RTP timestamps'
    spacing, computed on consecutive *arrivals* (not sequence order), in
    timestamp units, reported in ms. 32-bit timestamps are unwrapped against the
    previous packet's, so a wrap is invisible.

Delayed (the jitter budget)
    The *transit* of a packet is ``arrival_ms - timestamp / clock_rate``: one-way
    delay plus an unknown constant offset between the two clocks. The smallest
    transit seen is the best-case path; a packet's *delay* is its transit minus
    that floor, and a packet whose delay exceeds ``jitter_budget_ms`` is
    *delayed*: a receiver with a jitter buffer of that depth would have played it
    late (concealed it). A packet that never arrives is *lost*. So a DTLS
    rehandshake that holds media for 300 ms and then releases it in a burst
    shows a 300 ms gap with the held packets delayed and none lost, while an ICE
    restart over a dead path shows a gap with the packets of that time lost.

    The floor is not a plain running minimum, for two field reasons:

    * *Clock skew.* Sender and receiver clocks drift apart by up to ~100 ppm
      (6 ms per minute), which moves every transit slowly. The floor may rise by
      at most ``MAX_CLOCK_SKEW_PPM`` of elapsed arrival time (a "leaky minimum"),
      so a soak call's drift never turns into false delay, while a stall of a few
      hundred milliseconds moves it by well under a millisecond.
    * *Steps.* When transit steps up and stays up — a sender that paused without
      advancing its RTP timestamps (RFC 3550 §5.1 says it should advance them;
      some relays and SBC splices do not), or a new path with a longer one-way
      delay — every later packet would look delayed forever. A real adaptive
      jitter buffer re-anchors after such a step, and so does the analyzer:
      packets above the budget are held as an *elevated run*. If an on-time
      packet arrives (transit back near the floor, the catch-up after a stall),
      every packet of the run is delayed. If the run lasts ``baseline_reset_ms``
      of arrival time without one, the floor moves up to the run's minimum, and
      only the run's packets above the budget over *that* are delayed. While a
      run is open, :meth:`MediaAnalyzer.stats` counts its packets as delayed
      (provisionally: a later re-anchor can lower the count).

Gaps
    A gap is the arrival-time distance between two consecutive arrivals of new
    (non-duplicate) packets that is at least ``gap_threshold_ms``. It records
    where it started, how long it was, and how many sequence numbers were skipped
    across it (they may still arrive late, then they count as delayed, not lost).
    A gap is ``sender_paused`` when the sender said it paused: the sequence
    continues without a hole, the RTP timestamp advanced by at least the
    threshold, and the network added less than the threshold on top. That is
    discontinuous transmission (RFC 3551 §4.1 silence suppression, Opus DTX,
    RFC 7587 §3.1.3), not an interruption: such gaps are recorded but do not
    count toward ``max_gap_ms``, and their packets are not lost or delayed
    (their transit is unchanged). A pause with frozen timestamps cannot be told
    apart on the wire from a network stall without catch-up, so it is a gap, and
    the re-anchoring above keeps it from becoming delay.

Media that was due (silence up to hang-up)
    Gaps between arrivals cannot see an outage that lasts until the call ends:
    there is no next packet to close it. So a stream is also judged against
    when media was *due*: from its first packet, every packet time (learnt
    from the RTP clock: the timestamp step of consecutive sequence numbers)
    until the direction's media ended — hang-up, or when the sender said it
    stopped. :func:`until_end` adds the silence from the last arrival to that
    end: a gap (``until_end``) when it reaches the threshold, and the packets
    due in it as expected and lost. The stream's :attr:`MediaStats.state` is
    then ``stopped`` (since the last arrival), else ``flowing`` (since the end
    of the last gap). Arrival times are the kernel's (see
    :mod:`agent.stack.icenet`), so a stalled receiver makes no gap here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

RTP_SEQ_MOD = 1 << 16
RTP_TS_MOD = 1 << 32

#: RFC 3550 §A.1: largest forward jump that is still loss, not a restart.
MAX_DROPOUT = 3000
#: RFC 3550 §A.1: largest backward step that is still reordering.
MAX_MISORDER = 100
#: Gap records kept per stream; further gaps are only counted (``gap_count``).
MAX_STORED_GAPS = 1000
#: Upper bound on sender/receiver clock skew the delay floor follows (1000 ppm
#: is ten times a typical crystal's tolerance).
MAX_CLOCK_SKEW_PPM = 1000.0
#: Elevated packets held before the floor is re-anchored regardless of time
#: (bounds memory for very high packet rates).
MAX_ELEVATED_RUN = 8192


@dataclass(frozen=True)
class MediaGap:
    """An interval with no new packet arriving."""

    #: arrival time of the last packet before the gap (call clock)
    start_ms: float
    #: arrival-time distance to the next new packet
    length_ms: float
    #: sequence numbers skipped across the gap (may later arrive: then delayed)
    packets_missing: int
    #: the sender paused (DTX/silence suppression), not the network
    sender_paused: bool = False
    #: silence from the last arrival until media stopped being due (hang-up)
    until_end: bool = False

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.length_ms


@dataclass(frozen=True)
class MediaStats:
    """A snapshot of one stream's reception; see the module docstring."""

    #: unique packets (duplicates and discarded packets not counted)
    packets_received: int
    #: highest - lowest extended sequence number + 1, summed over segments
    packets_expected: int
    #: never arrived: expected - received, >= 0
    packets_lost: int
    #: arrived, but later than the jitter budget allows
    packets_delayed: int
    packets_duplicated: int
    #: arrived after a packet with a higher sequence number
    packets_reordered: int
    #: set aside as a "very large jump" (RFC 3550 §A.1) and never confirmed
    packets_discarded: int
    #: largest inter-arrival distance not explained by a sender pause
    max_gap_ms: float
    #: the first ``MAX_STORED_GAPS`` gaps >= the threshold, in order
    gaps: tuple[MediaGap, ...]
    #: all gaps >= the threshold, stored or not
    gap_count: int
    #: RFC 3550 §6.4.1 interarrival jitter estimate
    jitter_ms: float
    #: arrival of the first and of the last new (non-duplicate) packet
    first_arrival_ms: float | None
    last_arrival_ms: float | None
    #: largest inter-arrival distance below the gap threshold
    max_spacing_ms: float = 0.0
    #: packet time learnt from the RTP clock (None until two in a row arrived)
    packet_ms: float | None = None
    #: ``flowing`` or ``stopped`` (at the end of the due window), since when
    state: str = "flowing"
    state_since_ms: float | None = None


#: Packet time assumed when the stream never showed two packets in a row.
DEFAULT_PACKET_MS = 20.0


def until_end(
    stats: MediaStats,
    end_ms: float,
    gap_threshold_ms: float,
    last_arrival_ms: float | None = None,
) -> MediaStats:
    """``stats`` judged against media due until ``end_ms`` (module docstring).

    ``last_arrival_ms`` is the direction's last arrival when it is later than
    this stream's (a new SSRC took over after a failover: the old one's
    silence is no gap). The silence counts as a gap once it reaches
    ``gap_threshold_ms``; the packets due in it are expected and lost.
    """
    last = stats.last_arrival_ms
    if last is None:
        return stats
    if last_arrival_ms is not None:
        last = max(last, last_arrival_ms)
    silence = end_ms - last
    if silence < gap_threshold_ms:
        since = max(
            (g.end_ms for g in stats.gaps if not g.sender_paused),
            default=stats.first_arrival_ms,
        )
        return dataclasses.replace(stats, state="flowing", state_since_ms=since)
    packet_ms = stats.packet_ms or DEFAULT_PACKET_MS
    # Packets due after the last arrival, up to the end of the window.
    due = int(silence // packet_ms)
    gap = MediaGap(last, silence, due, until_end=True)
    gaps = (*stats.gaps, gap) if len(stats.gaps) < MAX_STORED_GAPS else stats.gaps
    return dataclasses.replace(
        stats,
        packets_expected=stats.packets_expected + due,
        packets_lost=stats.packets_lost + due,
        max_gap_ms=max(stats.max_gap_ms, silence),
        gaps=gaps,
        gap_count=stats.gap_count + 1,
        state="stopped",
        state_since_ms=last,
    )


#: the leaky floor's rise per ms of arrival time
_SKEW_PER_MS = MAX_CLOCK_SKEW_PPM * 1e-6


class MediaAnalyzer:
    """Streaming reception analysis of one RTP stream (one SSRC, one direction)."""

    def __init__(
        self,
        *,
        clock_rate: int = 48000,
        gap_threshold_ms: float = 60.0,
        jitter_budget_ms: float = 60.0,
        max_dropout: int = MAX_DROPOUT,
        max_misorder: int = MAX_MISORDER,
        baseline_reset_ms: float = 1000.0,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        if gap_threshold_ms <= 0 or jitter_budget_ms <= 0 or baseline_reset_ms <= 0:
            raise ValueError("thresholds must be positive")
        # Forward and backward windows must not overlap in the 16-bit space.
        if max_dropout <= 0 or max_misorder <= 0:
            raise ValueError("max_dropout and max_misorder must be positive")
        if max_dropout + max_misorder >= RTP_SEQ_MOD // 2:
            raise ValueError("max_dropout + max_misorder must be below 32768")
        self._clock_rate = clock_rate
        self._gap_threshold_ms = gap_threshold_ms
        self._jitter_budget_ms = jitter_budget_ms
        self._max_dropout = max_dropout
        self._max_misorder = max_misorder
        self._baseline_reset_ms = baseline_reset_ms
        self._ms_per_tick = 1000.0 / clock_rate

        # Received-sequence window: slot ``ext & mask`` holds the extended
        # sequence number last received there. It only has to reach
        # ``max_misorder`` back; anything older is outside the reorder window.
        size = 1
        while size <= max_misorder:
            size <<= 1
        self._window_mask = size - 1
        self._window: list[int] = [-1] * size

        # Sequence-space segments (a new one after a confirmed restart).
        self._started = False
        self._base_ext = 0
        self._max_ext = 0
        self._closed_expected = 0
        self._received = 0
        self._segment_received = 0
        self._bad_seq: int | None = None
        self._stray: tuple[int, int, float] | None = None

        # Timestamps, unwrapped against the previous accepted packet.
        self._ts_ref = 0
        self._max_ts_ext = 0

        # Arrival order.
        self._last_arrival_ms: float | None = None
        self._first_arrival_ms: float | None = None
        self._prev_arrival_ms: float | None = None
        self._prev_ts_ext: int | None = None

        # Delay floor and the open elevated run.
        self._floor: float | None = None
        self._floor_at_ms = 0.0
        self._elevated: list[float] = []
        self._elevated_since_ms = 0.0
        self._delayed = 0

        self._jitter_ticks = 0.0
        #: RTP timestamp step between consecutive sequence numbers
        self._packet_ticks: int | None = None
        self._duplicated = 0
        self._reordered = 0
        self._discarded = 0
        self._max_gap_ms = 0.0
        self._max_spacing_ms = 0.0
        self._gaps: list[MediaGap] = []
        self._gap_count = 0

    def add(self, seq: int, timestamp: int, arrival_ms: float) -> MediaGap | None:
        """Account one received packet; return the gap it closed, if any.

        Feed packets in arrival order, with ``arrival_ms`` from a monotonic
        call clock: an arrival earlier than the previous one raises
        ``ValueError``, as does a field outside its RTP range. The returned gap
        may be a sender pause (``sender_paused``); callers reporting media
        interruptions should skip those.
        """
        if not 0 <= seq < RTP_SEQ_MOD:
            raise ValueError(f"sequence number out of range: {seq}")
        if not 0 <= timestamp < RTP_TS_MOD:
            raise ValueError(f"RTP timestamp out of range: {timestamp}")
        if self._last_arrival_ms is not None and arrival_ms < self._last_arrival_ms:
            raise ValueError("arrival_ms must not decrease")
        self._last_arrival_ms = arrival_ms

        if not self._started:
            self._open_segment(seq, timestamp)
            return self._accept(self._max_ext, timestamp, arrival_ms)

        # The shortest signed distance from the highest sequence number so
        # far, mod 2^16 (written out: this runs per packet).
        step = (seq - self._max_ext) % RTP_SEQ_MOD
        if step >= RTP_SEQ_MOD // 2:
            step -= RTP_SEQ_MOD
        ext = self._max_ext + step
        if -self._max_misorder <= step <= self._max_dropout:
            self._bad_seq = None
            self._stray = None
            return self._accept(ext, timestamp, arrival_ms)

        # RFC 3550 §A.1 "very large jump": a restart only if confirmed by the
        # next arrival being its successor; otherwise a stray to set aside.
        if seq == self._bad_seq and self._stray is not None:
            stray_seq, stray_ts, stray_arrival = self._stray
            self._bad_seq = None
            self._stray = None
            self._discarded -= 1
            self._close_segment()
            self._open_segment(stray_seq, stray_ts)
            stray_gap = self._accept(self._max_ext, stray_ts, stray_arrival)
            gap = self._accept(self._max_ext + 1, timestamp, arrival_ms)
            return gap if gap is not None else stray_gap
        self._bad_seq = (seq + 1) % RTP_SEQ_MOD
        self._stray = (seq, timestamp, arrival_ms)
        self._discarded += 1
        return None

    def stats(self) -> MediaStats:
        expected = self._closed_expected
        if self._started:
            expected += self._max_ext - self._base_ext + 1
        return MediaStats(
            packets_received=self._received,
            packets_expected=expected,
            packets_lost=max(0, expected - self._received),
            # An open elevated run counts as delayed until it is resolved.
            packets_delayed=self._delayed + len(self._elevated),
            packets_duplicated=self._duplicated,
            packets_reordered=self._reordered,
            packets_discarded=self._discarded,
            max_gap_ms=self._max_gap_ms,
            gaps=tuple(self._gaps),
            gap_count=self._gap_count,
            jitter_ms=self._jitter_ticks * self._ms_per_tick,
            first_arrival_ms=self._first_arrival_ms,
            last_arrival_ms=self._prev_arrival_ms,
            max_spacing_ms=self._max_spacing_ms,
            packet_ms=None
            if self._packet_ticks is None
            else self._packet_ticks * self._ms_per_tick,
        )

    # -- sequence space -----------------------------------------------------

    def _open_segment(self, seq: int, timestamp: int) -> None:
        # Start one cycle up so a reordered packet from before the first one
        # never gets a negative extended number.
        self._started = True
        self._base_ext = self._max_ext = seq + RTP_SEQ_MOD
        self._window = [-1] * len(self._window)
        self._segment_received = 0
        self._ts_ref = timestamp + RTP_TS_MOD
        self._max_ts_ext = self._ts_ref
        # A restarted sender has a new timestamp origin: transit and jitter
        # history do not carry over.
        self._prev_ts_ext = None
        self._resolve_elevated_as_delayed()
        self._floor = None

    def _close_segment(self) -> None:
        self._closed_expected += self._max_ext - self._base_ext + 1

    def _accept(self, ext: int, timestamp: int, arrival_ms: float) -> MediaGap | None:
        slot = ext & self._window_mask
        if self._window[slot] == ext:
            self._duplicated += 1
            return None
        self._window[slot] = ext
        self._received += 1
        self._segment_received += 1

        # The shortest signed distance from the last timestamp, mod 2^32.
        delta = (timestamp - self._ts_ref) % RTP_TS_MOD
        if delta >= RTP_TS_MOD // 2:
            delta -= RTP_TS_MOD
        ts_ext = self._ts_ref + delta
        self._ts_ref = ts_ext

        missing = 0
        # RTP time the sender says passed since the highest packet so far; only
        # meaningful for a packet that extends the sequence.
        sender_advance_ms: float | None = None
        if self._segment_received == 1:
            pass  # the segment's first packet: nothing to compare with
        elif ext > self._max_ext:
            missing = ext - self._max_ext - 1
            sender_advance_ms = (ts_ext - self._max_ts_ext) * self._ms_per_tick
            if missing == 0 and ts_ext > self._max_ts_ext:
                # The packet time, from the sender's own RTP clock (the
                # smallest step: a DTX pause is a longer one).
                step = ts_ext - self._max_ts_ext
                if self._packet_ticks is None or step < self._packet_ticks:
                    self._packet_ticks = step
            self._max_ext = ext
            self._max_ts_ext = ts_ext
        else:
            self._reordered += 1
            self._base_ext = min(self._base_ext, ext)

        gap = self._track_arrival(ts_ext, arrival_ms, missing, sender_advance_ms)
        self._track_delay(arrival_ms - ts_ext * self._ms_per_tick, arrival_ms)
        return gap

    # -- arrivals: gaps and jitter ------------------------------------------

    def _track_arrival(
        self,
        ts_ext: int,
        arrival_ms: float,
        missing: int,
        sender_advance_ms: float | None,
    ) -> MediaGap | None:
        prev_arrival = self._prev_arrival_ms
        prev_ts = self._prev_ts_ext
        self._prev_arrival_ms = arrival_ms
        self._prev_ts_ext = ts_ext
        if prev_arrival is None:
            self._first_arrival_ms = arrival_ms
            return None

        if prev_ts is not None:
            # RFC 3550 §6.4.1, in timestamp units.
            spacing = (arrival_ms - prev_arrival) / self._ms_per_tick
            d = spacing - (ts_ext - prev_ts)
            self._jitter_ticks += (abs(d) - self._jitter_ticks) / 16.0

        length = arrival_ms - prev_arrival
        threshold = self._gap_threshold_ms
        paused = (
            missing == 0
            and sender_advance_ms is not None
            and sender_advance_ms >= threshold
            and length - sender_advance_ms < threshold
        )
        if not paused and length > self._max_gap_ms:
            self._max_gap_ms = length
        if length < threshold:
            if length > self._max_spacing_ms:
                self._max_spacing_ms = length
            return None
        gap = MediaGap(prev_arrival, length, missing, paused)
        self._gap_count += 1
        if len(self._gaps) < MAX_STORED_GAPS:
            self._gaps.append(gap)
        return gap

    # -- delay against the jitter budget ------------------------------------

    def _track_delay(self, transit_ms: float, arrival_ms: float) -> None:
        if self._floor is None:
            self._floor = transit_ms
            self._floor_at_ms = arrival_ms
            return
        # Leaky minimum: follow clock skew upward, new lows immediately.
        floor = self._floor + (arrival_ms - self._floor_at_ms) * _SKEW_PER_MS
        if transit_ms < floor:
            floor = transit_ms
        self._floor = floor
        self._floor_at_ms = arrival_ms

        if transit_ms - floor <= self._jitter_budget_ms:
            # Back near the floor: whatever was elevated was a stall that
            # caught up, so it was late (tested first: this runs per packet).
            if self._elevated:
                self._resolve_elevated_as_delayed()
            return

        if not self._elevated:
            self._elevated_since_ms = arrival_ms
        self._elevated.append(transit_ms)
        if (
            arrival_ms - self._elevated_since_ms >= self._baseline_reset_ms
            or len(self._elevated) >= MAX_ELEVATED_RUN
        ):
            # Sustained step: re-anchor, as an adaptive jitter buffer would.
            new_floor = min(self._elevated)
            budget = self._jitter_budget_ms
            self._delayed += sum(1 for t in self._elevated if t - new_floor > budget)
            self._elevated.clear()
            self._floor = new_floor

    def _resolve_elevated_as_delayed(self) -> None:
        self._delayed += len(self._elevated)
        self._elevated.clear()
