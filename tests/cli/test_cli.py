"""The ``callagent`` command, run as a user would: exit codes, files, errors."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.callagent_cli import run as callagent
from tests.support.callagent_cli import start


def scenario(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def test_run_writes_a_complete_report_and_exits_0(tmp_path: Path) -> None:
    file = scenario(tmp_path, "ok", "duration: 1s\nexpect: {ice_restarts: 0}\n")
    report = tmp_path / "out" / "r.json"
    junit = tmp_path / "r.xml"
    proc = callagent("run", str(file), "--report", str(report), "--junit", str(junit))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["version"] == 1 and data["complete"] is True
    (call,) = data["calls"]
    assert call["metrics"]["ice_restarts"]["level"] == "good"
    assert call["media"]["caller_to_callee"]["packets_received"] > 0
    assert "ok#1" in proc.stdout and "PASS" in proc.stdout
    assert "<testsuite" in junit.read_text()


def test_failed_expectation_exits_1(tmp_path: Path) -> None:
    file = scenario(tmp_path, "bad", "duration: 1s\nexpect: {ice_restarts: 2}\n")
    proc = callagent("run", str(file), "--quiet")
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("duration: 5q\n", "duration: invalid duration '5q'"),
        ("duration: 1s\nsteps:\n  - {at: 0s, do: teleport}\n", "steps[0].do"),
    ],
)
def test_bad_scenario_is_one_line_exit_2_no_traceback(
    tmp_path: Path, body: str, message: str
) -> None:
    file = scenario(tmp_path, "broken", body)
    proc = callagent("run", str(file))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(file) in lines[0] and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_file_and_bad_report_are_clear_errors(tmp_path: Path) -> None:
    proc = callagent("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    proc = callagent("report", str(junk))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_interrupt_keeps_the_calls_that_finished(tmp_path: Path) -> None:
    first = scenario(tmp_path, "a_first", "duration: 1s\n")
    second = scenario(tmp_path, "b_long", "duration: 60s\n")
    report = tmp_path / "r.json"
    proc = start("run", str(first), str(second), "--report", str(report))
    try:
        # Wait (bounded) until the first call's result is on disk.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if report.exists() and json.loads(report.read_text())["calls"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("first call never reached the report")
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["interrupted"] == "SIGINT"
    ids = [c["id"] for c in data["calls"]]
    assert ids[0] == "a_first#1"
    # The interrupted call is reported too, marked as such.
    assert ids[1:] == ["b_long#1"] and data["calls"][1]["error"] == "interrupted"


def test_steps_lists_the_registry() -> None:
    proc = callagent("steps")
    assert proc.returncode == 0
    assert "hangup" in proc.stdout and "noop" in proc.stdout
