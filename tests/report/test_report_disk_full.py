"""A report write that fails mid-run must not lose a finished call (issue 11, D15).

The disk is made "full" for real: the ``callagent`` process runs with a file
size limit (RLIMIT_FSIZE) that the first report (no calls yet) fits under and
the first per-call rewrite does not, so ``write(2)`` fails with EFBIG as it
would with ENOSPC on a full disk. SIGXFSZ is ignored so the write returns an
error instead of killing the process.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 4096


def _small_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def test_a_failed_write_keeps_and_prints_every_finished_call(tmp_path: Path) -> None:
    for name in ("first", "second"):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\nduration: 1s\n")
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "run",
            str(tmp_path / "first.yaml"),
            str(tmp_path / "second.yaml"),
            "--report",
            str(report),
            "--quiet",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_small_disk,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    # One line says so; the run went on and both calls are in the table.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(report) in lines[0] and "kept in memory" in lines[0]
    assert "first#1" in proc.stdout and "second#1" in proc.stdout, proc.stdout
    assert "NOT written" in proc.stdout
    assert proc.returncode == 1
    # What is on disk is the last complete document (the run's start), whole.
    on_disk = json.loads(report.read_text(encoding="utf-8"))
    assert on_disk["calls"] == []
