"""Load options of ``callagent run`` and the ``merge`` command.

::

    callagent run SCENARIO... [--workers N] [--shard I/N --seed S]
                  [--scenarios-at-once K] [--metrics-listen HOST:PORT]
    callagent merge shard-*.json [--report R.json] [--junit J] [--openmetrics M]

``--workers`` spreads one run over processes (:mod:`agent.cli.workers`);
``--shard`` runs one part of a run that other machines run the rest of, and
``merge`` puts their reports back together (:mod:`agent.report.merge`). The
README's "Load and fleets" section says when to use which.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from agent.cli.outputs import output_path
from agent.cli.serve import ServeError, check_listen_host, listen_address
from agent.cli.workers import WorkerOutcome, default_workers
from agent.errors import UsageError
from agent.report.junit import junit_xml
from agent.report.merge import merge_reports
from agent.report.openmetrics import CallMetricsCollector, report_metrics_text
from agent.report.schema import Verdict, call_verdict, load_report
from agent.report.table import render_results
from agent.report.writer import write_json_atomic, write_text_atomic
from agent.scenario.runner import Shard

__all__ = [
    "WORKER_OWN_OPTIONS",
    "add_load_options",
    "add_merge_parser",
    "cmd_merge",
    "live_metrics",
    "new_run_id",
    "option_argv",
    "per_worker_at_once",
    "shard_arg",
    "shards_entry",
    "worker_argv",
    "worker_shard",
]


#: Scenarios side by side per worker by default. All 17 of the quick start's
#: suite at once on a busy 2-core machine left three with an unexplained
#: ~90 ms media gap (their fault steps and everyone's handshakes landed on
#: the same cores at once); two per worker, longest first, finishes the suite
#: in about the time of its longest scenario all the same (benchmarks/README.md).
SCENARIOS_PER_WORKER = 2


def new_run_id(seed: int) -> str:
    """``20261123T121500Z-ab12``: the start time and the seed's last digits;
    every shard of a fleet run is given the one id."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{seed:08x}"[-5:]


def shard_arg(text: str) -> Shard:
    """argparse ``type=`` for ``I/N``: shard I (from 0) of N."""
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected I/N like 0/4, got {text[:40]!r}")
    try:
        return Shard(int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text}: I must be from 0 to N-1 (shards are numbered from 0)"
        ) from None


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to 1024, got {text[:40]!r}"
        )
    return int(text)


def add_load_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="processes to spread the calls over, one event loop each "
        f"(default: the cores, here {default_workers()})",
    )
    run.add_argument(
        "--shard",
        type=shard_arg,
        help="run only the calls whose index is I mod N (a fleet's part; "
        "needs --seed); put the parts together with `callagent merge`",
    )
    run.add_argument(
        "--scenarios-at-once",
        type=_positive,
        default=None,
        help=f"scenarios that run at the same time (default: {SCENARIOS_PER_WORKER}"
        " per worker, longest first; 1: one after the other, as listed)",
    )
    run.add_argument(
        "--metrics-listen",
        type=listen_address,
        help="serve Prometheus /metrics on HOST:PORT while the run goes",
    )
    # A shared run id for the shards of one fleet run; set by `fleet`.
    run.add_argument("--run-id", help=argparse.SUPPRESS)
    # Wait for this wall-clock moment (epoch s) before the first call: the
    # shards of a fleet start together (set by `fleet`).
    run.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    # A worker of --workers: JSON lines to the parent instead of a table.
    run.add_argument("--worker-stream", action="store_true", help=argparse.SUPPRESS)


def worker_shard(shard: Shard | None, worker: int, workers: int) -> Shard:
    """Worker ``worker``'s part of ``shard``: the run-wide indices that are
    ``shard.index`` mod ``shard.count`` split ``workers`` ways."""
    outer = shard or Shard()
    return Shard(outer.index + outer.count * worker, outer.count * workers)


def per_worker_at_once(at_once: int, workers: int) -> int:
    return max(1, math.ceil(at_once / workers))


#: ``run`` options (by ``dest``) that a worker does not take from its parent's
#: command line, and why. Every other ``run`` option is handed on as parsed:
#: what each call is (its far end, its network, a future knob) must be the
#: parent's, or the workers place other calls than a one-worker run would.
#: tests/cli/test_load.py fails for an option that is neither.
WORKER_OWN_OPTIONS: dict[str, str] = {
    "help": "not an option of the run",
    "scenarios": "the parent's files, handed on first",
    "shard": "the worker's part of the parent's shard",
    "seed": "the parent's seed, also when the parent chose it",
    "run_id": "the parent's run id, also when the parent chose it",
    "workers": "1: a worker does not spread further",
    "scenarios_at_once": "the worker's share of the parent's",
    "start_at": "the parent's one start moment, also when the parent chose it",
    "worker_stream": "always: a worker reports to its parent",
    "quiet": "always: the parent shows the progress",
    "report": "the parent writes the one report",
    "junit": "the parent writes it from the one report",
    "openmetrics": "the parent writes it from the one report",
    "metrics_listen": "the parent serves every worker's calls",
}


def _written(value: Any) -> str:
    # A value shown otherwise than it was written (a Janus target leaves its
    # admin secret out when printed) says how to write it again.
    as_argument = getattr(value, "as_argument", None)
    return str(as_argument() if callable(as_argument) else value)


