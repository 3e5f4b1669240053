"""One measurement: N concurrent loopback calls of one implementation.

Runs in its own process (``python -m benchmarks.calls --worker IMPL ...``) so
that the CPU time read from ``resource.getrusage(RUSAGE_SELF)`` — which counts
every thread of the process, including aiortc's encoder/decoder threads —
belongs to these calls and nothing else.

Phases, each bounded in time:

1. ramp: start one call every ``1/rate`` s (open loop, like a call generator)
   and time each from offer creation to both sides connected (``setup_ms``);
2. warm-up: let every call reach steady media;
3. window: ``seconds`` of steady state; CPU time, RTP packets received and
   event-loop lag are read at both ends of it;
4. teardown: every call is closed, all at once, each within ``teardown_s``
   (which grows with the number of calls); how many closed goes into the
   result, which is then printed as one JSON line.

A watchdog thread ends the process after ``budget_s`` whatever happens. It
prints the measurement if the window completed (the row is kept, marked
"teardown slow"), otherwise a "did not finish" line naming the phase it
was stuck in.
"""

from __future__ import annotations

import asyncio
import cProfile
import importlib
import json
import logging
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

logger = logging.getLogger(__name__)

IMPLS = ("callagent", "aiortc")
#: 20 ms Opus: packets per second per direction
EXPECTED_PPS = 50
#: per-call errors kept in the result (the rest are only counted)
MAX_ERRORS_KEPT = 5
#: closing one call takes the loop ~10-50 ms on a busy 2-core host (DTLS
#: close_notify, transports, media tasks); 150+ calls per worker need their share
TEARDOWN_BASE_S = 5.0
TEARDOWN_PER_CALL_S = 0.1
#: what a close that ignored its timeout's cancellation may still take
CANCEL_GRACE_S = 1.0
#: interpreter start and imports, before the watchdog's timer can start
STARTUP_S = 10.0
#: slack for the loop running late between phases on a saturated host
SLACK_S = 20.0
LAG_PROBE_INTERVAL_S = 0.05


class BenchCall(Protocol):
    """What the harness needs from one call of either implementation."""

    async def connect(self, timeout_s: float) -> None: ...
    async def packets_received(self) -> int: ...
    def frames_decoded(self) -> int | None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerSpec:
    impl: str
    calls: int
    seconds: float
    warmup_s: float
    rate: float
    setup_timeout_s: float
    #: write a cProfile of the event-loop thread over the window here
    profile_path: str | None = None

    @property
    def teardown_s(self) -> float:
        """How long closing every call may take (they close concurrently)."""
        return TEARDOWN_BASE_S + self.calls * TEARDOWN_PER_CALL_S

    @property
    def budget_s(self) -> float:
        """Wall-time ceiling for the whole worker (the watchdog's timer)."""
        ramp = self.calls / self.rate
        measuring = ramp + self.setup_timeout_s + self.warmup_s + self.seconds
        return STARTUP_S + measuring + SLACK_S + self.teardown_s + CANCEL_GRACE_S


@dataclass
class WorkerResult:
    impl: str
    calls: int
    connected: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    setup_ms: list[float] = field(default_factory=list)
    window_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    cores: float | None = None
    cores_per_call: float | None = None
    rx_pps_per_direction: float | None = None
    expected_pps_per_direction: int = EXPECTED_PPS
    decoded_fps_per_direction: float | None = None
    loop_lag_p95_ms: float | None = None
    loop_lag_max_ms: float | None = None
    peak_rss_mb: float = 0.0
    threads: int = 0
    #: cores used by every *other* process on the machine during the window
    background_cores: float | None = None
    fatal: str | None = None
    profiled: bool = False
    #: calls closed within ``teardown_s``, of ``calls`` (None: teardown never ended)
    closed: int | None = None
    teardown_s: float | None = None
    #: set when teardown did not end cleanly; the measurement still stands
    teardown_slow: str | None = None
    benchmark: str = "calls"

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; with one value, that value."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


