"""``callagent run`` and ``callagent call``: place the calls, report, exit code.

:func:`run_scenarios` is the one loop every calling command goes through:
``run`` (each scenario's target, in this process or spread over workers),
``call`` (the agent as WHIP client) and ``matrix``. It writes the report call
by call, shows the live progress, serves ``--metrics-listen``, and turns the
verdicts into the exit code (README, "Exit codes").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aioice
import aiortc
from rich.console import Console
from rich.live import Live
from rich.table import Table

import agent
from agent.call.calls import Call, CallConfig
from agent.call.remote import WhipClientCall
from agent.cli.interrupts import INTERRUPTS, Interrupts
from agent.cli.lab import lab_preflight
from agent.cli.load import (
    SCENARIOS_PER_WORKER,
    live_metrics,
    lost_workers,
    new_run_id,
    shards_entry,
    worker_argv,
)
from agent.cli.parser import (
    EXIT_FAILED,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    build_parser,
    subcommand,
)
from agent.cli.resources import ResourceSampler
from agent.cli.targeting import check_targets
from agent.cli.workers import WorkerOutcome, WorkerStream, default_workers, run_workers
from agent.errors import UsageError
from agent.report.junit import junit_xml
from agent.report.openmetrics import report_metrics_text
from agent.report.schema import ReportError, Verdict, call_verdict
from agent.report.table import render_results
from agent.report.writer import ReportWriter, write_text_atomic
from agent.scenario.loader import load_scenarios, parse_scenario
from agent.scenario.model import Scenario
from agent.scenario.runner import (
    WHOLE_RUN,
    RunProgress,
    ScenarioRunner,
    Shard,
    shard_plan,
)

__all__ = [
    "cmd_call",
    "cmd_run",
    "run_exit_code",
    "run_metadata",
    "run_scenarios",
]

#: Seconds from spawning the workers to their common start.
WORKERS_START_LEAD_S = 2.5


def run_metadata(seed: int, run_id: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "tool": f"callagent {agent.__version__}",
        "run_id": run_id or new_run_id(seed),
        "started_at": now.isoformat().replace("+00:00", "Z"),
        "seed": seed,
        "host": {
            "python": platform.python_version(),
            "aiortc": aiortc.__version__,
            "aioice": aioice.__version__,
            "platform": platform.platform(),
        },
    }


async def cmd_run(args: argparse.Namespace, console: Console) -> int:
    if args.shard is not None and args.seed is None:
        raise UsageError(
            "--shard needs --seed: every shard must derive the same call seeds"
        )
    scenarios = load_scenarios(args.scenarios)
    check_targets(scenarios, args.target)  # before any call (exit 2)
    lab_preflight(scenarios, args.lab, target=args.target)
    return await run_scenarios(args, console, scenarios)


async def run_scenarios(
    args: argparse.Namespace,
    console: Console,
    scenarios: list[Scenario],
    call_factory: Callable[[CallConfig], Call] | None = None,
    reports: list[dict[str, Any]] | None = None,
) -> int:
    """Run ``scenarios`` on calls from ``call_factory``; report, render, exit code.

    Shared by ``run`` (calls to each scenario's target), ``call`` (the agent as
    WHIP client) and ``matrix``. No ``call_factory``: by target.
    """
    progress = RunProgress()
    report: dict[str, Any] = {"version": 1, "calls": []}
    writer = ReportWriter(args.report) if args.report else None

    # D15: a report write that fails mid-run (disk full) must not lose a
    # finished call: the writer keeps every call in memory, the run goes on,
    # and the results are printed. Said once, in one line.
    write_error: list[str] = []  # the last write's failure, if it failed
    warned: list[bool] = []  # the one line was printed

    def keep_writing(write: Callable[[], None]) -> None:
        try:
            write()
        except ReportError as exc:
            if not warned:
                warned.append(True)
                print(
                    f"callagent: {exc}; results are kept in memory and printed",
                    file=sys.stderr,
                )
            write_error[:] = [str(exc)]
        else:
            write_error.clear()  # the last write has everything

    # ``call`` (WHIP client) has none of the load options.
    stream = WorkerStream() if getattr(args, "worker_stream", False) else None

    def on_result(result: dict[str, Any], encoded: str | None = None) -> None:
        # ``encoded``: a worker's call, as its JSON came (see ReportWriter).
        report["calls"].append(result)
        if stream is not None:
            stream.call(result)
        if writer is not None:
            keep_writing(lambda: writer.add_call(result, encoded=encoded))
            if writer.dirty:
                flush_later(writer)

    # A big report is rewritten at most every so often (agent.report.writer):
    # the calls that waited go to disk when the wait is over.
    flushing: list[asyncio.TimerHandle] = []

    def flush_later(writer: ReportWriter) -> None:
        if flushing:
            return

        def flush() -> None:
            flushing.clear()
            keep_writing(writer.flush)
            if writer.dirty and not writer.finished:
                flush_later(writer)

        delay = writer.flush_in()
        flushing.append(asyncio.get_running_loop().call_later(delay, flush))

    runner = ScenarioRunner(
        seed=args.seed,
        on_result=on_result,
        progress=progress,
        call_factory=call_factory,
        target=getattr(args, "target", None),
        token=getattr(args, "token", None),
        lab=getattr(args, "lab", None),
    )
    shard: Shard | None = getattr(args, "shard", None)
    workers = getattr(args, "workers", 1) or default_workers()
    calls = sum(len(i) for _, i in shard_plan(scenarios, shard or WHOLE_RUN))
    # No idle processes: a one-call run stays in this one.
    workers = max(1, min(workers, calls))
    at_once = getattr(args, "scenarios_at_once", 1) or SCENARIOS_PER_WORKER * workers
    meta = run_metadata(runner.seed, getattr(args, "run_id", None))
    if shard is not None and stream is None:
        meta["shard"] = {"index": shard.index, "count": shard.count}
    if workers > 1:
        meta["workers"] = workers
    report.update(meta)
    if writer is not None:
        writer.begin(meta)
    resources: list[dict[str, Any]] = []
    sampler = ResourceSampler(
        on_sample=resources.append if stream is None else stream.resource
    )
    outcomes: list[WorkerOutcome] = []

    async def execute() -> None:
        start_at = getattr(args, "start_at", None)
        if start_at is not None and workers == 1:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        if workers == 1:
            await runner.run(
                scenarios, shard=shard or WHOLE_RUN, scenarios_at_once=at_once
            )
            return
        progress.total = calls
        if getattr(args, "start_at", None) is None:
            # One wall-clock start for every worker, so a ramp counts from the
            # same moment in each (a worker's imports take a second or two).
            args.start_at = time.time() + WORKERS_START_LEAD_S
        outcomes[:] = [WorkerOutcome(i) for i in range(workers)]
        run_parser = subcommand(build_parser(), "run")
        await run_workers(
            lambda i: worker_argv(
                run_parser, args, i, workers, runner.seed, meta["run_id"]
            ),
            outcomes,
            progress=progress,
            on_call=on_result,
            on_resource=resources.append,
        )

    interrupted: str | None = None
    main_task = asyncio.current_task()
    with (
        _cancel_on_signals(main_task) as signals,
        live_metrics(
            getattr(args, "metrics_listen", None),
            lambda: list(report["calls"]),
            lambda: {**meta, "complete": False},
            console,
        ),
    ):
        live = not args.quiet and console.is_terminal
        try:
            async with sampler.running():
                if stream is not None:
                    async with stream.reporting(progress):
                        await execute()
                else:
                    with _progress_display(console, progress, enabled=live):
                        await execute()
        except asyncio.CancelledError:
            interrupted = signals.received or "SIGINT"
            if main_task is not None:
                main_task.uncancel()
    signalled = interrupted
    lost_calls = lost_workers(outcomes)
    if lost_calls:
        interrupted = f"{interrupted}; {lost_calls}" if interrupted else lost_calls
    if stream is not None:
        stream.end(interrupted)
        return EXIT_INTERRUPTED if signalled else EXIT_OK
    extra: dict[str, Any] = {"resources": resources}
    if outcomes:
        extra["shards"] = shards_entry(outcomes)
    if writer is not None:
        for key, value in extra.items():
            writer.set_field(key, value)
        for pending in flushing:
            pending.cancel()
        keep_writing(lambda: writer.finish(interrupted=interrupted))
        report = writer.report
    else:
        report.update(extra, complete=interrupted is None, interrupted=interrupted)
    render_results(report, console)
    if reports is not None:  # matrix: the calls, for its own outputs
        reports.append(report)
    if args.junit:
        write_text_atomic(args.junit, junit_xml(report))
    if args.openmetrics:
        write_text_atomic(args.openmetrics, report_metrics_text(report))
    if args.report:
        unwritten = " NOT written (see above)" if write_error else ""
        console.print(f"report: {args.report}{unwritten}")
    if lost_calls:
        print(f"callagent: {lost_calls}; the report is incomplete", file=sys.stderr)
    if signalled:
        print(
            "callagent: interrupted; the report holds the calls that finished",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return run_exit_code(
        report["calls"], write_failed=bool(write_error) or bool(lost_calls)
    )


def run_exit_code(calls: list[dict[str, Any]], *, write_failed: bool = False) -> int:
    """0 all passed; 3 all passed or were inconclusive, some inconclusive (the
    agent stalled: a busy host is not a failed call); 1 otherwise."""
    verdicts = [call_verdict(c) for c in calls]
    if write_failed or any(
        v not in (Verdict.PASS, Verdict.INCONCLUSIVE) for v in verdicts
    ):
        return EXIT_FAILED
    return EXIT_INCONCLUSIVE if Verdict.INCONCLUSIVE in verdicts else EXIT_OK


async def cmd_call(args: argparse.Namespace, console: Console) -> int:
    if args.scenario is not None:
        scenarios = load_scenarios([args.scenario])
    else:
        scenarios = [
            parse_scenario(
                f"name: whip-call\nduration: {args.duration}\n", "--duration"
            )
        ]
    url, token = args.url, args.token
    # Fail on a malformed URL before anything is written or bound.
    WhipClientCall.check_url(url)

    def whip_call(config: CallConfig) -> Call:
        return WhipClientCall(config, url, token=token)

    code = await run_scenarios(args, console, scenarios, whip_call)
    return code


@contextlib.contextmanager
def _cancel_on_signals(task: asyncio.Task[Any] | None) -> Iterator[Interrupts]:
    """SIGINT/SIGTERM cancel the run; calls hang up and their results are kept.
    ``received`` names the signal, for the report's ``interrupted``."""
    with INTERRUPTS.installed():  # already, under main(); not when embedded
        if task is None:
            yield INTERRUPTS
            return
        with INTERRUPTS.cancelling(task):
            yield INTERRUPTS


@contextlib.contextmanager
def _progress_display(
    console: Console, progress: RunProgress, *, enabled: bool
) -> Iterator[None]:
    if not enabled:
        yield
        return

    def render() -> Table:
        table = Table(
            title=f"callagent: {progress.done}/{progress.total} calls done",
            expand=False,
        )
        for column in ("call", "state", "elapsed / total", "verdict"):
            table.add_column(column)
        for call in progress.calls.values():
            table.add_row(
                call.call_id,
                call.state,
                f"{call.elapsed_s:5.1f} / {call.total_s:.0f} s",
                call.verdict or "",
            )
        return table

    with Live(render(), console=console, refresh_per_second=4, transient=True) as live:
        task = asyncio.get_event_loop().create_task(_refresh(live, render))
        try:
            yield
        finally:
            task.cancel()


async def _refresh(live: Live, render: Any) -> None:
    while True:
        live.update(render())
        await asyncio.sleep(0.25)
