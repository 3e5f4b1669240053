"""The ``callagent`` command line.

::

    callagent run SCENARIO... [--report R.json] [--junit J.xml] [--openmetrics M.prom]
    callagent check SCENARIO...        validate scenario files, run nothing
    callagent matrix --target T        the resilience matrix of a far end
    (run/check/matrix: --target agent|whip+http(s)://…|browser:chromium|firefox|
     janus|janus+http(s)://…/janus)
    callagent report out.json [--timeline] [--junit F] [--openmetrics F]
    callagent steps                    list the scenario steps this build knows
    callagent call URL [--scenario F] [--token T] [--report R.json]   WHIP client
    callagent serve [--listen H:P] [--token T] [--report-dir D]       WHIP endpoint
    callagent lab up SCENARIO | lab clean     the kernel network lab by hand

Exit codes: 0 every expectation met, 1 some failed (or a call errored),
3 none failed but the agent was too stalled to judge some (INCONCLUSIVE),
2 bad input (the one-line message names file, line and field), 130 interrupted.
Errors are one sentence on stderr, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import aioice
import aiortc
from rich.console import Console
from rich.live import Live
from rich.table import Table

import agent
from agent.call.calls import Call, CallConfig
from agent.call.remote import WhipClientCall
from agent.cli.fleet import add_fleet_parser, cmd_fleet
from agent.cli.interrupts import INTERRUPTS, Interrupts
from agent.cli.lab import add_lab_parser, cmd_lab, lab_preflight
from agent.cli.load import (
    SCENARIOS_PER_WORKER,
    add_load_options,
    add_merge_parser,
    cmd_merge,
    live_metrics,
    lost_workers,
    new_run_id,
    shards_entry,
    worker_argv,
)
from agent.cli.matrix import add_matrix_parser, add_target_options, cmd_matrix
from agent.cli.outputs import check_output_dir, check_output_file, output_path
from agent.cli.resources import ResourceSampler
from agent.cli.serve import add_serve_parser, cmd_serve
from agent.cli.targeting import check_targets
from agent.cli.workers import WorkerOutcome, WorkerStream, default_workers, run_workers
from agent.errors import AgentError, ScenarioError, UsageError
from agent.report.junit import junit_xml
from agent.report.openmetrics import report_metrics_text
from agent.report.schema import ReportError, Verdict, call_verdict, load_report
from agent.report.table import render_results, render_timeline
from agent.report.writer import ReportWriter, write_text_atomic
from agent.scenario.fields import MAX_SEED
from agent.scenario.loader import load_scenarios, parse_scenario
from agent.scenario.model import Scenario
from agent.scenario.runner import (
    WHOLE_RUN,
    RunProgress,
    ScenarioRunner,
    Shard,
    shard_plan,
)
from agent.scenario.steps import STEPS
from agent.scenario.steps_net import fault_of, step_signature

logger = logging.getLogger("agent.cli")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: every call passed or was inconclusive, and at least one was inconclusive
EXIT_INCONCLUSIVE = 3
#: Seconds from spawning the workers to their common start.
WORKERS_START_LEAD_S = 2.5

#: Options naming a file the command writes; checked before anything runs.
OUTPUT_FILE_OPTIONS = {
    "report": "--report",
    "junit": "--junit",
    "openmetrics": "--openmetrics",
}
OUTPUT_DIR_OPTIONS = {"report_dir": "--report-dir"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other bad input; the usage is one --help away.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text[:40]!r}"
        ) from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and {MAX_SEED}, got {seed}"
        )
    return seed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="callagent",
        description="WebRTC test-call agent: real DTLS-SRTP/ICE calls, counting "
        "DTLS rehandshakes and ICE restarts.",
    )
    parser.add_argument(
        "--version", action="version", version=f"callagent {agent.__version__}"
    )
    parser.add_argument(
        "--debug", action="store_true", help="verbose logs and tracebacks"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run scenario files (placing real calls)")
    run.add_argument(
        "scenarios", nargs="+", type=Path, help="scenario files or directories"
    )
    run.add_argument(
        "--report",
        type=output_path,
        help="write the JSON report here (atomically, per call)",
    )
    run.add_argument("--junit", type=output_path, help="also write JUnit XML here")
    run.add_argument(
        "--openmetrics", type=output_path, help="also write Prometheus text here"
    )
    run.add_argument(
        "--seed",
        type=_seed,
        help="seed for every random choice (recorded in the report)",
    )
    run.add_argument(
        "--quiet", action="store_true", help="no live progress, only the results table"
    )
    add_target_options(run)
    run.add_argument(
        "--lab",
        choices=["kernel"],
        help="run every call in a kernel network lab (namespaces, nftables NAT, "
        "conntrack; needs root) instead of the files' network.lab",
    )
    add_load_options(run)

    check = sub.add_parser("check", help="validate scenario files without running them")
    check.add_argument("scenarios", nargs="+", type=Path)
    add_target_options(check)
    check.add_argument(
        "--lab",
        choices=["kernel"],
        help="also check that the kernel lab can run them (refusals, root)",
    )
    add_lab_parser(sub)

    report = sub.add_parser("report", help="show a saved JSON report")
    report.add_argument("path", type=Path)
    report.add_argument(
        "--timeline", action="store_true", help="print each call's event timeline"
    )
    report.add_argument("--junit", type=output_path)
    report.add_argument("--openmetrics", type=output_path)

    sub.add_parser("steps", help="list the scenario steps")

    call = sub.add_parser(
        "call",
        help="call a WHIP endpoint (the agent as WHIP client) and run a scenario",
    )
    call.add_argument("url", help="the WHIP endpoint, e.g. http://127.0.0.1:8080/whip")
    call.add_argument(
        "--scenario",
        type=Path,
        help="scenario file whose steps and expectations apply to the call "
        "(default: an ad-hoc call of --duration)",
    )
    call.add_argument(
        "--duration",
        default="10s",
        help="length of an ad-hoc call without --scenario (default 10s)",
    )
    call.add_argument(
        "--token",
        default=os.environ.get("CALLAGENT_TOKEN"),
        help="bearer token for the endpoint (default: $CALLAGENT_TOKEN)",
    )
    call.add_argument("--report", type=output_path, help="write the JSON report here")
    call.add_argument("--junit", type=output_path, help="also write JUnit XML here")
    call.add_argument(
        "--openmetrics", type=output_path, help="also write Prometheus text"
    )
    call.add_argument("--seed", type=_seed, help="seed for every random choice")
    call.add_argument("--quiet", action="store_true", help="no live progress")

    add_serve_parser(sub)
    add_matrix_parser(sub)
    add_merge_parser(sub)
    add_fleet_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with INTERRUPTS.installed():
        try:
            return _main(argv)
        except KeyboardInterrupt:
            # A second Ctrl-C: stop waiting for calls to hang up.
            return _interrupted()


def _interrupted() -> int:
    print("callagent: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of the command, checked before any call is placed."""
    for dest, option in OUTPUT_FILE_OPTIONS.items():
        path = getattr(args, dest, None)
        if path is not None:
            check_output_file(path, option)
    for dest, option in OUTPUT_DIR_OPTIONS.items():
        path = getattr(args, dest, None)
        if path is not None:
            check_output_dir(path, option)


