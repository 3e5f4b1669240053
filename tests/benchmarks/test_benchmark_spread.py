"""A level spread over worker processes: calls and rate shared, results added."""

from __future__ import annotations

from benchmarks.spread import combine, split
from benchmarks.worker import WorkerResult, WorkerSpec


def test_split_shares_the_calls_and_the_ramp() -> None:
    spec = WorkerSpec("callagent", 101, 10.0, 2.0, 10.0, 15.0)
    parts = split(spec, 2)
    assert [p.calls for p in parts] == [51, 50]
    assert [p.rate for p in parts] == [5.0, 5.0]
    assert len(split(WorkerSpec("aiortc", 1, 1.0, 1.0, 1.0, 1.0), 4)) == 1


def test_combine_adds_cost_and_keeps_the_worst_loop() -> None:
    a = WorkerResult(
        "callagent",
        2,
        connected=2,
        setup_ms=[10, 20],
        cores=0.5,
        rx_pps_per_direction=50.0,
        loop_lag_p95_ms=3.0,
        peak_rss_mb=100,
        background_cores=0.6,
    )
    b = WorkerResult(
        "callagent",
        2,
        connected=2,
        setup_ms=[30, 40],
        cores=0.5,
        rx_pps_per_direction=40.0,
        loop_lag_p95_ms=9.0,
        peak_rss_mb=100,
        background_cores=0.6,
    )
    row = combine("callagentx2", [a, b])
    assert row.impl == "callagentx2" and row.calls == 4 and row.connected == 4
    assert row.cores == 1.0 and row.cores_per_call == 0.25
    assert row.rx_pps_per_direction == 45.0 and row.loop_lag_p95_ms == 9.0
    assert row.peak_rss_mb == 200 and row.setup_ms == [10, 20, 30, 40]
    # Each counted the other (0.5 cores) as background: 0.1 is left.
    assert row.background_cores is not None and abs(row.background_cores - 0.1) < 1e-9
