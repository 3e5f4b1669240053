"""Verdicts on a busy host: scenarios run again and again beside CPU burners.

::

    python -m benchmarks.busy_host          # 3 scenarios x 5 runs, 2 burners
    python -m benchmarks.busy_host --runs 3 --burners 1 scenarios/baseline.yaml

A verdict is a claim about the network and the far end, never about our own
host (DESIGN.md, "Verdicts"). This runs ``baseline``, ``ice_restart_caller``
and ``nat_timeout_fixed`` (or the scenarios given) ``--runs`` times each, one
``callagent run`` at a time, while ``--burners`` pure-Python busy loops run
beside them in their own processes, each wanting a whole core: the machine has
2, so the agent competes for every millisecond. Then it prints, per scenario,
how many calls ended in each verdict (whatever values the reports hold:
``pass``, ``fail``, ``inconclusive``, ``error``).

The verdict is the report's ``verdict`` field where a call has one; a report
without it gets the one ``callagent report`` derives (pass / fail / error). A
run that wrote no report counts as ``no_report``. Exits 1 when any call ended
in ``fail``, ``error`` or ``no_report``, else 0. The burners are started only
once the arguments are checked and are always stopped (``finally``), and the
CPU seconds they burned are printed, so the load is a measured fact.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from agent.errors import AgentError
from agent.report.schema import call_verdict
from agent.scenario.loader import load_scenario

__all__ = ["burners", "main", "run_verdicts"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIOS = ("baseline", "ice_restart_caller", "nat_timeout_fixed")
#: the verdicts always shown, even at zero; any other value gets its own column
SHOWN = ("pass", "fail", "inconclusive")
BAD = ("fail", "error", "no_report")
_BURN = "while True:\n    pass\n"
_STOP_S = 5.0


@contextmanager
def burners(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` busy-loop processes, each a whole core's worth, always stopped."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", _BURN]))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=_STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[11], fields[12] are utime and stime (stat(5) fields 14 and 15).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_verdicts(scenario: Path, report: Path) -> tuple[list[str], int]:
    """Run one scenario once; the verdict of each call, and callagent's exit code."""
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "run",
            str(scenario),
            "--report",
            str(report),
            "--quiet",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
    )
    try:
        calls = json.loads(report.read_text())["calls"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["no_report"], done.returncode
    verdicts = []
    for call in calls:
        given = call.get("verdict")
        verdicts.append(
            str(given).lower() if given else call_verdict(call).value.lower()
        )
    return verdicts, done.returncode


def _scenario_paths(names: Sequence[str]) -> list[Path]:
    paths = []
    for name in names:
        path = Path(name)
        if not path.exists() and not path.suffix:
            path = REPO / "scenarios" / f"{name}.yaml"
        load_scenario(path)  # bad input: one clear line, before any burner starts
        paths.append(path)
    return paths


def _table(counts: dict[str, Counter[str]], exits: dict[str, Counter[int]]) -> str:
    extra = sorted({v for c in counts.values() for v in c} - set(SHOWN))
    columns = [*SHOWN, *extra]
    width = max(len(name) for name in counts)
    lines = [
        f"{'scenario':<{width}}  "
        + "  ".join(f"{c:>12}" for c in columns)
        + "  exit codes"
    ]
    for name, counter in counts.items():
        codes = " ".join(f"{code}x{n}" for code, n in sorted(exits[name].items()))
        cells = "  ".join(f"{counter.get(c, 0):>12}" for c in columns)
        lines.append(f"{name:<{width}}  {cells}  {codes}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.busy_host", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=list(DEFAULT_SCENARIOS),
        help="files or built-in names",
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per scenario (default 5)"
    )
    parser.add_argument(
        "--burners", type=int, default=2, help="CPU-burning processes (default 2)"
    )
    parser.add_argument(
        "--out", type=Path, help="keep the reports here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burners < 0:
        parser.error("--runs must be at least 1 and --burners at least 0")
    try:
        paths = _scenario_paths(args.scenarios)
    except AgentError as exc:
        print(f"busy_host: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="busy-host-"))
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter[str]] = {p.stem: Counter() for p in paths}
    exits: dict[str, Counter[int]] = {p.stem: Counter() for p in paths}
    started = time.monotonic()
    with burners(args.burners) as procs:
        for run in range(1, args.runs + 1):
            for path in paths:
                verdicts, code = run_verdicts(path, out / f"{path.stem}-{run}.json")
                counts[path.stem].update(verdicts)
                exits[path.stem][code] += 1
                print(
                    f"run {run}/{args.runs} {path.stem}:",
                    " ".join(verdicts),
                    f"(exit {code})",
                    flush=True,
                )
        burned = [cpu_seconds(p.pid) for p in procs if p.poll() is None]
    elapsed = time.monotonic() - started
    print(_table(counts, exits))
    load = (
        f"{sum(burned):.0f} CPU s in {len(burned)} burners" if burned else "no burners"
    )
    print(f"{elapsed:.0f} s wall, {load}, {os.cpu_count()} CPUs; reports: {out}")
    return 1 if any(c.get(bad, 0) for c in counts.values() for bad in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