def _interrupted_before_start(args: argparse.Namespace) -> bool:
    # run/call go on: they stop before their first call and write a report
    # marked incomplete (Interrupts.cancelling); the rest just stop.
    return INTERRUPTS.received is not None and args.command not in (
        "run",
        "call",
        "matrix",
    )


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped to a file or a CI log: do not cut the results table to 80
        # columns (rich's default without a terminal).
        console = Console(width=140)
    try:
        check_outputs(args)
        if _interrupted_before_start(args):
            return _interrupted()
        code = _dispatch(args, console)
    except AgentError as exc:
        if args.debug:
            logger.exception("failed")
        for line in exc.lines():
            print(f"callagent: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, ScenarioError) else exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    if INTERRUPTS.received is not None and code != EXIT_INTERRUPTED:
        # Interrupted while the command finished anyway (check, report).
        return _interrupted()
    return code


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "run":
        return asyncio.run(cmd_run(args, console))
    if args.command == "check":
        return cmd_check(args, console)
    if args.command == "report":
        return cmd_report(args, console)
    if args.command == "steps":
        return cmd_steps(console)
    if args.command == "call":
        return asyncio.run(cmd_call(args, console))
    if args.command == "serve":
        return asyncio.run(cmd_serve(args, console, run_metadata))
    if args.command == "matrix":
        return asyncio.run(cmd_matrix(args, console, run_scenarios))
    if args.command == "lab":
        return asyncio.run(cmd_lab(args, console))
    if args.command == "merge":
        return cmd_merge(args, console)
    if args.command == "fleet":
        return cmd_fleet(args, console)
    return EXIT_BAD_INPUT


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

    def on_result(result: dict[str, Any]) -> None:
        report["calls"].append(result)
        if stream is not None:
            stream.call(result)
        if writer is not None:
            keep_writing(lambda: writer.add_call(result))

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
        await run_workers(
            lambda i: worker_argv(args, i, workers, runner.seed, meta["run_id"]),
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


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    scenarios = load_scenarios(args.scenarios)
    check_targets(scenarios, args.target)
    lab_preflight(scenarios, args.lab, here=False, target=args.target)
    for scenario in scenarios:
        console.print(
            f"ok  {scenario.name}: {len(scenario.steps)} steps, {scenario.duration:g} s"
        )
    return EXIT_OK


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    report = load_report(args.path)
    render_results(report, console)
    if args.timeline:
        for call in report.get("calls", []):
            render_timeline(call, console)
    if args.junit:
        write_text_atomic(args.junit, junit_xml(report))
    if args.openmetrics:
        write_text_atomic(args.openmetrics, report_metrics_text(report))
    return EXIT_OK


def cmd_steps(console: Console) -> int:
    # Network fault steps come from the fault registry (agent.net.faults) via
    # agent.scenario.steps_net, so this list cannot miss one.
    table = Table(title="scenario steps")
    for column in ("do", "keys (? optional)", "what it does", "default cause"):
        table.add_column(column)
    for name, step in sorted(STEPS.items()):
        fault = fault_of(name)
        table.add_row(
            name,
            step_signature(step.Params, step.side) or "-",
            step.summary,
            "-" if fault is None else fault.default_cause,
        )
    console.print(table)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
