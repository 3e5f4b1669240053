"""GStreamer's webrtcbin as a far end, through the product:
``callagent run --target gstreamer``.

webrtcbin (Debian GStreamer 1.22, libnice) runs in a child process of the
system Python inside the kernel lab's outside namespace, the agent behind
the lab's NAT. Each call is checked from both sides: the agent's report and
webrtcbin's own ``get-stats`` view in ``sides.callee.view``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.callagent_cli import ROOT, run
from tests.support.lab import require_lab

MATRIX = ROOT / "scenarios" / "matrix"


@pytest.fixture(autouse=True)
def _lab() -> None:
    require_lab()


def callagent(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return run(*args, env=env, timeout=timeout)


def netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return sorted(line.split()[0] for line in out.stdout.splitlines() if line)


@pytest.mark.timeout(300)
def test_baseline_restart_and_rebind_against_webrtcbin(tmp_path: Path) -> None:
    # Three rows of the resilience matrix, through `callagent matrix`.
    rows_dir = tmp_path / "rows"
    rows_dir.mkdir()
    for name in ("baseline", "ice_restart_agent", "nat_rebind_no_recovery"):
        shutil.copy(MATRIX / f"{name}.yaml", rows_dir)
    matrix_path = tmp_path / "m.json"
    done = callagent(
        "matrix",
        "--target",
        "gstreamer",
        "--scenarios",
        str(rows_dir),
        "--report",
        str(matrix_path),
    )
    doc = json.loads(matrix_path.read_text())
    rows = {row["scenario"]: row for row in doc["rows"]}
    calls: dict[str, dict[str, Any]] = {c["scenario"]: c for c in doc["calls"]}
    assert set(calls) == {
        "matrix-baseline",
        "matrix-ice-restart-agent",
        "matrix-nat-rebind-no-recovery",
    }, done.stdout + done.stderr
    run_ids = {c["lab"]["run_id"] for c in calls.values()}
    left = [n for n in netns() for run in run_ids if n.startswith(f"ca-{run}-")]
    assert not left, f"the gstreamer calls left lab namespaces behind: {left}"

    baseline = calls["matrix-baseline"]
    assert rows["matrix-baseline"]["verdict"] == "PASS", rows
    assert baseline["lab"] is not None  # libnice: the call ran in the kernel lab
    view = baseline["sides"]["callee"]["view"]
    assert view["source"] == "webrtcbin get-stats"
    # 8 s of 20 ms audio each way, seen by each receiver.
    assert view["packets_received"] > 250, view
    assert baseline["media"]["callee_to_caller"]["packets_received"] > 250

    # webrtcbin answers the agent's restart offer with its old ufrag: the
    # restart is `rejected`, the old generation stays, media never stops;
    # the row is the expected failure its capabilities declare.
    restart = calls["matrix-ice-restart-agent"]
    events = [e for e in restart["events"] if e["type"] == "ice_restart"]
    assert [e["detail"]["outcome"] for e in events] == ["rejected"], events
    view = restart["sides"]["callee"]["view"]
    assert view["reoffers_answered"] == 1 and len(view["local_ufrags"]) == 1, view
    assert restart["final_state"] == "connected" and view["inbound_recent"]
    assert restart["media"]["callee_to_caller"]["max_gap_ms"] < 500
    row = rows["matrix-ice-restart-agent"]
    assert row["verdict"] == "XFAIL" and "old credentials" in row["note"], row

    # The agent's NAT rebinds and nobody restarts: libnice learns the new
    # peer-reflexive address and sends there (measured: ~0.8 s of silence).
    rebind = calls["matrix-nat-rebind-no-recovery"]
    assert rows["matrix-nat-rebind-no-recovery"]["verdict"] == "PASS", rows
    assert rebind["metrics"]["ice_restarts"]["total"] == 0
    assert rebind["sides"]["callee"]["view"]["inbound_recent"]
    last = rebind["media"]["callee_to_caller"]["last_arrival_ms"]
    assert last > rebind["duration_ms"] - 1500
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_gstreamer_is_one_line_and_the_report_is_kept(tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    done = callagent(
        "run",
        str(MATRIX / "baseline.yaml"),
        "--target",
        "gstreamer",
        "--report",
        str(report_path),
        "--quiet",
        env={"CALLAGENT_GST_PYTHON": "/bin/false"},
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(report_path.read_text())
    (call,) = report["calls"]
    assert "exited before its ready" in call["error"]
    assert "\n" not in call["error"]
