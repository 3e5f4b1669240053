"""The ``callagent`` command line.

::

    callagent run SCENARIO... [--report R.json] [--junit J.xml] [--openmetrics M.prom]
    callagent check SCENARIO...        validate scenario files, run nothing
    callagent report out.json [--timeline] [--junit F] [--openmetrics F]
    callagent steps                    list the scenario steps this build knows
    callagent call URL [--scenario F] [--token T] [--report R.json]   WHIP client
    callagent serve [--listen H:P] [--token T] [--report-dir D]       WHIP endpoint

Exit codes: 0 every expectation met, 1 some failed (or a call errored),
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
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioice
import aiortc
from rich.console import Console
from rich.live import Live
from rich.table import Table

import agent
from agent.call.calls import Call, CallConfig, LoopbackCall
from agent.call.remote import WhipClientCall
from agent.cli.serve import add_serve_parser, cmd_serve
from agent.errors import AgentError, ScenarioError
from agent.report.junit import junit_xml
from agent.report.openmetrics import report_metrics_text
from agent.report.schema import ReportError, Verdict, call_verdict, load_report
from agent.report.table import render_results, render_timeline
from agent.report.writer import ReportWriter, write_text_atomic
from agent.scenario.loader import load_scenarios, parse_scenario
from agent.scenario.model import Scenario
from agent.scenario.runner import RunProgress, ScenarioRunner
from agent.scenario.steps import STEPS

logger = logging.getLogger("agent.cli")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        "--report", type=Path, help="write the JSON report here (atomically, per call)"
    )
    run.add_argument("--junit", type=Path, help="also write JUnit XML here")
    run.add_argument("--openmetrics", type=Path, help="also write Prometheus text here")
    run.add_argument(
        "--seed", type=int, help="seed for every random choice (recorded in the report)"
    )
    run.add_argument(
        "--quiet", action="store_true", help="no live progress, only the results table"
    )

    check = sub.add_parser("check", help="validate scenario files without running them")
    check.add_argument("scenarios", nargs="+", type=Path)

    report = sub.add_parser("report", help="show a saved JSON report")
    report.add_argument("path", type=Path)
    report.add_argument(
        "--timeline", action="store_true", help="print each call's event timeline"
    )
    report.add_argument("--junit", type=Path)
    report.add_argument("--openmetrics", type=Path)

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
    call.add_argument("--report", type=Path, help="write the JSON report here")
    call.add_argument("--junit", type=Path, help="also write JUnit XML here")
    call.add_argument("--openmetrics", type=Path, help="also write Prometheus text")
    call.add_argument("--seed", type=int, help="seed for every random choice")
    call.add_argument("--quiet", action="store_true", help="no live progress")

    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    except AgentError as exc:
        if args.debug:
            logger.exception("failed")
        print(f"callagent: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, ScenarioError) else exc.exit_code
    except KeyboardInterrupt:
        print("callagent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Directories expand to their *.yaml files, sorted, so a suite is a folder."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise ScenarioError(
                    "directory has no .yaml scenario files", path=str(path)
                )
            out.extend(found)
        else:
            out.append(path)
    return out


def run_metadata(seed: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "tool": f"callagent {agent.__version__}",
        "run_id": now.strftime("%Y%m%dT%H%M%SZ") + f"-{seed:08x}"[-5:],
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
    scenarios = load_scenarios(expand_paths(args.scenarios))
    return await run_scenarios(args, console, scenarios)


async def run_scenarios(
    args: argparse.Namespace,
    console: Console,
    scenarios: list[Scenario],
    call_factory: Callable[[CallConfig], Call] = LoopbackCall,
) -> int:
    """Run ``scenarios`` on calls from ``call_factory``; report, render, exit code.

    Shared by ``run`` (loopback calls) and ``call`` (the agent as WHIP client).
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

    def on_result(result: dict[str, Any]) -> None:
        report["calls"].append(result)
        if writer is not None:
            keep_writing(lambda: writer.add_call(result))

    runner = ScenarioRunner(
        seed=args.seed,
        on_result=on_result,
        progress=progress,
        call_factory=call_factory,
    )
    meta = run_metadata(runner.seed)
    report.update(meta)
    if writer is not None:
        writer.begin(meta)

    interrupted: str | None = None
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    with _cancel_on_signals(loop, main_task):
        live = not args.quiet and console.is_terminal
        try:
            with _progress_display(console, progress, enabled=live):
                await runner.run(scenarios)
        except asyncio.CancelledError:
            interrupted = "SIGINT"
            if main_task is not None:
                main_task.uncancel()
    if writer is not None:
        keep_writing(lambda: writer.finish(interrupted=interrupted))
        report = writer.report
    else:
        report.update(complete=interrupted is None, interrupted=interrupted)
    render_results(report, console)
    if args.junit:
        write_text_atomic(args.junit, junit_xml(report))
    if args.openmetrics:
        write_text_atomic(args.openmetrics, report_metrics_text(report))
    if args.report:
        lost = " NOT written (see above)" if write_error else ""
        console.print(f"report: {args.report}{lost}")
    if interrupted:
        print(
            "callagent: interrupted; the report holds the calls that finished",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failed = [c for c in report["calls"] if call_verdict(c) is not Verdict.PASS]
    return EXIT_FAILED if failed or write_error else EXIT_OK


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
def _cancel_on_signals(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None
) -> Iterator[None]:
    """SIGINT/SIGTERM cancel the run; calls hang up and their results are kept."""
    if task is None:
        yield
        return
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, task.cancel)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


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
    scenarios = load_scenarios(expand_paths(args.scenarios))
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
    table = Table(title="scenario steps")
    for column in ("do", "side", "parameters", "what it does"):
        table.add_column(column)
    for name, step in sorted(STEPS.items()):
        params = ", ".join(step.Params.model_fields) or "-"
        table.add_row(name, step.side, params, step.summary)
    console.print(table)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