class LoopLagProbe:
    """How late the event loop wakes a 50 ms sleeper: the saturation signal.

    A loop with spare capacity wakes it within a millisecond or two; a loop that
    cannot keep up with its callbacks wakes it tens of ms late.
    """

    def __init__(self, max_samples: int) -> None:
        self.lags_ms: list[float] = []
        self._max_samples = max_samples
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self._max_samples):
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            late = loop.time() - before - LAG_PROBE_INTERVAL_S
            self.lags_ms.append(max(late, 0.0) * 1000)


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``), if known.

    Read around the window so a run on a shared machine says how much of the
    CPU other processes took: a contended window makes every number worse.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest is inside user)
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _load_impl(impl: str) -> Callable[[int], BenchCall]:
    """Import only the implementation measured, so RSS is its own."""
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r} (choose from {IMPLS})")
    module: Any = importlib.import_module(f"benchmarks.impl_{impl}")
    module.prepare()
    factory: Callable[[int], BenchCall] = module.new_call
    return factory


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def _start_call(
    factory: Callable[[int], BenchCall], index: int, timeout_s: float
) -> tuple[BenchCall | None, float | None, str | None]:
    try:
        call = factory(index)
    except Exception as exc:  # report in the table, never a traceback
        return None, None, f"creating call {index}: {_describe(exc)}"
    started = time.perf_counter()
    try:
        await asyncio.wait_for(call.connect(timeout_s), timeout_s)
    except TimeoutError:
        return call, None, f"call {index}: not connected after {timeout_s:.0f} s"
    except Exception as exc:  # report in the table, never a traceback
        return call, None, f"call {index}: {_describe(exc)}"
    return call, (time.perf_counter() - started) * 1000, None


async def _total_received(calls: list[BenchCall]) -> int:
    return sum([await call.packets_received() for call in calls])


def _total_decoded(calls: list[BenchCall]) -> int | None:
    counts = [call.frames_decoded() for call in calls]
    return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


