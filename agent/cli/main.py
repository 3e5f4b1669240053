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
import logging
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from agent.cli.fleet import cmd_fleet
from agent.cli.interrupts import INTERRUPTS
from agent.cli.lab import cmd_lab, lab_preflight
from agent.cli.load import cmd_merge
from agent.cli.matrix import cmd_matrix
from agent.cli.outputs import check_output_dir, check_output_file
from agent.cli.parser import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, build_parser
from agent.cli.run import (
    cmd_call,
    cmd_run,
    run_exit_code,
    run_metadata,
    run_scenarios,
)
from agent.cli.serve import cmd_serve
from agent.cli.targeting import check_targets
from agent.errors import AgentError, ScenarioError
from agent.report.junit import junit_xml
from agent.report.openmetrics import report_metrics_text
from agent.report.schema import load_report
from agent.report.table import render_results, render_timeline
from agent.report.writer import write_text_atomic
from agent.scenario.loader import load_scenarios
from agent.scenario.steps import STEPS
from agent.scenario.steps_net import fault_of, step_signature

# build_parser and run_exit_code: importable from here as before the split.
__all__ = [
    "build_parser",
    "cmd_check",
    "cmd_report",
    "cmd_steps",
    "main",
    "run_exit_code",
]

logger = logging.getLogger("agent.cli")

#: Options naming a file the command writes; checked before anything runs.
OUTPUT_FILE_OPTIONS = {
    "report": "--report",
    "junit": "--junit",
    "openmetrics": "--openmetrics",
}
OUTPUT_DIR_OPTIONS = {"report_dir": "--report-dir"}


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
