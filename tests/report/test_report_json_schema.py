"""docs/report.schema.json: generated from the typed entries, and it bites."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.report.json_schema import schema_text
from tests.support.report_schema import (
    SCHEMA_PATH,
    assert_matches_schema,
    validator,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "docs/report.schema.json is out of date; regenerate it with\n"
        "  python -m agent.report.json_schema > docs/report.schema.json"
    )


def test_a_report_of_every_verdict_matches(mixed_report: dict[str, Any]) -> None:
    assert_matches_schema(mixed_report)


def _errors(report: dict[str, Any]) -> list[str]:
    return [error.message for error in validator().iter_errors(report)]


@pytest.mark.parametrize(
    "damage",
    [
        "renamed detail field",
        "wrong level",
        "unknown event type",
        "missing call id",
        "string count",
    ],
)
def test_the_schema_rejects_a_damaged_report(
    mixed_report: dict[str, Any], damage: str
) -> None:
    report = copy.deepcopy(mixed_report)
    call = report["calls"][1]
    restart = next(e for e in call["events"] if e["type"] == "ice_restart")
    if damage == "renamed detail field":
        restart["detail"]["result"] = restart["detail"].pop("outcome")
    elif damage == "wrong level":
        call["metrics"]["ice_restarts"]["level"] = "bad"
    elif damage == "unknown event type":
        restart["type"] = "ice_reboot"
    elif damage == "missing call id":
        del call["id"]
    else:
        call["metrics"]["ice_restarts"]["total"] = "2"
    assert _errors(report)


def test_an_ice_triggered_rehandshake_in_a_real_run(tmp_path: Path) -> None:
    """The CLI's report of a real call whose far end rehandshakes after an
    ICE restart matches the schema (the autouse check validates the file too)
    and says the rehandshake was triggered by ICE."""
    report_path = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "run",
            str(REPO / "scenarios" / "ice_restart_rehandshake.yaml"),
            "--report",
            str(report_path),
            "--quiet",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert_matches_schema(report)
    (call,) = report["calls"]
    rehandshakes = [e for e in call["events"] if e["type"] == "dtls_rehandshake"]
    assert rehandshakes
    for event in rehandshakes:
        assert event["detail"]["triggered_by"] == "ice_restart", event
        assert event["detail"]["correlated_with"]["type"] == "ice_restart"
