"""``callagent fleet --ray auto|ADDRESS --shards N SCENARIO...``: a run on a Ray
cluster, one shard per Ray worker, merged into one report.

Theory of operation
-------------------
Ray only places and starts the shards; each shard is the ordinary primitive,
``callagent run --shard I/N --seed S --run-id R --report …`` (a subprocess in
an async actor, so the shard has its own process, event loop and signal
handling exactly as on Kubernetes or by hand), and the reports come back to
the driver, which merges them (:mod:`agent.report.merge`).

* **No automatic retries.** Actors are created with ``max_restarts=0`` and
  ``max_task_retries=0``: a call replayed after a node died is load outside the
  test window, and a dead node is a finding. Its shard is reported missing
  (``complete: false``, ``shards.missing``), never re-run. Dask, Celery and arq
  were measured re-running a dead worker's calls 8-37 s later, which is why
  this is Ray with retries off and not one of them.
* **One wall-clock start.** The actors are created and awaited first (a Ray
  cluster takes seconds to start a worker), then every shard is handed the
  same start moment (``--start-at``, epoch seconds) a few seconds ahead; a
  shard loads its files and waits for it, so the shards' calls begin together
  and a ramp means the same thing across the fleet.
* **Files travel with the task.** The scenario files are read here and written
  into each actor's temporary directory in the same order (the order numbers
  the calls, and so decides the shards), so the cluster's machines need
  callagent installed but not the files.
* Ctrl-C: each actor is told to stop, which sends its shard SIGTERM; the
  shard hangs up, writes the calls that finished, and the driver merges what
  came back (``complete: false``).

Ray is an optional extra (``pip install callagent[ray]``); without it the
command says so in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.cli.interrupts import INTERRUPTS
from agent.cli.load import new_run_id, write_merged
from agent.cli.outputs import output_path
from agent.errors import UsageError
from agent.report.merge import merge_reports
from agent.scenario.fields import MAX_SEED
from agent.scenario.loader import load_scenarios

__all__ = ["add_fleet_parser", "cmd_fleet"]

#: Seconds between "every actor is up" and the shards' common start.
START_LEAD_S = 3.0
#: After Ctrl-C, how long the shards get to hang up and hand in their reports.
STOP_GRACE_S = 30.0


def add_fleet_parser(sub: Any) -> None:
    fleet = sub.add_parser(
        "fleet", help="run scenarios as N shards on a Ray cluster, one merged report"
    )
    fleet.add_argument("scenarios", nargs="+", type=Path)
    fleet.add_argument(
        "--ray",
        required=True,
        metavar="auto|ADDRESS",
        help="the Ray cluster: auto (the one this machine belongs to) or HOST:PORT",
    )
    fleet.add_argument(
        "--shards", type=int, required=True, help="shards, one per Ray worker"
    )
    fleet.add_argument("--seed", type=int, help="the run's seed (default: random)")
    fleet.add_argument("--report", type=output_path, help="write the merged report")
    fleet.add_argument("--junit", type=output_path, help="also write JUnit XML")
    fleet.add_argument("--openmetrics", type=output_path, help="also Prometheus text")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(
            "callagent fleet --ray needs Ray: pip install 'callagent[ray]'"
        ) from None
    return ray


def cmd_fleet(args: argparse.Namespace, console: Console) -> int:
    if not 1 <= args.shards <= 1024:
        raise UsageError(f"--shards must be from 1 to 1024, got {args.shards}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be from 0 to {MAX_SEED}")
    scenarios = load_scenarios(args.scenarios)  # bad files fail here, once
    files: list[tuple[str, str]] = []
    for number, scenario in enumerate(scenarios):
        source = scenario.source
        if source is None:  # pragma: no cover - loaded from files
            raise UsageError(f"scenario {scenario.name} has no file")
        files.append((f"{number:03d}-{Path(source.path).name}", source.text))
    seed = args.seed if args.seed is not None else random.randrange(MAX_SEED)
    run_id = new_run_id(seed)
    ray = _import_ray()
    try:
        ray.init(
            address=args.ray,
            logging_level="WARNING",
            log_to_driver=False,
            runtime_env=_runtime_env(),
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray {args.ray}: cannot connect: {exc}") from exc
    try:
        reports = _run_shards(ray, args.shards, files, seed, run_id, console)
    finally:
        ray.shutdown()
    if not reports:
        raise UsageError("no shard reported; nothing to merge")
    merged = merge_reports(reports, count=args.shards)
    code = write_merged(merged, args, console)
    return 130 if INTERRUPTS.received else code


def _runtime_env() -> dict[str, Any]:
    # The workers run this same callagent: hand on where it is imported from.
    path = os.environ.get("PYTHONPATH")
    return {"env_vars": {"PYTHONPATH": path}} if path else {}


def _run_shards(
    ray: Any,
    count: int,
    files: list[tuple[str, str]],
    seed: int,
    run_id: str,
    console: Console,
) -> list[tuple[str, dict[str, Any]]]:
    actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ShardActor)
    actors = [
        actor_class.options(scheduling_strategy="SPREAD").remote() for _ in range(count)
    ]
    hosts = ray.get([actor.host.remote() for actor in actors])
    console.print(f"fleet: {count} shards on {', '.join(hosts)}")
    start_at = time.time() + START_LEAD_S
    refs = [
        actor.run.remote(files, f"{i}/{count}", seed, run_id, start_at)
        for i, actor in enumerate(actors)
    ]
    shard_of_ref = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    stopping_since: float | None = None
    while pending:
        if INTERRUPTS.received and stopping_since is None:
            stopping_since = time.monotonic()
            # Not ray.cancel: a cancelled task's return value is lost, and
            # the shard's finished calls are in it.
            for ref in pending:
                actors[shard_of_ref[ref]].stop.remote()
        if stopping_since and time.monotonic() - stopping_since > STOP_GRACE_S:
            break
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
    reports: list[tuple[str, dict[str, Any]]] = []
    for ref, i in shard_of_ref.items():
        if ref in pending:
            continue
        try:
            outcome = ray.get(ref)
        except Exception as exc:  # a dead actor/node: a missing shard
            name = type(exc).__name__
            console.print(f"fleet: shard {i}/{count} never reported: {name}")
            continue
        if outcome["report"] is None:
            console.print(
                f"fleet: shard {i}/{count} wrote no report (exit {outcome['exit']}): "
                f"{outcome['stderr'][-300:]}"
            )
            continue
        reports.append((f"shard {i}/{count}", json.loads(outcome["report"])))
    for actor in actors:
        ray.kill(actor, no_restart=True)
    return reports


class ShardActor:
    """One shard on a Ray worker (an async actor: the shard's wait and the
    subprocess run without holding a Ray worker thread)."""

    def __init__(self) -> None:
        self._proc: Any = None

    async def stop(self) -> None:
        import contextlib
        import signal

        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)

    async def host(self) -> str:
        import socket

        return f"{socket.gethostname()}:{os.getpid()}"

    async def run(
        self,
        files: list[tuple[str, str]],
        shard: str,
        seed: int,
        run_id: str,
        start_at: float,
    ) -> dict[str, Any]:
        import asyncio
        import sys
        import tempfile

        with tempfile.TemporaryDirectory(prefix="callagent-shard-") as tmp:
            paths = _write_files(tmp, files)
            report = Path(tmp, "report.json")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent.cli",
                "run",
                *paths,
                "--shard",
                shard,
                "--seed",
                str(seed),
                "--run-id",
                run_id,
                "--start-at",
                f"{start_at:.3f}",
                "--workers",
                "1",
                "--quiet",
                "--report",
                str(report),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            self._proc = proc
            _, stderr = await proc.communicate()
            return {
                "report": _read_if_there(report),
                "exit": proc.returncode,
                "stderr": stderr.decode("utf-8", "replace"),
            }


def _write_files(directory: str, files: list[tuple[str, str]]) -> list[str]:
    paths = []
    for name, text in files:
        path = Path(directory, name)
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def _read_if_there(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None
