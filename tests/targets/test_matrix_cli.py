"""``callagent matrix`` end to end: against the built-in agent, and against a
real WHIP endpoint (``callagent serve`` in a child process), where the rows a
WHIP endpoint cannot perform are REFUSED, not failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "scenarios" / "matrix"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def callagent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )


def subset(tmp_path: Path, *names: str) -> Path:
    directory = tmp_path / "matrix"
    directory.mkdir()
    for name in names:
        shutil.copy(MATRIX / f"{name}.yaml", directory)
    return directory


@pytest.fixture
def whip_url() -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "agent.cli.main", "serve", "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "serving WHIP at" in line, line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


def test_matrix_against_the_agent_writes_every_output(tmp_path: Path) -> None:
    scenarios = subset(tmp_path, "baseline", "ice_restart_far_end")
    out = {kind: tmp_path / f"m.{kind}" for kind in ("md", "xml", "json")}
    done = callagent(
        "matrix",
        "--scenarios",
        str(scenarios),
        "--markdown",
        str(out["md"]),
        "--junit",
        str(out["xml"]),
        "--report",
        str(out["json"]),
        "--quiet",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resilience matrix: agent" in done.stdout
    doc = json.loads(out["json"].read_text())
    rows = {row["scenario"]: row for row in doc["rows"]}
    assert rows["matrix-baseline"]["verdict"] == "PASS"
    restart = rows["matrix-ice-restart-far-end"]
    assert (restart["restarts_far_end"], restart["restarts_agent"]) == (1, 0)
    assert restart["recovered"] is True
    assert len(doc["calls"]) == 2
    assert out["md"].read_text().count("| PASS |") == 2
    assert out["xml"].read_text().count("<testcase") == 2


def test_matrix_against_a_whip_endpoint_refuses_what_whip_cannot_do(
    tmp_path: Path, whip_url: str
) -> None:
    scenarios = subset(
        tmp_path,
        "baseline",
        "ice_restart_agent",
        "ice_restart_far_end",
        "cert_rotation",
    )
    report = tmp_path / "m.json"
    done = callagent(
        "matrix",
        "--target",
        f"whip+{whip_url}",
        "--scenarios",
        str(scenarios),
        "--report",
        str(report),
        "--quiet",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["scenario"]: row for row in json.loads(report.read_text())["rows"]}
    verdicts = {name: row["verdict"] for name, row in rows.items()}
    assert verdicts == {
        "matrix-baseline": "PASS",
        "matrix-ice-restart-agent": "PASS",
        "matrix-ice-restart-far-end": "REFUSED",
        "matrix-cert-rotation": "REFUSED",
    }
    # The agent's restart went out as a PATCH and the endpoint took it.
    assert rows["matrix-ice-restart-agent"]["restarts_agent"] == 1
    assert "cannot restart ICE itself" in rows["matrix-ice-restart-far-end"]["note"]
