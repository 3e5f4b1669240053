"""Call setup time and CPU per concurrent call: callagent vs plain aiortc.

    python -m benchmarks.calls [--calls 1,10,30] [--seconds 10] [--workers 1,2]
                               [--impl callagent,aiortc] [--json out.json]

Every (implementation, concurrency) pair is measured in a fresh subprocess
(:mod:`benchmarks.worker`), one after the other so they never compete for the
CPU; this process only starts them, collects their one-line JSON results and
prints the table. See ``benchmarks/README.md`` for the method and how to read
the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from importlib import metadata
from typing import Any

from benchmarks.spread import combine, label, split
from benchmarks.worker import (
    EXPECTED_PPS,
    IMPLS,
    WorkerResult,
    WorkerSpec,
    percentile,
    run_worker,
)

#: below this share of the expected packet rate an implementation is falling behind
SATURATION_SHARE = 0.95
PARENT_GRACE_S = 10.0
#: a loop that wakes a sleeper later than one packet time (20 ms) is at its edge
LATE_LOOP_MS = 20.0
#: other processes using more than this during a window make it unreliable
CONTENDED_CORES = 0.25


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def _impls(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in IMPLS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown implementation(s) {unknown or text!r}; "
            f"choose from {','.join(IMPLS)}"
        )
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.calls",
        description="Measure call setup time and CPU per concurrent call, "
        "callagent vs plain aiortc, over loopback.",
    )
    parser.add_argument(
        "--calls",
        type=_positive_ints,
        default=[1, 10, 30],
        help="concurrency levels, comma-separated (default 1,10,30)",
    )
    parser.add_argument(
        "--seconds",
        type=_positive_float,
        default=10.0,
        help="steady-state measurement window per level (default 10)",
    )
    parser.add_argument(
        "--impl",
        type=_impls,
        default=list(IMPLS),
        help="implementations, comma-separated (default callagent,aiortc)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_ints,
        default=[1],
        help="processes to spread each level over, comma-separated (default 1; "
        "callagent run --workers uses one per core)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument(
        "--warmup",
        type=_positive_float,
        default=2.0,
        help="seconds between the last call connecting and the window (default 2)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=10.0,
        help="calls started per second during the ramp (default 10)",
    )
    parser.add_argument(
        "--setup-timeout",
        type=_positive_float,
        default=15.0,
        help="seconds one call may take to connect before it counts as failed",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write a cProfile of each worker's window to DIR/IMPL-CALLS.prof "
        "(profiling inflates CPU: do not compare those numbers)",
    )
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--profile-path", help=argparse.SUPPRESS)
    return parser


# -- parent: run workers --------------------------------------------------------
def _worker_command(spec: WorkerSpec) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.calls",
        "--worker",
        spec.impl,
        "--calls",
        str(spec.calls),
        "--seconds",
        str(spec.seconds),
        "--warmup",
        str(spec.warmup_s),
        "--rate",
        str(spec.rate),
        "--setup-timeout",
        str(spec.setup_timeout_s),
    ] + (["--profile-path", spec.profile_path] if spec.profile_path else [])


def _parse_result(stdout: str) -> WorkerResult | None:
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("benchmark") == "calls":
            return WorkerResult(**data)
    return None


def run_one(spec: WorkerSpec, workers: int = 1) -> WorkerResult:
    """Run one level in ``workers`` processes started together; a failure of
    any kind becomes a result row."""
    parts = split(spec, workers)
    timeout = max(part.budget_s for part in parts) + PARENT_GRACE_S
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen(
            _worker_command(part),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for part in parts
    ]
    results = []
    deadline = time.monotonic() + timeout
    for part, proc in zip(parts, procs, strict=True):
        try:
            stdout, stderr = proc.communicate(
                timeout=max(1.0, deadline - time.monotonic())
            )
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
            # Its watchdog may have printed the measurement before it hung.
            measured = _parse_result(stdout)
            killed = f"killed after {timeout:.0f} s"
            results.append(
                WorkerResult(part.impl, part.calls, fatal=killed)
                if measured is None
                else replace(measured, teardown_slow=measured.teardown_slow or killed)
            )
            continue
        result = _parse_result(stdout)
        if result is None:
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            result = WorkerResult(
                part.impl,
                part.calls,
                fatal=f"worker exited {proc.returncode} without a result: {tail}",
            )
        results.append(result)
    return combine(label(spec.impl, len(parts)), results)


# -- report ---------------------------------------------------------------------
def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _saturated(result: WorkerResult) -> bool:
    rx = result.rx_pps_per_direction
    return rx is not None and rx < SATURATION_SHARE * EXPECTED_PPS


def _note(result: WorkerResult) -> str:
    if result.fatal:
        return result.fatal
    notes = []
    if result.error_count:
        notes.append(f"{result.error_count} call(s) failed to connect")
    if _saturated(result):
        notes.append("SATURATED: falling behind real time")
    elif (result.loop_lag_p95_ms or 0) > LATE_LOOP_MS:
        notes.append("edge: loop late by over a packet time")
    if (result.background_cores or 0) > CONTENDED_CORES:
        notes.append("contended: other processes were busy")
    if result.profiled:
        notes.append("profiled (CPU inflated)")
    if result.teardown_slow:
        # The window completed, so the row stands; the process did not end well.
        notes.append(f"teardown slow: {result.teardown_slow}")
    return "; ".join(notes)


COLUMNS = (
    ("impl", "<12"),
    ("calls", ">5"),
    ("ok", ">5"),
    ("setup ms med", ">12"),
    ("p95", ">7"),
    ("cores", ">6"),
    ("cores/call", ">10"),
    ("rx pkt/s/dir", ">14"),
    ("lag p95 ms", ">10"),
    ("RSS MB", ">7"),
    ("bg cores", ">8"),
    ("note", "<0"),
)


def _row(result: WorkerResult) -> list[str]:
    setups = result.setup_ms
    rx = result.rx_pps_per_direction
    rx_text = "-" if rx is None else f"{rx:.1f}/{result.expected_pps_per_direction}"
    return [
        result.impl,
        str(result.calls),
        f"{result.connected}/{result.calls}",
        _fmt(statistics.median(setups) if setups else None, 1),
        _fmt(percentile(setups, 0.95) if setups else None, 1),
        _fmt(result.cores, 2),
        _fmt(result.cores_per_call, 4),
        rx_text,
        _fmt(result.loop_lag_p95_ms, 1),
        _fmt(result.peak_rss_mb or None, 0),
        _fmt(result.background_cores, 2),
        _note(result),
    ]


def format_table(results: list[WorkerResult]) -> str:
    lines = [" ".join(f"{name:{align}}" for name, align in COLUMNS).rstrip()]
    lines.append("-" * len(lines[0]))
    for result in results:
        cells = _row(result)
        lines.append(
            " ".join(
                f"{cell:{align}}"
                for cell, (_, align) in zip(cells, COLUMNS, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def format_comparison(results: list[WorkerResult]) -> list[str]:
    """One line per level measured for both: callagent / aiortc ratios."""
    by_key = {(r.impl, r.calls): r for r in results}
    lines = []
    for calls in sorted({r.calls for r in results}):
        ours, theirs = by_key.get(("callagent", calls)), by_key.get(("aiortc", calls))
        if ours is None or theirs is None:
            continue
        ours_med = statistics.median(ours.setup_ms) if ours.setup_ms else None
        theirs_med = statistics.median(theirs.setup_ms) if theirs.setup_ms else None
        line = (
            f"calls={calls}: callagent/aiortc  CPU per call "
            f"{_ratio(ours.cores_per_call, theirs.cores_per_call)}, "
            f"setup median {_ratio(ours_med, theirs_med)}, "
            f"peak RSS {_ratio(ours.peak_rss_mb or None, theirs.peak_rss_mb or None)}"
        )
        behind = [r.impl for r in (ours, theirs) if _saturated(r)]
        if behind:
            line += (
                f"  ({' and '.join(behind)} saturated: its CPU per call is a floor, "
                "not the cost of keeping up)"
            )
        lines.append(line)
    return lines


def _environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("aiortc", "aioice", "av", "pylibsrtp"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        if len(args.calls) != 1:
            build_parser().error("--worker takes a single --calls value")
        return run_worker(
            WorkerSpec(
                impl=args.worker,
                calls=args.calls[0],
                seconds=args.seconds,
                warmup_s=args.warmup,
                rate=args.rate,
                setup_timeout_s=args.setup_timeout,
                profile_path=args.profile_path,
            )
        )

    specs = [
        (
            WorkerSpec(
                impl=impl,
                calls=calls,
                seconds=args.seconds,
                warmup_s=args.warmup,
                rate=args.rate,
                setup_timeout_s=args.setup_timeout,
                profile_path=(
                    os.path.join(args.profile, f"{impl}-{calls}.prof")
                    if args.profile
                    else None
                ),
            ),
            workers,
        )
        for calls in args.calls
        for workers in args.workers
        for impl in args.impl
    ]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    started = time.perf_counter()
    results = []
    for number, (spec, workers) in enumerate(specs, 1):
        print(
            f"[{number}/{len(specs)}] {label(spec.impl, workers)} "
            f"calls={spec.calls} ...",
            end="",
            file=sys.stderr,
            flush=True,
        )
        began = time.perf_counter()
        results.append(run_one(spec, workers))
        print(f" {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    print(format_table(results))
    comparison = format_comparison(results)
    if comparison:
        print()
        print("\n".join(comparison))
    print(
        f"\nwindow {args.seconds:g} s per level, {os.cpu_count()} CPUs, "
        f"total wall time {elapsed:.1f} s"
    )
    if args.json:
        document = {
            "config": {
                "calls": args.calls,
                "seconds": args.seconds,
                "impl": args.impl,
                "workers": args.workers,
                "warmup_s": args.warmup,
                "rate": args.rate,
                "setup_timeout_s": args.setup_timeout,
            },
            "environment": _environment(),
            "wall_time_s": round(elapsed, 1),
            "results": [result.__dict__ for result in results],
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
    failed = any(r.fatal or r.error_count for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
