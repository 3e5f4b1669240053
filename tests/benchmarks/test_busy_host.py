"""The busy-host script: its burners always stop, and every verdict is counted."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.busy_host import _table, burners, cpu_seconds

REPO = Path(__file__).resolve().parents[2]


def test_burners_burn_and_are_stopped_even_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), burners(2) as procs:
        assert all(p.poll() is None for p in procs)
        least_cpu_s = 0.0
        while least_cpu_s < 0.05:  # a busy loop earns CPU time at once
            least_cpu_s = min(cpu_seconds(p.pid) for p in procs)
        raise RuntimeError("the run broke")
    assert all(p.poll() is not None for p in procs)


def test_every_verdict_value_gets_a_column() -> None:
    counts = {
        "baseline": Counter({"pass": 3, "inconclusive": 2}),
        "nat_timeout_fixed": Counter({"pass": 4, "no_report": 1}),
    }
    exits = {"baseline": Counter({0: 3, 3: 2}), "nat_timeout_fixed": Counter({0: 5})}
    header, base, nat = _table(counts, exits).splitlines()
    assert header.split()[1:5] == ["pass", "fail", "inconclusive", "no_report"]
    assert base.split()[1:5] == ["3", "0", "2", "0"]
    assert nat.split()[1:5] == ["4", "0", "0", "1"]


def test_an_unknown_scenario_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.busy_host", "no_such_scenario"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
