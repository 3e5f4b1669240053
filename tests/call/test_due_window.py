"""A re-offer without send ends the direction's due window (issue 10).

Real loopback calls: the ``media.direction`` step makes one side re-offer a
hold (its sender really stops) and, later, a resume. Silence while media was
not due is no gap, no lost packet and not one-way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.observe.due import DueWindows, discount
from agent.observe.media import MediaAnalyzer
from agent.report.schema import Verdict, call_verdict
from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner

STRICT = "expect: {max_media_gap_ms: 100, max_packets_lost: 2}\n"


async def run(text: str, seed: int = 7) -> dict[str, Any]:
    runner = ScenarioRunner(seed=seed)
    (result,) = await asyncio.wait_for(runner.run([parse_scenario(text)]), 60)
    return result


def _assert_quiet(media: dict[str, Any]) -> None:
    """Judged against what was due: no gap, nothing lost, not one-way."""
    assert media["max_gap_ms"] < 100, media
    assert media["packets_lost"] <= 2, media
    assert media["one_way"] is False, media
    assert media["state"] == "flowing", media
    assert not [g for g in media["gaps"] if g.get("until_end")], media


async def test_a_hold_until_hangup_by_the_sender_is_not_a_gap() -> None:
    # The caller re-offers recvonly: it stops sending. Without the due
    # window the 2.5 s to hang-up would be a gap with ~125 packets lost
    # and the direction one-way.
    result = await run(
        "name: hold\nduration: 3.5s\n" + STRICT + "steps:\n"
        "  - {at: 1s, do: media.direction, side: caller, direction: recvonly}\n"
    )
    held = result["media"]["caller_to_callee"]
    _assert_quiet(held)
    (window,) = held["not_due"]
    assert 900 <= window["start_ms"] - result["setup_ms"] <= 1300, held
    assert window["end_ms"] is None
    # The sender really stopped: about 1 s of the 3.5 s was sent.
    assert held["packets_sent"] < 80, held
    other = result["media"]["callee_to_caller"]
    assert other["packets_sent"] > 150 and "not_due" not in other, other
    assert call_verdict(result) is Verdict.PASS, result["expectations"]["checks"]


async def test_a_hold_asked_by_the_receiver_ends_the_other_direction() -> None:
    # The caller re-offers sendonly: the callee answers recvonly and stops
    # sending. The window ends on the caller's side at its own re-offer.
    result = await run(
        "name: hold\nduration: 3.5s\n" + STRICT + "steps:\n"
        "  - {at: 1s, do: media.direction, side: caller, direction: sendonly}\n"
    )
    held = result["media"]["callee_to_caller"]
    _assert_quiet(held)
    assert len(held["not_due"]) == 1 and held["packets_sent"] < 80, held
    assert result["media"]["caller_to_callee"]["packets_sent"] > 150
    assert call_verdict(result) is Verdict.PASS, result["expectations"]["checks"]


async def test_a_resume_opens_the_window_again() -> None:
    # Hold 1 s .. 2.5 s, resumed by the callee's sendrecv re-offer; then an
    # outage until hang-up must still be judged: media was due again.
    result = await run(
        "name: hold\nduration: 4s\n"
        "expect: {call_up: false}\n"
        "steps:\n"
        "  - {at: 1s, do: media.direction, side: callee, direction: inactive}\n"
        "  - {at: 2.5s, do: media.direction, side: callee, direction: sendrecv}\n"
        "  - {at: 3.3s, do: net.blackhole, side: caller, direction: outbound}\n"
    )
    media = result["media"]["caller_to_callee"]
    (window,) = media["not_due"]
    assert 1300 <= window["end_ms"] - window["start_ms"] <= 1700, media
    # The hold is no gap; the blackhole from 3.3 s to hang-up (4 s) is.
    gaps = [g for g in media["gaps"] if not g["sender_paused"]]
    assert len(gaps) == 1 and gaps[0]["until_end"], media
    assert 550 <= gaps[0]["length_ms"] <= 850, media
    assert media["packets_lost"] >= 25 and media["state"] == "stopped", media
    # The callee's own direction was on hold too (inactive) and resumed.
    back = result["media"]["callee_to_caller"]
    assert len(back["not_due"]) == 1, back
    assert back["max_gap_ms"] < 100 and back["packets_lost"] <= 2, back
    # A hold asked for is no late send: no agent stall as long as the hold.
    long_stalls = [
        e
        for e in result["events"]
        if e["type"] == "note"
        and e.get("cause") == "agent_stall"
        and e["detail"].get("stall_ms", 0) >= 1000
    ]
    assert not long_stalls, long_stalls


def test_a_far_end_that_freezes_its_rtp_clock_over_a_hold_has_no_gap() -> None:
    # Our sender advances its RTP timestamps over a hold (RFC 3550 §5.1), so
    # the resume looks like a sender pause; a far end that does not, leaves
    # a plain gap between arrivals. The not-due window takes it out.
    analyzer = MediaAnalyzer(gap_threshold_ms=60)
    t = 0.0
    for seq in range(50):
        t = seq * 20.0
        analyzer.add(seq, seq * 960, t)
    analyzer.add(50, 50 * 960, t + 1500)  # frozen clock, 1.5 s later
    windows = DueWindows()
    windows.receiving(False, t + 5)
    windows.receiving(True, t + 1490)
    raw = analyzer.stats()
    assert raw.max_gap_ms >= 1500 and raw.gap_count == 1
    judged = discount(raw, windows.closed, 60)
    assert judged.gaps == () and judged.gap_count == 0
    assert judged.max_gap_ms < 60
    # A window that covers only part of it leaves the due part as a gap.
    partial = discount(raw, [(t + 5, t + 700)], 60)
    assert [round(g.length_ms) for g in partial.gaps] == [805]
    assert round(partial.max_gap_ms) == 805
