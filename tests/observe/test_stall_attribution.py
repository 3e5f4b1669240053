"""The agent's own lateness wins over a fault window; media due until hang-up
(pure: typed events and the analyzer, no sockets)."""

from __future__ import annotations

from agent.observe.correlate import LOOP_STALL, build_timeline
from agent.observe.events import (
    ConnectionStateDetail,
    ConnectionStateEvent,
    Event,
    MediaGapEvent,
    NoteDetail,
    NoteEvent,
)
from agent.observe.media import MediaAnalyzer, until_end
from agent.observe.model import Side
from agent.observe.observer import PeerObserver
from tests.observe.test_fault_attribution import fault, gap

CALLER, CALLEE = Side.CALLER, Side.CALLEE


def sender_pause(t: float, length_ms: float, side: Side) -> NoteEvent:
    return NoteEvent(
        t_ms=t,
        side=side,
        cause="agent_stall",
        detail=NoteDetail(text="the agent's RTP sender sent late", stall_ms=length_ms),
    )


def test_a_gap_the_senders_pause_explains_is_the_agents_not_the_faults() -> None:
    # Issue 10 item 6: in mtu_fixed two gaps were tagged `mtu` while the MTU
    # filter dropped nothing: the agent had stalled.
    timeline = build_timeline(
        [
            fault(1000.0, "mtu", "mtu", 1),
            # the callee's sender went quiet 150 ms; the caller heard 170 ms
            sender_pause(2000.0, 150.0, CALLEE),
            gap(1995.0, 170.0, CALLER),
            # a long outage during the fault: a 150 ms pause explains little
            gap(4000.0, 900.0, CALLER),
            sender_pause(4100.0, 150.0, CALLEE),
            # the caller's own pause says nothing of the callee's direction
            sender_pause(6000.0, 200.0, CALLER),
            gap(6000.0, 210.0, CALLER),
        ]
    )
    gaps = [e for e in timeline if isinstance(e, MediaGapEvent)]
    assert [g.cause for g in gaps] == ["agent_stall", "mtu", "mtu"]
    assert gaps[0].detail.fault is None and gaps[0].detail.stall_ms == 150.0
    assert gaps[1].detail.fault is not None


def test_silence_until_hangup_is_a_gap_and_its_packets_are_lost() -> None:
    analyzer = MediaAnalyzer()
    # 5 s of 20 ms packets (960 ticks at 48 kHz), then nothing until 10 s.
    for i in range(250):
        analyzer.add(i, i * 960, i * 20.0)
    plain = analyzer.stats()
    assert plain.packets_lost == 0 and plain.max_gap_ms == 20.0
    assert plain.packet_ms == 20.0
    judged = until_end(plain, 10000.0, 60.0)
    assert judged.state == "stopped" and judged.state_since_ms == 4980.0
    assert judged.max_gap_ms == 5020.0
    assert judged.packets_lost == 251 and judged.packets_expected == 501
    assert judged.gaps[-1].until_end and judged.gaps[-1].packets_missing == 251
    # Hang-up right after the last packet: no gap, still flowing.
    assert until_end(plain, 4990.0, 60.0).state == "flowing"
    assert until_end(plain, 4990.0, 60.0).packets_lost == 0
    # A newer stream of the same direction (an SBC failover's new SSRC) is
    # what arrived last: the old stream's silence is no gap.
    assert until_end(plain, 10000.0, 60.0, last_arrival_ms=9990.0).packets_lost == 0


def test_after_an_rtcp_bye_the_far_ends_silence_is_no_gap() -> None:
    now = [0.0]
    observer = PeerObserver(CALLER, lambda: now[0])
    for i in range(100):
        now[0] = i * 20.0
        observer.on_rtp(7, i, i * 960, now[0])
    now[0] = 2000.0
    observer.on_rtp_bye(7)  # the far end said it stopped sending
    observer.finish(media_until_ms=9000.0)
    stats = observer.media_stats()
    assert stats is not None and stats.packets_lost == 0
    assert not [e for e in observer.events if isinstance(e, MediaGapEvent)]
    # Without the BYE the same silence is a 7 s gap with its packets lost.
    silent = PeerObserver(CALLER, lambda: now[0])
    for i in range(100):
        silent.on_rtp(7, i, i * 960, i * 20.0)
    silent.finish(media_until_ms=9000.0)
    stats = silent.media_stats()
    assert stats is not None and stats.packets_lost == 351 and stats.state == "stopped"
    assert [
        e.detail.until_end for e in silent.events if isinstance(e, MediaGapEvent)
    ] == [True]


def _connected(side: Side) -> ConnectionStateEvent:
    return ConnectionStateEvent(
        t_ms=50.0, side=side, detail=ConnectionStateDetail(state="connected")
    )


def _loop_stall(t: float, length_ms: float) -> NoteEvent:
    # The loop watch notes on the local side's observer, for the process.
    return NoteEvent(
        t_ms=t,
        side=CALLER,
        cause="agent_stall",
        detail=NoteDetail(text=LOOP_STALL, stall_ms=length_ms),
    )


def test_a_sender_pause_then_a_loop_stall_explain_a_gap_together() -> None:
    # field_mix under load: the callee's sender was late 165 ms, then the
    # whole loop stalled 233 ms; the caller heard one 252 ms gap that
    # neither explains alone (more than 60 ms left over each time).
    events: list[Event] = [
        _connected(CALLER),
        _connected(CALLEE),
        sender_pause(78413.8, 164.9, CALLEE),
        gap(78476.1, 251.6, CALLER),
        _loop_stall(78495.7, 232.8),
    ]
    (mine,) = [e for e in build_timeline(events) if isinstance(e, MediaGapEvent)]
    assert mine.cause == "agent_stall", mine
    assert mine.detail.stall_ms == round(78495.7 + 232.8 - 78413.8, 1)


def test_a_loop_stall_explains_nothing_of_a_far_end_we_do_not_run() -> None:
    # A remote call: only the caller is ours. The far end kept sending
    # whatever our loop did (arrival times are the kernel's).
    events: list[Event] = [
        _connected(CALLER),
        _loop_stall(1000.0, 300.0),
        gap(990.0, 320.0),
    ]
    (theirs,) = [e for e in build_timeline(events) if isinstance(e, MediaGapEvent)]
    assert theirs.cause is None
