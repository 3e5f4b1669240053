"""The report schema (version 1): constants, verdicts and tolerant accessors.

The JSON report is the source of truth; the terminal table, JUnit XML and
Prometheus text are views of it. Every view reads the same plain dicts through
the helpers here, so "did this call pass" and "what was its longest media gap"
have exactly one answer. The fields are documented in ``docs/report.md``.

Readers are tolerant on purpose: a report written by a run that was interrupted,
or a call dict that is still in progress (the live ``/metrics`` endpoint), may
lack fields. A missing value is shown as unknown, never as a crash.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.observe.model import DIRECTIONS, Level

SCHEMA_VERSION = 1

__all__ = [
    "CONTRACT_METRICS",
    "DIRECTIONS",
    "SCHEMA_VERSION",
    "ReportError",
    "Verdict",
    "call_verdict",
    "checks",
    "failed_checks",
    "ice_triggered_rehandshakes",
    "load_report",
    "media",
    "metric",
    "metric_level",
    "number",
    "summarize",
]


#: The two metrics of the contract (DESIGN.md), as keys of ``call["metrics"]``.
CONTRACT_METRICS = ("ice_restarts", "dtls_rehandshakes")


class ReportError(AgentError):
    """A report file (JSON, JUnit, metrics) cannot be written or read.

    The message is one line naming the file and the reason.
    """


class Verdict(enum.StrEnum):
    PASS = "PASS"
    #: the call ran, and at least one expectation was not met
    FAIL = "FAIL"
    #: the call could not be carried out (``call["error"]`` is set)
    ERROR = "ERROR"
    #: every check that could be judged passed, but the agent itself was too
    #: stalled to judge at least one (a check with ``inconclusive: true``)
    INCONCLUSIVE = "INCONCLUSIVE"


def call_verdict(call: Mapping[str, Any]) -> Verdict:
    """PASS, FAIL, ERROR or INCONCLUSIVE; an error wins over failed
    expectations, a failed check over one the agent could not judge.

    A call without expectations (an ad-hoc ``callagent call``) passes unless it
    errored.
    """
    if call.get("error"):
        return Verdict.ERROR
    failed = failed_checks(call)
    if any(not check.get("inconclusive") for check in failed):
        return Verdict.FAIL
    if failed:
        return Verdict.INCONCLUSIVE
    expectations = call.get("expectations") or {}
    if expectations.get("passed") is False:
        return Verdict.FAIL
    return Verdict.PASS


def checks(call: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    expectations = call.get("expectations") or {}
    return list(expectations.get("checks") or [])


def failed_checks(call: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [check for check in checks(call) if check.get("passed") is False]


def summarize(calls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The ``summary`` object: ``calls == passed + failed + errors +
    inconclusive`` (the last only present when not 0, as before it existed)."""
    counts = {verdict: 0 for verdict in Verdict}
    for call in calls:
        counts[call_verdict(call)] += 1
    summary = {
        "calls": sum(counts.values()),
        "passed": counts[Verdict.PASS],
        "failed": counts[Verdict.FAIL],
        "errors": counts[Verdict.ERROR],
    }
    if counts[Verdict.INCONCLUSIVE]:
        summary["inconclusive"] = counts[Verdict.INCONCLUSIVE]
    return summary


