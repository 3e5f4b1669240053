"""The benchmark still runs: one real call per implementation, one second each.

Numbers are not checked here (speed goals live in the benchmark itself); this
only keeps ``python -m benchmarks.calls`` from rotting as the stack changes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("impl", ["callagent", "aiortc"])
def test_worker_places_a_call_and_receives_media(impl: str) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.calls", "--worker", impl),
            *("--calls", "1", "--seconds", "1", "--warmup", "0.5"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["connected"] == 1, result["errors"]
    # 50 packets/s per direction at 20 ms; a dead direction would read ~0.
    assert result["rx_pps_per_direction"] > 40
    # The call was closed (bounded teardown) before the result line.
    assert result["closed"] == 1 and result["teardown_slow"] is None
