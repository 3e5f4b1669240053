"""MediaAnalyzer against synthetic RTP arrival sequences.

The streams are 20 ms Opus at 48 kHz (timestamp +960 per packet, 50 packets/s),
the shape of every test call's audio. Each scenario builds its arrivals from
"sent at" times plus what the network did to them, so the expected numbers
follow from the construction.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.observe.events import to_json
from agent.observe.media import (
    MAX_STORED_GAPS,
    MediaAnalyzer,
    MediaGap,
    MediaStats,
)
from agent.report.entries import MediaEntry

PTIME_MS = 20.0
TICKS = 960  # 20 ms at 48 kHz
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32

Packet = tuple[int, int, float]  # seq, timestamp, arrival_ms


def opus(
    count: int,
    *,
    first_seq: int = 1000,
    first_ts: int = 50_000,
    t0_ms: float = 0.0,
    transit_ms: float = 40.0,
) -> list[tuple[int, int, float]]:
    """Packets as sent: (seq, timestamp, send time) with a fixed one-way delay.

    The third element is the arrival time on an unimpaired path.
    """
    return [
        (
            (first_seq + i) % SEQ_MOD,
            (first_ts + i * TICKS) % TS_MOD,
            t0_ms + i * PTIME_MS + transit_ms,
        )
        for i in range(count)
    ]


def feed(analyzer: MediaAnalyzer, packets: Iterable[Packet]) -> list[MediaGap]:
    gaps = []
    for seq, ts, arrival in packets:
        gap = analyzer.add(seq, ts, arrival)
        if gap is not None:
            gaps.append(gap)
    return gaps


def run(
    packets: Iterable[Packet], **kwargs: float
) -> tuple[MediaStats, list[MediaGap]]:
    analyzer = MediaAnalyzer(**kwargs)  # type: ignore[arg-type]
    gaps = feed(analyzer, packets)
    return analyzer.stats(), gaps


# -- the clean baseline ------------------------------------------------------


def test_steady_stream_has_no_loss_delay_gap_or_jitter() -> None:
    stats, gaps = run(opus(500))

    assert gaps == []
    assert stats.packets_received == stats.packets_expected == 500
    assert stats.packets_lost == 0
    assert stats.packets_delayed == 0
    assert stats.packets_duplicated == stats.packets_reordered == 0
    assert stats.max_gap_ms == pytest.approx(PTIME_MS)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-9)
    assert stats.first_arrival_ms == pytest.approx(40.0)
    assert stats.last_arrival_ms == pytest.approx(40.0 + 499 * PTIME_MS)


def test_empty_analyzer_reports_nothing() -> None:
    stats = MediaAnalyzer().stats()

    assert stats.packets_expected == stats.packets_received == 0
    assert stats.first_arrival_ms is None
    assert stats.last_arrival_ms is None
    assert stats.max_gap_ms == 0.0


# -- the two shapes the metric contract cares about ---------------------------


def stall_then_burst(stall_ms: float, burst_spacing_ms: float = 0.1) -> list[Packet]:
    """A DTLS-rehandshake-like hold: packets sent during ``stall_ms`` are queued
    and delivered back to back when the path resumes; nothing is dropped."""
    sent = opus(300)
    stall_start = sent[100][2]  # arrival time the 101st packet would have had
    stall_end = stall_start + stall_ms
    out: list[Packet] = []
    held = 0
    for seq, ts, arrival in sent:
        if stall_start <= arrival < stall_end:
            out.append((seq, ts, stall_end + held * burst_spacing_ms))
            held += 1
        else:
            # the queue drains before newer packets get through
            after_burst = out[-1][2] + burst_spacing_ms if out else arrival
            out.append((seq, ts, max(arrival, after_burst)))
    return out


def test_rehandshake_stall_is_a_gap_with_delayed_packets_not_lost() -> None:
    packets = stall_then_burst(300.0)
    stats, gaps = run(packets, jitter_budget_ms=60.0)

    # 15 packets were held; the i-th arrives (300 - 20 i + 0.1 i) ms late, which
    # is over the 60 ms budget for i = 0..12.
    expected_delayed = sum(1 for i in range(15) if 300 - 19.9 * i > 60)
    assert expected_delayed == 13
    assert stats.packets_lost == 0
    assert stats.packets_received == stats.packets_expected == 300
    assert stats.packets_delayed == expected_delayed
    assert len(gaps) == 1
    assert gaps[0].start_ms == pytest.approx(packets[99][2])
    assert gaps[0].length_ms == pytest.approx(320.0)
    assert gaps[0].packets_missing == 0
    assert not gaps[0].sender_paused
    assert stats.max_gap_ms == pytest.approx(320.0)


def test_bigger_jitter_budget_absorbs_more_of_the_stall() -> None:
    stats, _ = run(stall_then_burst(300.0), jitter_budget_ms=200.0)

    assert stats.packets_delayed == sum(1 for i in range(15) if 300 - 19.9 * i > 200)
    assert stats.packets_lost == 0


def test_ice_restart_blackhole_is_a_gap_with_lost_packets() -> None:
    sent = opus(300)
    # 2 s dead path: the 100 packets sent in it never arrive.
    packets = sent[:100] + sent[200:]
    stats, gaps = run(packets)

    assert stats.packets_lost == 100
    assert stats.packets_delayed == 0
    assert stats.packets_expected == 300
    assert stats.packets_received == 200
    assert len(gaps) == 1
    assert gaps[0].length_ms == pytest.approx(2020.0)
    assert gaps[0].packets_missing == 100
    assert stats.max_gap_ms == pytest.approx(2020.0)


def test_add_returns_the_gap_on_the_packet_that_closes_it() -> None:
    sent = opus(10)
    analyzer = MediaAnalyzer(gap_threshold_ms=60.0)
    results = [analyzer.add(*p) for p in sent[:5] + sent[8:]]

    # 3 packets missing: 80 ms between arrivals, closed by the 6th add().
    assert results[:5] == [None] * 5
    assert results[5] == MediaGap(sent[4][2], 80.0, 3, False)
    assert results[6:] == [None]


def test_gap_below_threshold_is_not_a_gap_but_counts_toward_max() -> None:
    sent = opus(10)
    stats, gaps = run(sent[:5] + sent[6:], gap_threshold_ms=60.0)

    assert gaps == []
    assert stats.gaps == ()
    assert stats.max_gap_ms == pytest.approx(2 * PTIME_MS)
    assert stats.packets_lost == 1


# -- sequence and timestamp arithmetic ----------------------------------------


def test_sequence_wrap_is_not_loss() -> None:
    stats, gaps = run(opus(200, first_seq=65_500))

    assert stats.packets_expected == stats.packets_received == 200
    assert stats.packets_lost == 0
    assert gaps == []


def test_loss_across_sequence_wrap_is_counted_exactly() -> None:
    sent = opus(200, first_seq=65_500)
    dropped = {65_534, 65_535, 0, 1}
    packets = [p for p in sent if p[0] not in dropped]
    stats, gaps = run(packets)

    assert stats.packets_expected == 200
    assert stats.packets_lost == 4
    assert [g.packets_missing for g in gaps] == [4]


def test_timestamp_wrap_is_not_delay_or_jitter() -> None:
    stats, _ = run(opus(200, first_ts=TS_MOD - 50 * TICKS))

    assert stats.packets_delayed == 0
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert stats.max_gap_ms == pytest.approx(PTIME_MS)


def test_jitter_follows_rfc3550_estimator() -> None:
    # Arrivals alternate 30 ms / 10 ms apart for a 20 ms ptime: |D| = 10 ms on
    # every packet, so J_n = 10 * (1 - (15/16)^n) after n differences.
    sent = opus(41)
    packets = [
        (seq, ts, arrival + (10.0 if i % 2 else 0.0))
        for i, (seq, ts, arrival) in enumerate(sent)
    ]
    stats, _ = run(packets)

    assert stats.jitter_ms == pytest.approx(10.0 * (1 - (15 / 16) ** 40))


# -- reordering and duplicates ------------------------------------------------


def test_reordered_pairs_are_not_lost_or_delayed() -> None:
    sent = opus(100)
    packets = list(sent)
    for i in range(10, 90, 10):
        # swap the arrival order of packets i and i+1, 1 ms apart
        a, b = packets[i], packets[i + 1]
        packets[i] = (b[0], b[1], a[2])
        packets[i + 1] = (a[0], a[1], a[2] + 1.0)
    stats, _ = run(packets)

    assert stats.packets_reordered == 8
    assert stats.packets_lost == 0
    assert stats.packets_delayed == 0
    assert stats.packets_received == stats.packets_expected == 100


def test_late_packet_fills_its_hole_and_counts_as_delayed() -> None:
    sent = opus(100)
    late = sent[50]
    packets = [p for p in sent if p is not late]
    # arrives 500 ms after it should have, after 25 later packets
    packets.insert(75, (late[0], late[1], late[2] + 500.0))
    stats, _ = run(packets)

    assert stats.packets_lost == 0
    assert stats.packets_reordered == 1
    assert stats.packets_delayed == 1
    assert stats.packets_received == stats.packets_expected == 100


def test_hole_is_lost_until_the_late_packet_arrives() -> None:
    sent = opus(100)
    analyzer = MediaAnalyzer()
    feed(analyzer, sent[:50] + sent[51:60])
    assert analyzer.stats().packets_lost == 1

    feed(analyzer, [(sent[50][0], sent[50][1], sent[59][2] + 1.0)])
    assert analyzer.stats().packets_lost == 0


def test_packet_before_the_first_one_extends_the_expected_range() -> None:
    sent = opus(10)
    packets = [sent[1], (sent[0][0], sent[0][1], sent[1][2] + 1.0), *sent[2:]]
    stats, _ = run(packets)

    assert stats.packets_expected == stats.packets_received == 10
    assert stats.packets_reordered == 1


def test_duplicates_are_counted_once() -> None:
    sent = opus(100)
    packets: list[Packet] = []
    for i, p in enumerate(sent):
        packets.append(p)
        if i % 10 == 0:
            packets.append((p[0], p[1], p[2] + 0.5))
    stats, _ = run(packets)

    assert stats.packets_duplicated == 10
    assert stats.packets_received == stats.packets_expected == 100
    assert stats.packets_lost == 0
    assert stats.packets_delayed == 0


def test_duplicates_do_not_close_a_gap() -> None:
    sent = opus(200)
    last = sent[49]
    # during a 2 s outage only a copy of the last packet arrives, halfway
    packets = [*sent[:50], (last[0], last[1], last[2] + 1000.0), *sent[150:]]
    stats, gaps = run(packets)

    assert stats.packets_duplicated == 1
    assert stats.packets_lost == 100
    assert [g.length_ms for g in gaps] == [pytest.approx(2020.0)]
    assert [g.packets_missing for g in gaps] == [100]


# -- sender pauses -------------------------------------------------------------


def dtx_stream() -> list[Packet]:
    """20 ms packets, then DTX: one packet per 400 ms with the timestamp
    advancing by 400 ms and the sequence number by one (RFC 7587 §3.1.3)."""
    packets: list[Packet] = []
    seq, ts, t = 1000, 50_000, 40.0
    for i in range(60):
        step_ms = 400.0 if 20 <= i < 30 else PTIME_MS
        packets.append((seq % SEQ_MOD, ts % TS_MOD, t))
        seq += 1
        ts += int(step_ms * 48)
        t += step_ms
    return packets


def test_dtx_gaps_are_sender_pauses_not_loss_or_delay() -> None:
    stats, gaps = run(dtx_stream())

    assert len(gaps) == 10
    assert all(g.sender_paused for g in gaps)
    assert all(g.packets_missing == 0 for g in gaps)
    assert stats.packets_lost == 0
    assert stats.packets_delayed == 0
    assert stats.max_gap_ms == pytest.approx(PTIME_MS)


def test_network_stall_during_dtx_is_not_a_sender_pause() -> None:
    packets = dtx_stream()
    # the packet after one DTX interval is held 300 ms more by the network
    seq, ts, arrival = packets[25]
    packets[25] = (seq, ts, arrival + 300.0)
    packets[26] = (packets[26][0], packets[26][1], packets[26][2] + 1.0)
    stats, gaps = run(packets)

    network = [g for g in gaps if not g.sender_paused]
    assert [g.length_ms for g in network] == [pytest.approx(700.0)]
    assert stats.max_gap_ms == pytest.approx(700.0)
    assert stats.packets_delayed == 1


def test_pause_with_frozen_timestamps_is_a_gap_then_re_anchored() -> None:
    # The sender stops for 400 ms and resumes with the timestamp continuing as
    # if it had not: every later transit is 400 ms higher.
    sent = opus(200)
    packets = sent[:100] + [(s, ts, t + 400.0) for s, ts, t in sent[100:]]
    analyzer = MediaAnalyzer(jitter_budget_ms=60.0, baseline_reset_ms=1000.0)
    gaps = feed(analyzer, packets[:110])

    assert [g.length_ms for g in gaps] == [pytest.approx(420.0)]
    assert not gaps[0].sender_paused
    # provisional while the elevated run is open
    assert analyzer.stats().packets_delayed == 10

    feed(analyzer, packets[110:])
    stats = analyzer.stats()
    assert stats.packets_delayed == 0
    assert stats.packets_lost == 0


def test_step_followed_by_catch_up_stays_delayed() -> None:
    # Transit jumps 400 ms like above, but then the path drains its queue over
    # 30 packets back to the floor: it was a stall, so the elevated packets
    # were late, however long the run lasted.
    sent = opus(200)

    def extra(i: int) -> float:
        return 400.0 * (1 - i / 29)

    caught_up = [(s, ts, t + extra(i)) for i, (s, ts, t) in enumerate(sent[100:130])]
    stats, _ = run(sent[:100] + caught_up + sent[130:], jitter_budget_ms=60.0)

    assert stats.packets_delayed == sum(1 for i in range(30) if extra(i) > 60.0)
    assert stats.packets_delayed == 25


def test_clock_skew_over_a_long_call_is_not_delay() -> None:
    # 30 minutes, sender clock 100 ppm slow (transit grows 180 ms over the
    # call), with +/-10 ms of seeded network jitter.
    rng = random.Random(7)
    n = 30 * 60 * 50
    skew = 100e-6
    packets = [
        (seq, ts, t + (t * skew) + rng.uniform(0.0, 20.0)) for seq, ts, t in opus(n)
    ]
    # keep arrivals in order, as a socket would deliver them
    packets.sort(key=lambda p: p[2])
    stats, _ = run(packets, jitter_budget_ms=60.0)

    assert stats.packets_delayed == 0
    assert stats.packets_lost == 0


# -- sequence-number restarts (RFC 3550 A.1) ------------------------------------


def test_single_wild_sequence_number_is_discarded() -> None:
    sent = opus(100)
    packets = [*sent[:50], (30_000, 1, sent[49][2] + 1.0), *sent[50:]]
    stats, _ = run(packets)

    assert stats.packets_discarded == 1
    assert stats.packets_received == stats.packets_expected == 100
    assert stats.packets_lost == 0


def test_confirmed_restart_opens_a_new_segment_without_fake_loss() -> None:
    first = opus(100)
    # the sender restarts: new sequence and timestamp origins
    second = opus(100, first_seq=40_000, first_ts=7, t0_ms=first[-1][2])
    analyzer = MediaAnalyzer()
    gaps = feed(analyzer, first + second[:10])
    # the new timestamp origin is a new transit floor, not 10 delayed packets
    assert analyzer.stats().packets_delayed == 0

    gaps += feed(analyzer, second[10:])
    stats = analyzer.stats()

    assert stats.packets_discarded == 0
    assert stats.packets_expected == stats.packets_received == 200
    assert stats.packets_lost == 0
    assert stats.packets_delayed == 0
    assert gaps == []


def test_larger_max_dropout_counts_a_long_video_outage_as_loss() -> None:
    sent = opus(10_000)
    packets = sent[:100] + sent[5_100:5_200]
    default, _ = run(packets)
    video, _ = run(packets, max_dropout=10_000)

    assert default.packets_lost == 0  # a 5000-packet jump reads as a restart
    assert video.packets_lost == 5_000


# -- reporting ------------------------------------------------------------------


def test_stored_gaps_are_capped_but_counted() -> None:
    packets: list[Packet] = []
    t = 0.0
    for i in range(MAX_STORED_GAPS + 500):
        packets.append((i % SEQ_MOD, (i * 2 * TICKS) % TS_MOD, t))
        # every second packet lost: 40 ms apart, 100 ms arrivals -> a gap each
        t += 100.0
    stats, _ = run(packets, gap_threshold_ms=60.0, jitter_budget_ms=10_000.0)

    assert len(stats.gaps) == MAX_STORED_GAPS
    assert stats.gap_count == MAX_STORED_GAPS + 499


def _entry(stats: MediaStats) -> Any:
    return to_json(MediaEntry.received(None, True, stats))


def test_the_report_entry_is_json_ready_and_rounded() -> None:
    sent = opus(300)
    packets = [(s, ts, t + 0.04321) for s, ts, t in sent[:100] + sent[200:]]
    data = _entry(MediaAnalyzer().stats())
    assert data.get("first_arrival_ms") is None

    analyzer = MediaAnalyzer()
    feed(analyzer, packets)
    data = _entry(analyzer.stats())

    assert json.loads(json.dumps(data)) == data
    assert data["packets_lost"] == 100
    assert data["max_gap_ms"] == 2020.0
    assert data["first_arrival_ms"] == 40.0
    assert data["gaps"] == [
        {
            "start_ms": 2020.0,
            "length_ms": 2020.0,
            "packets_missing": 100,
            "sender_paused": False,
        }
    ]


@pytest.mark.parametrize(
    ("seq", "ts", "arrival"),
    [(-1, 0, 0.0), (SEQ_MOD, 0, 0.0), (0, -1, 0.0), (0, TS_MOD, 0.0)],
)
def test_out_of_range_fields_raise(seq: int, ts: int, arrival: float) -> None:
    with pytest.raises(ValueError, match="range"):
        MediaAnalyzer().add(seq, ts, arrival)


def test_arrival_going_backwards_raises() -> None:
    analyzer = MediaAnalyzer()
    analyzer.add(1, 960, 100.0)
    with pytest.raises(ValueError, match="decrease"):
        analyzer.add(2, 1920, 99.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clock_rate": 0},
        {"gap_threshold_ms": 0.0},
        {"jitter_budget_ms": -1.0},
        {"max_dropout": 0},
        {"max_dropout": 30_000, "max_misorder": 3_000},
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MediaAnalyzer(**kwargs)  # type: ignore[arg-type]


# -- invariants, with hypothesis ----------------------------------------------------


@st.composite
def impaired_streams(draw: st.DrawFn) -> tuple[list[Packet], list[int]]:
    """A stream with random loss, duplication, bounded reordering and arrival
    spacing, starting anywhere in the sequence and timestamp spaces; returns
    the arrivals and the offsets (from the first sent packet) delivered."""
    first_seq = draw(st.integers(0, SEQ_MOD - 1))
    first_ts = draw(st.integers(0, TS_MOD - 1))
    count = draw(st.integers(1, 300))
    fates = draw(
        st.lists(
            st.sampled_from(["ok", "ok", "ok", "lost", "dup", "late"]),
            min_size=count,
            max_size=count,
        )
    )
    spacing = draw(st.lists(st.floats(0.0, 500.0), min_size=count, max_size=count))
    lateness = draw(st.lists(st.integers(1, 20), min_size=count, max_size=count))
    arrivals: list[tuple[float, int, int]] = []  # (order key, seq, ts)
    delivered: list[int] = []
    for i, fate in enumerate(fates):
        if fate == "lost":
            continue
        delivered.append(i)
        seq = (first_seq + i) % SEQ_MOD
        ts = (first_ts + i * TICKS) % TS_MOD
        # "late" packets arrive after up to 20 later ones (within MAX_MISORDER)
        key = float(i + (lateness[i] if fate == "late" else 0))
        arrivals.append((key, seq, ts))
        if fate == "dup":
            arrivals.append((key + 0.5, seq, ts))
    arrivals.sort(key=lambda a: a[0])
    packets: list[Packet] = []
    t = 0.0
    for j, (_, seq, ts) in enumerate(arrivals):
        t += spacing[j % count]
        packets.append((seq, ts, t))
    return packets, delivered


@settings(max_examples=200, deadline=None)
@given(impaired_streams())
def test_counts_are_consistent_with_what_was_delivered(
    stream: tuple[list[Packet], list[int]],
) -> None:
    packets, delivered = stream
    analyzer = MediaAnalyzer()
    for p in packets:
        analyzer.add(*p)
        s = analyzer.stats()
        assert s.packets_received + s.packets_lost == s.packets_expected
        for value in (
            s.packets_received,
            s.packets_lost,
            s.packets_delayed,
            s.packets_duplicated,
            s.packets_reordered,
            s.packets_discarded,
            s.gap_count,
        ):
            assert value >= 0
    stats = analyzer.stats()

    assert stats.packets_received == len(delivered)
    assert stats.packets_expected == (
        max(delivered) - min(delivered) + 1 if delivered else 0
    )
    assert stats.packets_lost == stats.packets_expected - len(delivered)
    assert stats.packets_duplicated == len(packets) - len(delivered)
    assert stats.packets_discarded == 0
    assert stats.packets_delayed <= stats.packets_received
    assert stats.gap_count == len(stats.gaps)
    starts = [g.start_ms for g in stats.gaps]
    assert starts == sorted(starts)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, SEQ_MOD - 1), st.floats(0.0, 1e4)), max_size=200)
)
def test_arbitrary_sequence_numbers_keep_the_accounting_whole(
    draws: list[tuple[int, float]],
) -> None:
    analyzer = MediaAnalyzer()
    t = 0.0
    for seq, step in draws:
        t += step
        analyzer.add(seq, (seq * TICKS) % TS_MOD, t)
    s = analyzer.stats()

    # every packet is exactly one of: received, duplicate, set aside
    assert s.packets_received + s.packets_duplicated + s.packets_discarded == len(draws)
    assert s.packets_received + s.packets_lost == s.packets_expected
    assert min(s.packets_lost, s.packets_delayed, s.packets_reordered) >= 0