def option_argv(action: argparse.Action, value: Any) -> list[str]:
    """The command-line words that parse back to ``value`` for ``action``."""
    flag = max(action.option_strings, key=len)
    if value is None:
        return []
    if isinstance(action, argparse.BooleanOptionalAction):
        negative = [o for o in action.option_strings if o.startswith("--no-")]
        positive = [o for o in action.option_strings if o not in negative]
        return [max(positive if value else negative, key=len)]
    if isinstance(action, argparse._CountAction):
        return [flag] * int(value)
    if action.nargs == 0:  # store_true, store_false, store_const
        return [] if value == action.default else [flag]
    if action.nargs is None and type(action) is argparse._AppendAction:
        return [word for item in value for word in (flag, _written(item))]
    if action.nargs is None and type(action) is argparse._StoreAction:
        return [flag, _written(value)]
    raise TypeError(
        f"{flag}: a worker cannot be handed this kind of option; teach "
        "agent.cli.load.option_argv, or list it in WORKER_OWN_OPTIONS"
    )


def worker_argv(
    run: argparse.ArgumentParser,
    args: argparse.Namespace,
    worker: int,
    workers: int,
    seed: int,
    run_id: str,
) -> list[str]:
    """``callagent`` arguments of worker ``worker``: the parent's files,
    seed and run id, its shard, the stream to the parent, and every other
    option of ``run`` (the ``run`` command's parser) as the parent got it."""
    argv = ["--debug"] if args.debug else []
    argv += ["run", *map(str, args.scenarios)]
    argv += ["--shard", str(worker_shard(args.shard, worker, workers))]
    argv += ["--seed", str(seed), "--run-id", run_id, "--workers", "1"]
    if args.start_at is not None:
        argv += ["--start-at", str(args.start_at)]
    for action in run._actions:
        if action.dest not in WORKER_OWN_OPTIONS:
            argv += option_argv(action, getattr(args, action.dest, None))
    at_once = args.scenarios_at_once or SCENARIOS_PER_WORKER * workers
    argv += ["--scenarios-at-once", str(per_worker_at_once(at_once, workers))]
    return [*argv, "--worker-stream", "--quiet"]


def shards_entry(outcomes: Sequence[WorkerOutcome]) -> dict[str, Any]:
    """The report's ``shards`` for a multi-worker run."""
    return {
        "count": len(outcomes),
        "reported": [o.index for o in outcomes if o.ended],
        "missing": [o.index for o in outcomes if not o.ended],
        "incomplete": [o.index for o in outcomes if o.ended and o.interrupted],
    }


def lost_workers(outcomes: Iterable[WorkerOutcome]) -> str | None:
    """``interrupted`` for workers that died before their last call, or None."""
    lost = [
        f"worker {o.index} exited ({o.exit_code}) before reporting all its calls"
        for o in outcomes
        if not o.ended
    ]
    return "; ".join(lost) or None


@contextlib.contextmanager
def live_metrics(
    listen: tuple[str, int] | None,
    calls: Callable[[], Iterable[Mapping[str, Any]]],
    run: Callable[[], Mapping[str, Any]],
    console: Console,
) -> Iterator[None]:
    """``/metrics`` (the names ``serve`` uses) on ``listen`` while in the block."""
    if listen is None:
        yield
        return
    host, port = listen
    try:
        # Read-only figures, no call placing: any address of this host is fine.
        check_listen_host(host, token=False, open_=True)
    except ServeError as exc:
        raise UsageError(str(exc).replace("--listen", "--metrics-listen")) from exc
    registry = CollectorRegistry()
    registry.register(CallMetricsCollector(calls, run=run))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(
            f"--metrics-listen {host}:{port}: cannot listen: {exc.strerror or exc}"
        ) from exc
    where = f"[{host}]" if ":" in host else host
    console.print(f"metrics: http://{where}:{server.server_port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- callagent merge ------------------------------------------------------------


def add_merge_parser(sub: Any) -> None:
    merge = sub.add_parser(
        "merge",
        help="merge shard reports (run --shard I/N) into one report",
    )
    merge.add_argument("shards", nargs="+", type=Path, help="shard report files")
    merge.add_argument("--report", type=output_path, help="write the merged report")
    merge.add_argument("--junit", type=output_path, help="also write JUnit XML")
    merge.add_argument("--openmetrics", type=output_path, help="also Prometheus text")


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when every shard reported complete and every call passed."""
    merged = merge_reports([(str(path), load_report(path)) for path in args.shards])
    return write_merged(merged, args, console)


def write_merged(
    merged: Mapping[str, Any], args: argparse.Namespace, console: Console
) -> int:
    render_results(merged, console)
    if args.report:
        write_json_atomic(args.report, merged)
    if args.junit:
        write_text_atomic(args.junit, junit_xml(merged))
    if args.openmetrics:
        write_text_atomic(args.openmetrics, report_metrics_text(merged))
    shards = merged.get("shards") or {}
    if shards.get("missing"):
        missing = ", ".join(f"{i}/{shards['count']}" for i in shards["missing"])
        console.print(
            f"[bold red]missing shards: {missing}[/] "
            "(their calls are not in the report)"
        )
    if args.report:
        console.print(f"report: {args.report}")
    failed = [c for c in merged["calls"] if call_verdict(c) is not Verdict.PASS]
    return 1 if failed or not merged.get("complete") else 0
