"""The ``callagent`` command line's grammar: its commands, options and exit codes.

:func:`build_parser` is the one declaration of every command and option; each
command's module adds its own (``add_*_parser``, ``add_*_options``), and
:mod:`agent.cli.main` dispatches on the parsed ``command``. A ``run`` worker
is handed its parent's options from this same declaration
(:func:`agent.cli.load.worker_argv`), so an option added here reaches it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

import agent
from agent.cli.fleet import add_fleet_parser
from agent.cli.lab import add_lab_parser
from agent.cli.load import add_load_options, add_merge_parser
from agent.cli.matrix import add_matrix_parser, add_target_options
from agent.cli.outputs import output_path
from agent.cli.serve import add_serve_parser
from agent.scenario.fields import MAX_SEED
from agent.stack import fastroute

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INCONCLUSIVE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "build_parser",
    "subcommand",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: every call passed or was inconclusive, and at least one was inconclusive
EXIT_INCONCLUSIVE = 3


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
        "--version",
        action="version",
        version=f"callagent {agent.__version__} ({fastroute.describe()})",
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


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of ``parser``'s command ``name`` (``run``, ``check``, …)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(f"{parser.prog} has no commands")
