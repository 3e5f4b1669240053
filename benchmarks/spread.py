"""One benchmark level spread over W worker processes (``--workers``).

``callagent run --workers W`` splits a run's calls over W processes, one event
loop (one core) each; this measures the same thing for the benchmark: W
measuring workers (:mod:`benchmarks.worker`) started together, each with its
share of the calls and of the ramp rate, and their results combined into one
row. CPU and memory add up; the packet rate is the mean over all calls; the
event-loop lag is the worst worker's (a call on the slowest loop is what a
test would see fail).
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from benchmarks.worker import MAX_ERRORS_KEPT, WorkerResult, WorkerSpec

__all__ = ["combine", "label", "split"]


def split(spec: WorkerSpec, workers: int) -> list[WorkerSpec]:
    """The specs of ``workers`` processes sharing ``spec``'s calls and rate."""
    workers = max(1, min(workers, spec.calls))
    shares = [
        spec.calls // workers + (i < spec.calls % workers) for i in range(workers)
    ]
    return [replace(spec, calls=share, rate=spec.rate / workers) for share in shares]


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def combine(label: str, results: list[WorkerResult]) -> WorkerResult:
    """One row for ``results`` of processes that ran at the same time."""
    if len(results) == 1:
        return replace(results[0], impl=label)
    connected = sum(r.connected for r in results)
    cores = sum(r.cores or 0.0 for r in results)
    weighted = [
        (r.rx_pps_per_direction, r.connected)
        for r in results
        if r.rx_pps_per_direction is not None and r.connected
    ]
    rx = (
        sum(value * n for value, n in weighted) / sum(n for _, n in weighted)
        if weighted
        else None
    )
    # Each worker counts the others as "background"; take them out again.
    backgrounds = [
        r.background_cores - (cores - (r.cores or 0.0))
        for r in results
        if r.background_cores is not None
    ]
    fatal = "; ".join(r.fatal for r in results if r.fatal) or None
    closed = [r.closed for r in results]
    teardowns = [r.teardown_s for r in results if r.teardown_s is not None]
    return WorkerResult(
        impl=label,
        calls=sum(r.calls for r in results),
        connected=connected,
        errors=[e for r in results for e in r.errors][:MAX_ERRORS_KEPT],
        error_count=sum(r.error_count for r in results),
        setup_ms=[ms for r in results for ms in r.setup_ms],
        window_s=max(r.window_s for r in results),
        cpu_user_s=sum(r.cpu_user_s for r in results),
        cpu_sys_s=sum(r.cpu_sys_s for r in results),
        cores=cores if any(r.cores is not None for r in results) else None,
        cores_per_call=cores / connected if connected else None,
        rx_pps_per_direction=rx,
        loop_lag_p95_ms=_max([r.loop_lag_p95_ms for r in results]),
        loop_lag_max_ms=_max([r.loop_lag_max_ms for r in results]),
        peak_rss_mb=sum(r.peak_rss_mb for r in results),
        threads=sum(r.threads for r in results),
        background_cores=(
            max(0.0, statistics.mean(backgrounds)) if backgrounds else None
        ),
        fatal=fatal,
        profiled=any(r.profiled for r in results),
        closed=None if None in closed else sum(c or 0 for c in closed),
        teardown_s=max(teardowns) if len(teardowns) == len(results) else None,
        teardown_slow="; ".join(r.teardown_slow for r in results if r.teardown_slow)
        or None,
    )


def label(impl: str, workers: int) -> str:
    return impl if workers == 1 else f"{impl}x{workers}"
