"""``callagent matrix --target T``: the resilience matrix of one far end.

::

    callagent matrix --target browser:firefox [--scenarios DIR]
                     [--report M.json] [--markdown M.md] [--junit M.xml]

Runs the field-cause scenarios written for remote far ends (``scenarios/
matrix/`` by default) against ``T`` and prints cause x outcome
(:mod:`agent.targets.matrix`). A scenario the target cannot perform is a
**REFUSED** row with the reason, not a failed call. Exit 0 when every row is
PASS, REFUSED or XFAIL (failed as the target's capabilities say it must),
1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.cli.lab import lab_preflight
from agent.cli.outputs import output_path
from agent.cli.targeting import check_targets
from agent.errors import ScenarioError
from agent.report.writer import write_text_atomic
from agent.scenario.fields import MAX_SEED
from agent.scenario.loader import load_scenarios
from agent.scenario.model import Scenario
from agent.targets.matrix import (
    CAUSES,
    COLUMNS,
    MatrixRow,
    cell,
    matrix_json,
    matrix_junit,
    matrix_markdown,
    row_of,
    shortfall,
)
from agent.targets.spec import Target, TargetError, parse_target

__all__ = ["add_matrix_parser", "add_target_options", "cmd_matrix"]

#: The matrix scenarios shipped with callagent.
MATRIX_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "matrix"

RunScenarios = Callable[..., Awaitable[int]]
EXIT_INTERRUPTED = 130


def target_arg(text: str) -> Target:
    try:
        return parse_target(text)
    except TargetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seed_arg(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be a whole number between 0 and {MAX_SEED}, got {text[:40]!r}"
        )
    return int(text)


def add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        type=target_arg,
        help="the far end: agent (default), whip+http(s)://HOST/PATH, "
        "browser:chromium, browser:firefox, janus (launched in the kernel lab), "
        "janus+http(s)://HOST:PORT/janus[?admin=URL&secret=S] "
        "(overrides a file's target:)",
    )
    if not any(a.dest == "token" for a in parser._actions):
        parser.add_argument(
            "--token",
            default=os.environ.get("CALLAGENT_TOKEN"),
            help="bearer token for a WHIP target (default: $CALLAGENT_TOKEN)",
        )


def add_matrix_parser(sub: Any) -> None:
    matrix = sub.add_parser(
        "matrix",
        help="run the field-cause scenarios against a far end: cause x outcome",
    )
    add_target_options(matrix)
    matrix.add_argument(
        "--scenarios",
        type=Path,
        default=MATRIX_DIR,
        help=f"the matrix scenarios (default: {MATRIX_DIR})",
    )
    matrix.add_argument("--report", type=output_path, help="the matrix as JSON")
    matrix.add_argument("--markdown", type=output_path, help="the matrix as Markdown")
    matrix.add_argument("--junit", type=output_path, help="the matrix as JUnit XML")
    matrix.add_argument("--seed", type=seed_arg, help="seed for every random choice")
    matrix.add_argument("--quiet", action="store_true", help="no live progress")


def _refusal(scenario: Scenario, target: Target) -> str | None:
    try:
        check_targets([scenario], target)
    except ScenarioError as exc:
        first = exc.lines()[0]
        return first.split("refuses it: ", 1)[-1]
    return None


async def cmd_matrix(
    args: argparse.Namespace, console: Console, run_scenarios: RunScenarios
) -> int:
    target: Target = args.target or parse_target(None)
    scenarios = load_scenarios([args.scenarios])
    refused = {s.name: why for s in scenarios if (why := _refusal(s, target))}
    runnable = [s for s in scenarios if s.name not in refused]
    # A far end that lives in the kernel lab (janus, gstreamer): one line if it cannot.
    lab_preflight(runnable, getattr(args, "lab", None), target=target)
    calls: list[dict[str, Any]] = []
    run_code = 0
    if runnable:
        run_args = argparse.Namespace(**vars(args))
        # The matrix writes its own outputs; the call report stays in memory.
        run_args.report = run_args.junit = run_args.openmetrics = None
        run_code = await run_scenarios(run_args, console, runnable, reports=calls)
    by_name = {
        str(call.get("scenario")): call
        for report in calls
        for call in report.get("calls", [])
    }
    rows: list[MatrixRow] = []
    for scenario in scenarios:
        cause = CAUSES.get(scenario.name, scenario.name)
        if scenario.name in refused:
            rows.append(
                MatrixRow(
                    scenario.name, cause, verdict="REFUSED", note=refused[scenario.name]
                )
            )
            continue
        call = by_name.get(scenario.name)
        if call is None:  # interrupted before it ran
            rows.append(MatrixRow(scenario.name, cause, note="did not run"))
            continue
        rows.append(
            row_of(
                call,
                cause=cause,
                shortfall=shortfall(scenario.name, target),
                passed=bool(call.get("expectations", {}).get("passed")),
            )
        )
    table = Table(title=f"resilience matrix: {target}")
    for _, title in COLUMNS:
        table.add_column(title)
    for row in rows:
        table.add_row(*(cell(row, name) for name, _ in COLUMNS))
    console.print(table)
    if args.markdown:
        write_text_atomic(args.markdown, matrix_markdown(target, rows))
    if args.report:
        all_calls = [c for report in calls for c in report.get("calls", [])]
        write_text_atomic(args.report, matrix_json(target, rows, all_calls))
    if args.junit:
        write_text_atomic(args.junit, matrix_junit(target, rows))
    if run_code == EXIT_INTERRUPTED:
        return run_code  # the matrix so far is printed and written
    bad = [row for row in rows if row.verdict in ("FAIL", "ERROR")]
    return 1 if bad else 0
