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


def call_verdict(call: Mapping[str, Any]) -> Verdict:
    """PASS, FAIL or ERROR; an error wins over failed expectations.

    A call without expectations (an ad-hoc ``callagent call``) passes unless it
    errored.
    """
    if call.get("error"):
        return Verdict.ERROR
    expectations = call.get("expectations") or {}
    if expectations.get("passed") is False:
        return Verdict.FAIL
    if any(check.get("passed") is False for check in checks(call)):
        return Verdict.FAIL
    return Verdict.PASS


def checks(call: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    expectations = call.get("expectations") or {}
    return list(expectations.get("checks") or [])


def failed_checks(call: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [check for check in checks(call) if check.get("passed") is False]


def summarize(calls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The ``summary`` object: ``calls == passed + failed + errors``."""
    counts = {verdict: 0 for verdict in Verdict}
    for call in calls:
        counts[call_verdict(call)] += 1
    return {
        "calls": sum(counts.values()),
        "passed": counts[Verdict.PASS],
        "failed": counts[Verdict.FAIL],
        "errors": counts[Verdict.ERROR],
    }


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


def load_report(path: Path) -> dict[str, Any]:
    """Read a report file for ``callagent report``; bad files raise ReportError.

    A report from a run that was interrupted (``complete: false``) is valid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read report {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"cannot read report {path}: not UTF-8 text") from exc
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}: not a JSON report: {exc.msg}") from exc
    if not isinstance(report, dict):
        raise ReportError(f"{path}: not a callagent report (expected a JSON object)")
    version = report.get("version")
    if version != SCHEMA_VERSION:
        raise ReportError(
            f"{path}: report version {version!r} is not supported"
            f" (this callagent reads version {SCHEMA_VERSION})"
        )
    if not isinstance(report.get("calls"), list):
        raise ReportError(f"{path}: not a callagent report (no 'calls' list)")
    return report