def metric(call: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``call["metrics"][name]`` (``{total, local, remote, level}``) or ``{}``."""
    value = (call.get("metrics") or {}).get(name)
    return value if isinstance(value, Mapping) else {}


def metric_level(value: Mapping[str, Any]) -> Level | None:
    try:
        return Level(str(value.get("level")))
    except ValueError:
        return None


def media(call: Mapping[str, Any], direction: str) -> Mapping[str, Any]:
    """``call["media"][direction]`` or ``{}`` (e.g. a call that never connected)."""
    value = (call.get("media") or {}).get(direction)
    return value if isinstance(value, Mapping) else {}


def number(value: Any) -> float | None:
    """A finite number, or None for null / missing / NaN / not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def ice_triggered_rehandshakes(call: Mapping[str, Any]) -> int:
    """DTLS rehandshake events attributed to an ICE restart on the same call.

    DESIGN.md: a rehandshake that follows an ICE restart within the correlation
    window is "triggered by ICE, not DTLS itself". The observe layer marks such
    an event with ``detail.triggered_by == "ice_restart"`` and
    ``detail.correlated_with`` (the restart). Counted per event, so a
    rehandshake seen by both observers counts once per side.
    """
    count = 0
    for event in call.get("events") or []:
        if event.get("type") != "dtls_rehandshake":
            continue
        detail = event.get("detail") or {}
        if (
            detail.get("triggered_by") == "ice_restart"
            or detail.get("correlated_with")
            or event.get("cause") == "ice_restart"
        ):
            count += 1
    return count


class ReportInputError(ReportError):
    """A file given to ``callagent report`` is not a readable callagent report:
    the user's input, so the CLI exits 2 as for any other bad input."""

    exit_code = 2


def load_report(path: Path) -> dict[str, Any]:
    """Read a report file for ``callagent report``; bad files raise
    :class:`ReportInputError` with one line naming the file and the reason.

    A report from a run that was interrupted (``complete: false``) is valid.
    This is the one boundary where foreign JSON enters the views: after it,
    every container the views index into has the type they expect.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportInputError(
            f"cannot read report {path}: {exc.strerror or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"cannot read report {path}: not UTF-8 text") from exc
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(
            f"{path}:{exc.lineno}: not a JSON report: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise ReportInputError(
            f"{path}: not a callagent report: JSON nested too deeply"
        ) from exc
    except ValueError as exc:
        # e.g. an integer beyond Python's int-string conversion limit
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReportInputError(f"{path}: not a JSON report: {reason}") from exc
    if not isinstance(report, dict):
        raise ReportInputError(
            f"{path}: not a callagent report (expected a JSON object)"
        )
    version = report.get("version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ReportInputError(
            f"{path}: report version {_short(version)} is not supported"
            f" (this callagent reads version {SCHEMA_VERSION})"
        )
    if not isinstance(report.get("calls"), list):
        raise ReportInputError(f"{path}: not a callagent report (no 'calls' list)")
    problem = _shape_problem(report)
    if problem is not None:
        raise ReportInputError(f"{path}: not a callagent report: {problem}")
    return report


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_OBJECT = (dict, type(None))
#: ``metrics`` holds counters (objects) and plain counts
_METRIC = (dict, type(None), int, float)
#: Per call: the fields the views read as objects (or null), and as lists.
_CALL_OBJECTS = ("metrics", "sides", "media", "expectations")
_CALL_LISTS = ("events",)


def _shape_problem(report: Mapping[str, Any]) -> str | None:
    """The first container of the wrong type, as ``calls[1].metrics: ...``.

    Only containers are checked: a missing field or an odd scalar is shown as
    unknown by the tolerant accessors above, but indexing into a number is a
    crash. The field names are those of docs/report.schema.json.
    """
    for key in ("host", "summary"):
        if not isinstance(report.get(key), _OBJECT):
            return f"{key} is not an object"
    for i, call in enumerate(report["calls"]):
        where = f"calls[{i}]"
        if not isinstance(call, dict):
            return f"{where} is not an object"
        for key in _CALL_OBJECTS:
            if not isinstance(call.get(key), _OBJECT):
                return f"{where}.{key} is not an object"
        for key in _CALL_LISTS:
            if not isinstance(call.get(key), list | None):
                return f"{where}.{key} is not a list"
        for key in ("metrics", "sides", "media"):
            for name, value in (call.get(key) or {}).items():
                if not isinstance(value, _METRIC if key == "metrics" else _OBJECT):
                    return f"{where}.{key}.{name} is not an object"
        for name, side in (call.get("sides") or {}).items():
            if isinstance(side, dict) and not isinstance(side.get("metrics"), _OBJECT):
                return f"{where}.sides.{name}.metrics is not an object"
            metrics = side.get("metrics") if isinstance(side, dict) else None
            for metric_name, value in (metrics or {}).items():
                if not isinstance(value, _METRIC):
                    return f"{where}.sides.{name}.metrics.{metric_name}: not an object"
        for j, event in enumerate(call.get("events") or []):
            if not isinstance(event, dict):
                return f"{where}.events[{j}] is not an object"
            if not isinstance(event.get("type"), str):
                return f"{where}.events[{j}].type is not a string"
            if not isinstance(event.get("detail"), _OBJECT):
                return f"{where}.events[{j}].detail is not an object"
        expectations = call.get("expectations") or {}
        if not isinstance(expectations.get("checks"), list | None):
            return f"{where}.expectations.checks is not a list"
        for j, check in enumerate(expectations.get("checks") or []):
            if not isinstance(check, dict):
                return f"{where}.expectations.checks[{j}] is not an object"
        for name, media_entry in (call.get("media") or {}).items():
            gaps = media_entry.get("gaps") if isinstance(media_entry, dict) else None
            if not isinstance(gaps, list | None) or any(
                not isinstance(gap, dict) for gap in gaps or []
            ):
                return f"{where}.media.{name}.gaps is not a list of objects"
    return None
