"""Terminal views of a report: the results table and one call's event timeline.

Both read the JSON-ready report dicts (see ``docs/report.md``) and write to a
``rich`` console. Everything colour says is also said in words (``2 critical``,
``FAIL``), so the output reads the same in a CI log without colour, and the
columns are sized to fit an 80-column terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.observe.model import Level
from agent.report.schema import (
    DIRECTIONS,
    Verdict,
    call_verdict,
    failed_checks,
    ice_triggered_rehandshakes,
    media,
    metric,
    metric_level,
    number,
    summarize,
)

LEVEL_STYLE = {Level.GOOD: "green", Level.WARNING: "yellow", Level.CRITICAL: "red"}
VERDICT_STYLE = {
    Verdict.PASS: "green",
    Verdict.FAIL: "bold red",
    Verdict.ERROR: "bold magenta",
    Verdict.INCONCLUSIVE: "bold yellow",
}
UNKNOWN = "-"

#: Marks a DTLS count that includes rehandshakes triggered by an ICE restart.
ICE_TRIGGERED_MARK = "*"


def render_results(report: Mapping[str, Any], console: Console) -> None:
    """One row per call, then notes on failures and a one-line summary."""
    calls: list[Mapping[str, Any]] = list(report.get("calls") or [])
    rows = [_result_row(call) for call in calls]
    # Name the failed checks in the verdict cell only where they fit without
    # folding; the failure notes under the table name them in any case. The
    # verdict is the second column so that a too-narrow terminal crops the
    # packet counts, not the verdict.
    longest_name = max(
        (len(name) for call in calls for name in _failed_names(call)), default=0
    )
    ids = [str(call.get("id", UNKNOWN)) for call in calls]
    check_names = (
        _fixed_width(rows, ids) + len("ERROR ") + longest_name <= console.width
    )

    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
        title=_title(report),
        title_justify="left",
    )
    longest_id = max((len(call_id) for call_id in ids), default=4)
    table.add_column("call", overflow="fold", min_width=min(longest_id, 24))
    table.add_column("verdict", overflow="fold")
    for header, options in _RESULT_COLUMNS:
        table.add_column(header, **options)
    for call, call_id, row in zip(calls, ids, rows, strict=True):
        table.add_row(
            call_id,
            _verdict_cell(call, check_names=check_names),
            *row,
        )
    console.print(table)

    if any(ice_triggered_rehandshakes(call) for call in calls):
        console.print(
            f"{ICE_TRIGGERED_MARK} triggered by an ICE restart, not by DTLS"
            " itself; see --timeline"
        )
    for call in calls:
        for line in _failure_notes(call):
            console.print(line)
    console.print(_summary_line(report, calls))
    hint = _busy_host_hint(calls)
    if hint is not None:
        console.print(hint)


#: The results columns after call id and verdict: header and column options.
_RESULT_COLUMNS: list[tuple[str, dict[str, Any]]] = [
    ("setup\nms", {"justify": "right", "no_wrap": True}),
    ("ICE\nrestarts", {}),
    ("DTLS\nrehs", {}),
    ("gap ms\nto\ncallee", {"justify": "right", "no_wrap": True}),
    ("gap ms\nto\ncaller", {"justify": "right", "no_wrap": True}),
    ("lost/\ndelayed", {"justify": "right", "no_wrap": True}),
]
_COLUMN_GAP = 2  # padding (0, 1), collapsed between columns


def _result_row(call: Mapping[str, Any]) -> list[Text]:
    dtls = _metric_cell(metric(call, "dtls_rehandshakes"))
    if ice_triggered_rehandshakes(call):
        dtls.append(ICE_TRIGGERED_MARK)
    return [
        Text(_ms(call.get("setup_ms"))),
        _metric_cell(metric(call, "ice_restarts")),
        dtls,
        Text(_ms(media(call, "caller_to_callee").get("max_gap_ms"))),
        Text(_ms(media(call, "callee_to_caller").get("max_gap_ms"))),
        Text(_lost_delayed(call)),
    ]


def _fixed_width(rows: list[list[Text]], ids: list[str]) -> int:
    """Width of all columns but the verdict, with the gaps around them."""
    total = max([4, *(len(call_id) for call_id in ids)]) + _COLUMN_GAP
    for index, (header, _options) in enumerate(_RESULT_COLUMNS):
        cells = [row[index].cell_len for row in rows]
        total += max([*(len(line) for line in header.splitlines()), *cells])
        total += _COLUMN_GAP
    return total


def render_timeline(call: Mapping[str, Any], console: Console) -> None:
    """A compact event timeline of one call (``callagent report FILE --timeline``)."""
    head = Text()
    head.append(str(call.get("id", UNKNOWN)), style="bold")
    head.append(f"  {call.get('mode', UNKNOWN)}, final state ")
    head.append(str(call.get("final_state", UNKNOWN)))
    verdict = call_verdict(call)
    head.append("  ")
    head.append(str(verdict), style=VERDICT_STYLE[verdict])
    console.print(head)

    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    table.add_column("t s", justify="right", no_wrap=True)
    table.add_column("side", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("by", no_wrap=True)
    table.add_column("cause", overflow="fold")
    table.add_column("detail", overflow="fold", ratio=1)
    events = sorted(
        call.get("events") or [], key=lambda e: number(e.get("t_ms")) or 0.0
    )
    for event in events:
        t_ms = number(event.get("t_ms"))
        kind = str(event.get("type", UNKNOWN))
        table.add_row(
            UNKNOWN if t_ms is None else f"{t_ms / 1000:.3f}",
            str(event.get("side") or UNKNOWN),
            Text(kind, style=_EVENT_STYLE.get(kind, "")),
            str(event.get("initiator") or ""),
            str(event.get("cause") or ""),
            _detail(event.get("detail") or {}),
        )
    if events:
        console.print(table)
    else:
        console.print("no events recorded")


def _title(report: Mapping[str, Any]) -> str:
    run = f"run {report.get('run_id', UNKNOWN)}, seed {report.get('seed', UNKNOWN)}"
    if report.get("complete"):
        return run
    reason = report.get("interrupted")
    return f"{run} (incomplete{': ' + str(reason) if reason else ''})"


def _metric_cell(value: Mapping[str, Any]) -> Text:
    total = value.get("total")
    level = metric_level(value)
    if total is None:
        return Text(UNKNOWN)
    words = f"{total} {level}" if level is not None else str(total)
    return Text(words, style=LEVEL_STYLE.get(level, "") if level else "")


def _ms(value: Any) -> str:
    ms = number(value)
    return UNKNOWN if ms is None else f"{ms:.0f}"


def _lost_delayed(call: Mapping[str, Any]) -> str:
    """Both directions added up; ``-`` where neither direction knows."""
    totals: list[str] = []
    for key in ("packets_lost", "packets_delayed"):
        known = [
            value
            for direction in DIRECTIONS
            if (value := number(media(call, direction).get(key))) is not None
        ]
        totals.append(f"{sum(known):.0f}" if known else UNKNOWN)
    return "/".join(totals)


def _verdict_cell(call: Mapping[str, Any], *, check_names: bool) -> Text:
    verdict = call_verdict(call)
    cell = Text(str(verdict), style=VERDICT_STYLE[verdict])
    names = _failed_names(call)
    if check_names and names and verdict is not Verdict.PASS:
        cell.append(" " + ", ".join(names))
    return cell


def _failed_names(call: Mapping[str, Any]) -> list[str]:
    return [str(check.get("name", "?")) for check in failed_checks(call)]


def _failure_notes(call: Mapping[str, Any]) -> list[Text]:
    verdict = call_verdict(call)
    if verdict is Verdict.PASS:
        return []
    call_id = str(call.get("id", UNKNOWN))
    notes: list[Text] = []
    if verdict is Verdict.ERROR:
        note = Text(f"{call_id} ")
        note.append("ERROR", style=VERDICT_STYLE[verdict])
        note.append(f" ({call.get('final_state', UNKNOWN)}): {call.get('error')}")
        notes.append(note)
    for check in failed_checks(call):
        note = Text(f"{call_id} ")
        kind = Verdict.INCONCLUSIVE if check.get("inconclusive") else Verdict.FAIL
        note.append(str(kind), style=VERDICT_STYLE[kind])
        note.append(
            f" {check.get('name', '?')}: expected {check.get('expected', '?')},"
            f" got {check.get('actual', '?')}"
        )
        notes.append(note)
    return notes


def _summary_line(report: Mapping[str, Any], calls: list[Mapping[str, Any]]) -> Text:
    # Recomputed, not read from report["summary"]: the calls are the truth.
    summary = summarize(calls)
    line = Text(f"{summary['calls']} calls: ")
    line.append(f"{summary['passed']} passed", style="green")
    line.append(", ")
    line.append(
        f"{summary['failed']} failed", style="bold red" if summary["failed"] else ""
    )
    line.append(", ")
    line.append(
        f"{summary['errors']} errors",
        style="bold magenta" if summary["errors"] else "",
    )
    if summary.get("inconclusive"):
        line.append(", ")
        line.append(f"{summary['inconclusive']} inconclusive", style="bold yellow")
    if not report.get("complete"):
        reason = report.get("interrupted")
        line.append("; ")
        line.append(
            f"run incomplete{' (' + str(reason) + ')' if reason else ''}",
            style="bold yellow",
        )
    return line


def _busy_host_hint(calls: list[Mapping[str, Any]]) -> Text | None:
    """An inconclusive call is one this agent was too stalled to judge: when
    there are any, the limit was this host (too many calls per core), which
    the one-line summary alone does not tell a user at the end of a load run."""
    busy = [c for c in calls if call_verdict(c) is Verdict.INCONCLUSIVE]
    if not busy:
        return None
    longest = max((_longest_stall_ms(c) for c in busy), default=0.0)
    line = Text("host too busy: ", style="bold yellow")
    line.append(
        f"{len(busy)} call{'' if len(busy) == 1 else 's'} inconclusive because"
        f" this agent's own event loop stalled (longest {longest:.0f} ms), not"
        " the network or the far end; run fewer calls per core, or spread them"
        " over machines (--shard and merge, callagent fleet)"
    )
    return line


def _longest_stall_ms(call: Mapping[str, Any]) -> float:
    longest = 0.0
    events = call.get("events")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, Mapping) or event.get("cause") != "agent_stall":
            continue
        detail = event.get("detail")
        if isinstance(detail, Mapping):
            value = detail.get("stall_ms", detail.get("length_ms"))
            if isinstance(value, int | float) and value > longest:
                longest = float(value)
    return longest


_EVENT_STYLE = {
    "ice_restart": "bold yellow",
    "dtls_rehandshake": "bold yellow",
    "media_gap": "red",
    "fault_start": "magenta",
    "fault_end": "magenta",
    "step": "cyan",
}

#: Detail keys shown first, in this order; others follow as they come.
_DETAIL_FIRST = (
    "state",
    "outcome",
    "trigger",
    "generation",
    "duration_ms",
    "length_ms",
    "media_gap_ms",
    "triggered_by",
    "correlated_with",
)


def _detail(detail: Mapping[str, Any]) -> str:
    keys = [k for k in _DETAIL_FIRST if k in detail]
    keys += [k for k in detail if k not in _DETAIL_FIRST]
    parts = []
    for key in keys:
        value = detail[key]
        if value is None:
            continue
        if isinstance(value, Mapping):
            parts.append(f"{key}: {_value(value)}")
        else:
            parts.append(f"{key}={_value(value)}")
    return " ".join(parts)


#: Direction keys, shortened as in the results table's column headers.
_SHORT_KEYS = {"caller_to_callee": "to_callee", "callee_to_caller": "to_caller"}


def _value(value: Any) -> str:
    # Space-separated words, so a narrow terminal wraps between items rather
    # than inside a number: {"a": {"b": 1}} reads "a: b=1".
    if isinstance(value, Mapping):
        return " ".join(
            f"{_SHORT_KEYS.get(str(k), k)}={_value(v)}"
            if not isinstance(v, Mapping)
            else f"{k}: {_value(v)}"
            for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return "[" + " ".join(_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
