"""Verdicts, summary and reading report files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.report.schema import (
    ReportError,
    Verdict,
    call_verdict,
    load_report,
    summarize,
)


def test_verdicts(call_factory: Callable[..., dict[str, Any]]) -> None:
    failing = {"name": "ice_restarts", "expected": "0", "actual": "1", "passed": False}
    assert call_verdict(call_factory()) is Verdict.PASS
    assert call_verdict(call_factory(checks=[failing])) is Verdict.FAIL
    # An error wins over failed expectations.
    assert call_verdict(call_factory(checks=[failing], error="boom")) is Verdict.ERROR
    # A failed check counts even if the aggregate flag disagrees.
    inconsistent = call_factory(checks=[failing])
    inconsistent["expectations"]["passed"] = True
    assert call_verdict(inconsistent) is Verdict.FAIL
    # Ad-hoc calls have no expectations.
    assert call_verdict({"id": "adhoc#1", "expectations": None}) is Verdict.PASS


def test_summary_adds_up(call_factory: Callable[..., dict[str, Any]]) -> None:
    failing = {"name": "x", "expected": "0", "actual": "1", "passed": False}
    calls = [call_factory(), call_factory(checks=[failing]), call_factory(error="e")]
    assert summarize(calls) == {"calls": 3, "passed": 1, "failed": 1, "errors": 1}
    assert summarize([]) == {"calls": 0, "passed": 0, "failed": 0, "errors": 0}


def test_load_report_round_trip(tmp_path: Path, mixed_report: dict[str, Any]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(mixed_report))
    assert load_report(path) == mixed_report


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": 1,\n "calls": [', r"r\.json:2: not a JSON report"),
        ('{"version": 2, "calls": []}', "report version 2 is not supported"),
        ("[1, 2]", "not a callagent report"),
        ('{"version": 1}', "no 'calls' list"),
    ],
)
def test_load_report_rejects_bad_files(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=message) as caught:
        load_report(path)
    assert "\n" not in str(caught.value)


def test_load_report_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"cannot read report .*No such file"):
        load_report(tmp_path / "missing.json")
