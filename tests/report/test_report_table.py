"""The results table and the event timeline, rendered to a real rich Console."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console

from agent.report.table import render_results, render_timeline


def render(fn: Callable[[Any, Console], None], arg: Any, *, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, no_color=True)
    fn(arg, console)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def row(output: str, call_id: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(call_id + " ")]
    assert lines, f"no row for {call_id}:\n{output}"
    return lines[0]


def test_one_row_per_call_with_the_expected_cells(mixed_report: dict[str, Any]) -> None:
    output = render(render_results, mixed_report, width=100)

    baseline = row(output, "baseline#1").split()
    assert baseline == [
        "baseline#1",
        "PASS",
        "85",
        "0",
        "good",
        "0",
        "good",
        "41",
        "38",
        "1/0",
    ]

    failed = row(output, "nat_rebind#1")
    for cell in (
        "FAIL ice_restarts,",
        "85",
        "2 critical",
        "1 warning*",
        "1900",
        "850",
        "14/3",
    ):
        assert cell in failed
    assert "max_media_gap_ms" in output  # the verdict cell wraps onto a second line

    errored = row(output, "nat_rebind#2").split()
    assert errored[:3] == ["nat_rebind#2", "ERROR", "-"]  # no setup time


def test_failure_notes_and_summary_line(mixed_report: dict[str, Any]) -> None:
    output = render(render_results, mixed_report, width=100)
    lines = output.splitlines()
    assert "nat_rebind#1 FAIL ice_restarts: expected 1, got 2" in lines
    assert "nat_rebind#1 FAIL max_media_gap_ms: expected <= 1500, got 1900.5" in lines
    assert (
        "nat_rebind#2 ERROR (never_connected): ICE failed: no candidate pair succeeded"
        in lines
    )
    assert lines[-1] == "3 calls: 1 passed, 1 failed, 1 errors"
    # The rehandshake that followed the ICE restart is attributed to it.
    assert any(
        line.startswith("* triggered by an ICE restart, not by DTLS itself")
        for line in lines
    )


def test_fits_80_columns_without_losing_a_verdict(mixed_report: dict[str, Any]) -> None:
    output = render(render_results, mixed_report, width=80)
    assert "\x1b" not in output
    assert max(len(line) for line in output.splitlines()) <= 80
    assert row(output, "baseline#1").split()[1] == "PASS"
    assert row(output, "nat_rebind#1").split()[1] == "FAIL"
    assert row(output, "nat_rebind#2").split()[1] == "ERROR"
    for cell in ("2 critical", "1 warning*", "14/3", "1900"):
        assert cell in row(output, "nat_rebind#1")
    # Check names that do not fit in the cell are still named, in full.
    assert "nat_rebind#1 FAIL max_media_gap_ms: expected <= 1500, got 1900.5" in output


def test_levels_are_coloured_when_colour_is_on(mixed_report: dict[str, Any]) -> None:
    console = Console(
        file=io.StringIO(), width=120, force_terminal=True, color_system="standard"
    )
    render_results(mixed_report, console)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[31m2 critical" in output  # red
    assert "\x1b[33m1 warning" in output  # yellow
    assert "\x1b[32m0 good" in output  # green


def test_incomplete_run_says_so(mixed_report: dict[str, Any]) -> None:
    mixed_report["complete"] = False
    mixed_report["interrupted"] = "SIGINT"
    output = render(render_results, mixed_report, width=100)
    assert output.splitlines()[0].startswith(
        "run 20261123T121500Z-ab12, seed 1234 (incomplete: SIGINT)"
    )
    assert output.splitlines()[-1].endswith("; run incomplete (SIGINT)")


def test_missing_fields_render_as_unknown() -> None:
    report = {"calls": [{"id": "partial#1"}], "complete": False}
    output = render(render_results, report, width=80)
    assert row(output, "partial#1").split() == [
        "partial#1",
        "PASS",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-/-",
    ]
    assert (
        output.splitlines()[-1]
        == "1 calls: 1 passed, 0 failed, 0 errors; run incomplete"
    )


def test_timeline_lists_events_in_time_order(mixed_report: dict[str, Any]) -> None:
    call = mixed_report["calls"][1]
    output = render(render_timeline, call, width=80)
    lines = output.splitlines()
    assert lines[0] == "nat_rebind#1  loopback, final state closed  FAIL"
    assert max(len(line) for line in lines) <= 80

    restart = next(i for i, line in enumerate(lines) if " ice_restart " in line)
    rehandshake = next(
        i for i, line in enumerate(lines) if " dtls_rehandshake " in line
    )
    assert restart < rehandshake  # sorted by t_ms, not by list order
    assert lines[restart].split()[:5] == [
        "5.013",
        "caller",
        "ice_restart",
        "local",
        "nat_rebind",
    ]
    assert lines[rehandshake].split()[:5] == [
        "5.100",
        "caller",
        "dtls_rehandshake",
        "local",
        "nat_rebind",
    ]
    assert "outcome=completed" in lines[restart]
    words = output.split()
    gap = words.index("media_gap_ms:")
    assert words[gap + 1 : gap + 3] == ["to_callee=900.5", "to_caller=850"]
    assert "triggered_by=ice_restart" in words
    corr = words.index("correlated_with:")
    assert words[corr + 1 : corr + 4] == [
        "type=ice_restart",
        "t_ms=5012.5",
        "generation=1",
    ]


def test_timeline_of_a_call_without_events(
    call_factory: Callable[..., dict[str, Any]],
) -> None:
    output = render(render_timeline, call_factory(), width=80)
    assert output.splitlines() == [
        "baseline#1  loopback, final state closed  PASS",
        "no events recorded",
    ]


def test_unknown_packet_counts_are_not_shown_as_zero(
    call_factory: Callable[..., dict[str, Any]],
) -> None:
    call = call_factory("never#1", error="ICE failed", setup_ms=None)
    for direction in call["media"].values():
        direction.update(packets_lost=None, max_gap_ms=None)
        del direction["packets_delayed"]
    output = render(render_results, {"calls": [call], "complete": True}, width=80)
    assert row(output, "never#1").split()[-3:] == ["-", "-", "-/-"]
