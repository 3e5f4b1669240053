"""A worker's end is bounded, and a slow end does not lose the measurement.

Teardown runs our own harness code against calls whose ``close`` misbehaves
(the harness's bound is what is tested, not aiortc); the parent's combining of
two workers is run for real with one call each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace

import pytest

from benchmarks.calls import _note, run_one
from benchmarks.spread import combine
from benchmarks.worker import BenchCall, Reporter, WorkerResult, WorkerSpec, teardown


class ScriptedCall:
    """A ``BenchCall`` whose ``close`` ends well, raises, or hangs."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.release = asyncio.Event()

    async def connect(self, timeout_s: float) -> None:
        return None

    async def packets_received(self) -> int:
        return 0

    def frames_decoded(self) -> int | None:
        return None

    async def close(self) -> None:
        if self.how == "raises":
            raise ConnectionError("close failed")
        if self.how == "hangs":
            with contextlib.suppress(asyncio.CancelledError):
                await self.release.wait()
            # It swallowed the timeout's cancellation and keeps hanging.
            await self.release.wait()


async def test_teardown_counts_closed_calls_and_returns_despite_a_hung_close() -> None:
    calls = [ScriptedCall(how) for how in ("ok", "raises", "hangs", "ok")]
    bench_calls: list[BenchCall] = list(calls)
    try:
        closed = await asyncio.wait_for(teardown(bench_calls, 0.2), 10)
    finally:
        for call in calls:
            call.release.set()
    assert closed == 2
    assert await teardown([], 0.2) == 0


def _spec(calls: int) -> WorkerSpec:
    return WorkerSpec("callagent", calls, 10.0, 2.0, 10.0, 15.0)


def test_the_budget_grows_with_the_calls_to_close() -> None:
    few, many = _spec(2), _spec(150)
    assert many.teardown_s > few.teardown_s
    # Only the ramp (148 more calls at 10/s) and the teardown grow.
    grown = 148 / 10 + many.teardown_s - few.teardown_s
    assert many.budget_s - few.budget_s == pytest.approx(grown)


def _printed(reporter: Reporter, capsys: pytest.CaptureFixture[str]) -> WorkerResult:
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    return WorkerResult(**json.loads(lines[0]))


def test_the_watchdog_keeps_a_completed_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = Reporter(_spec(150))
    window = WorkerResult(
        "callagent", 150, connected=150, cores=0.9, rx_pps_per_direction=50.0
    )
    reporter.measured(window)
    reporter.progress.phase = "teardown of 150 calls"
    reporter.fail("worker did not finish within 60 s (in teardown of 150 calls)")
    reporter.fail("a second line is never printed")
    row = _printed(reporter, capsys)
    assert row.fatal is None and row.connected == 150 and row.cores == 0.9
    assert row.teardown_slow is not None and "teardown of 150" in row.teardown_slow
    assert _note(row).startswith("teardown slow: worker did not finish")


def test_a_watchdog_before_the_window_says_where_it_was_stuck(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = Reporter(_spec(150))
    reporter.progress.phase = "setup"
    reporter.progress.started = 150
    reporter.progress.settled = 90
    where = reporter.progress.describe()
    assert where == "setup: 150/150 calls started, 90 connected or failed"
    reporter.fail(f"worker did not finish within 60 s (in {where})")
    row = _printed(reporter, capsys)
    assert row.connected == 0 and row.cores is None
    assert _note(row) == f"worker did not finish within 60 s (in {where})"


def test_combined_rows_add_closed_calls_and_keep_a_slow_teardown() -> None:
    a = WorkerResult("callagent", 2, connected=2, closed=2, teardown_s=0.5)
    b = replace(a, closed=1, teardown_s=3.0, teardown_slow="1 of 2 calls not closed")
    row = combine("callagentx2", [a, b])
    assert row.closed == 3 and row.teardown_s == 3.0
    assert row.teardown_slow == "1 of 2 calls not closed"
    assert combine("x", [a, replace(b, closed=None)]).closed is None


def test_two_workers_of_one_call_each_close_both_calls() -> None:
    row = run_one(
        WorkerSpec(
            "callagent", 2, seconds=0.5, warmup_s=0.2, rate=10.0, setup_timeout_s=15.0
        ),
        workers=2,
    )
    assert row.fatal is None, row.fatal
    assert row.impl == "callagentx2" and row.connected == 2
    assert row.closed == 2 and row.teardown_slow is None