async def _close(call: BenchCall, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await call.close()
    except TimeoutError:
        return False
    except Exception as exc:  # counted as not closed; detail on stderr
        logger.warning("closing a call: %s", _describe(exc))
        return False
    return True


async def teardown(calls: list[BenchCall], timeout_s: float) -> int:
    """Close ``calls`` concurrently, each within ``timeout_s``; how many closed.

    Bounded even if a close swallows its cancellation: what has not ended
    ``CANCEL_GRACE_S`` after the timeout is left behind (the worker process
    ends with ``os._exit`` anyway).
    """
    if not calls:
        return 0
    tasks = [asyncio.create_task(_close(call, timeout_s)) for call in calls]
    done, pending = await asyncio.wait(tasks, timeout=timeout_s + CANCEL_GRACE_S)
    for task in pending:
        task.cancel()
    return sum(1 for task in done if task.result())


class Progress:
    """Which phase the worker is in, for the watchdog's "did not finish" line.

    Written by the event loop, read by the watchdog thread: plain attribute
    stores, so a read sees a whole value.
    """

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.phase = "starting"
        self.started = 0
        self.settled = 0

    def describe(self) -> str:
        if self.phase in ("ramp", "setup"):
            return (
                f"{self.phase}: {self.started}/{self.calls} calls started, "
                f"{self.settled} connected or failed"
            )
        return self.phase


async def _window(
    spec: WorkerSpec, connected: list[BenchCall], result: WorkerResult
) -> None:
    """Warm-up, then the measurement window over ``connected``, into ``result``."""
    await asyncio.sleep(spec.warmup_s)
    probe = LoopLagProbe(max_samples=int(spec.seconds / LAG_PROBE_INTERVAL_S) + 10)
    received_before = await _total_received(connected)
    decoded_before = _total_decoded(connected)
    machine_before = machine_busy_seconds()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.perf_counter()
    probe.start()
    profiler = cProfile.Profile() if spec.profile_path else None
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(spec.seconds)
    if profiler is not None:
        profiler.disable()
    wall_after = time.perf_counter()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    machine_after = machine_busy_seconds()
    await probe.stop()
    if profiler is not None and spec.profile_path:
        profiler.dump_stats(spec.profile_path)
        result.profiled = True
    received_after = await _total_received(connected)
    decoded_after = _total_decoded(connected)

    window = wall_after - wall_before
    streams = 2 * len(connected)
    result.window_s = round(window, 3)
    result.cpu_user_s = round(usage_after.ru_utime - usage_before.ru_utime, 3)
    result.cpu_sys_s = round(usage_after.ru_stime - usage_before.ru_stime, 3)
    cores = (result.cpu_user_s + result.cpu_sys_s) / window
    result.cores = round(cores, 3)
    result.cores_per_call = round(cores / len(connected), 4)
    if machine_before is not None and machine_after is not None:
        machine = (machine_after - machine_before) / window
        result.background_cores = round(max(machine - cores, 0.0), 2)
    result.rx_pps_per_direction = round(
        (received_after - received_before) / streams / window, 2
    )
    if decoded_before is not None and decoded_after is not None:
        result.decoded_fps_per_direction = round(
            (decoded_after - decoded_before) / streams / window, 2
        )
    if probe.lags_ms:
        result.loop_lag_p95_ms = round(percentile(probe.lags_ms, 0.95), 2)
        result.loop_lag_max_ms = round(max(probe.lags_ms), 2)


async def measure(spec: WorkerSpec, reporter: Reporter) -> None:
    """Run the phases of the module docstring; ``reporter`` gets the result."""
    result = WorkerResult(impl=spec.impl, calls=spec.calls)
    progress = reporter.progress
    factory = _load_impl(spec.impl)

    async def start(index: int) -> tuple[BenchCall | None, float | None, str | None]:
        outcome = await _start_call(factory, index, spec.setup_timeout_s)
        progress.settled += 1
        return outcome

    progress.phase = "ramp"
    tasks = []
    for index in range(spec.calls):
        tasks.append(asyncio.create_task(start(index)))
        progress.started += 1
        if index + 1 < spec.calls:
            await asyncio.sleep(1 / spec.rate)
    progress.phase = "setup"
    outcomes = await asyncio.gather(*tasks)
    every_call = [call for call, _, _ in outcomes if call is not None]
    connected = [
        call for call, ms, _ in outcomes if call is not None and ms is not None
    ]
    errors = [error for _, _, error in outcomes if error is not None]
    result.connected = len(connected)
    result.setup_ms = [round(ms, 2) for _, ms, _ in outcomes if ms is not None]
    result.errors = errors[:MAX_ERRORS_KEPT]
    result.error_count = len(errors)
    try:
        if connected:
            progress.phase = "measurement window"
            await _window(spec, connected, result)
        # ru_maxrss is in KiB on Linux
        result.peak_rss_mb = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        result.threads = threading.active_count()
        reporter.measured(result)
    finally:
        progress.phase = f"teardown of {len(every_call)} calls"
        began = time.perf_counter()
        closed = await teardown(every_call, spec.teardown_s)
    result.closed = closed
    result.teardown_s = round(time.perf_counter() - began, 2)
    if closed < len(every_call):
        result.teardown_slow = (
            f"{len(every_call) - closed} of {len(every_call)} calls "
            f"not closed within {spec.teardown_s:.0f} s"
        )
    reporter.emit(result)


class Reporter:
    """Prints exactly one result line, from the loop or from the watchdog."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._lock = threading.Lock()
        self._measured: WorkerResult | None = None
        self.progress = Progress(spec.calls)
        self.done = False

    def measured(self, result: WorkerResult) -> None:
        """The window completed: from now on a failure still prints ``result``."""
        self._measured = replace(result)

    def emit(self, result: WorkerResult) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
            sys.stdout.write(result.to_json() + "\n")
            sys.stdout.flush()

    def fail(self, message: str) -> None:
        measured = self._measured
        if measured is not None:
            # Only what came after the window went wrong: its numbers stand.
            self.emit(replace(measured, teardown_slow=message))
            return
        result = WorkerResult(impl=self._spec.impl, calls=self._spec.calls)
        result.fatal = message
        self.emit(result)


def run_worker(spec: WorkerSpec) -> int:
    """Entry point of the worker process; always ends the process itself."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    reporter = Reporter(spec)

    def give_up() -> None:
        reporter.fail(
            f"worker did not finish within {spec.budget_s:.0f} s "
            f"(in {reporter.progress.describe()})"
        )
        os._exit(3)

    watchdog = threading.Timer(spec.budget_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    code = 0
    # Not asyncio.run: its shutdown waits for every task left behind to handle
    # its cancellation, unbounded; the process ends below instead.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(measure(spec, reporter))
    except Exception as exc:  # one line for the parent's table, detail on stderr
        logger.exception("worker failed")
        reporter.fail(_describe(exc))
        code = 1
    if not reporter.done:
        reporter.fail("worker ended without a result")
        code = 1
    watchdog.cancel()
    sys.stdout.flush()
    sys.stderr.flush()
    # aiortc's decoder threads are not daemons; a call that did not close
    # cleanly must not keep the worker (and so the parent) alive.
    os._exit(code)
