"""Cross-check each scenario's report against a tcpdump of its call.

::

    python -m benchmarks.wirecheck scenarios/ [--out DIR]
    python -m benchmarks.wirecheck --compare REPORT.json CAPTURE.pcap

For each scenario: capture loopback with ``tcpdump -i lo -w`` (UDP on
127.0.0.0/8), run ``callagent run <scenario> --report`` under it, read the
capture (:mod:`benchmarks.wirecheck_pcap`), work out what the call did on the
wire (:mod:`benchmarks.wirecheck_facts`) and compare it with the report
(:mod:`benchmarks.wirecheck_compare`). Prints one table per scenario and exits
1 when any figure disagrees, 2 when a scenario could not be checked at all.

Isolation: by default each scenario runs in a fresh network namespace
(``unshare --net``, root), so its ``lo`` carries that call and nothing else;
other test calls on the same host use the same 127.0.0.x addresses and would
otherwise share the capture. ``--shared-lo`` captures the host's ``lo``
instead; then only endpoints the report names, or that show one of the call's
ufrags or SSRCs, are counted (see :mod:`benchmarks.wirecheck_facts`).

The capture and the report are kept in ``--out`` (a temp dir if not given),
so a disagreement can be looked at in Wireshark.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.scenario.loader import load_scenario
from benchmarks.wirecheck_compare import (
    Check,
    compare,
    dead_endpoints,
    seed_endpoints,
)
from benchmarks.wirecheck_facts import wire_facts
from benchmarks.wirecheck_pcap import PcapError, read_capture

__all__ = ["ScenarioCheck", "check_capture", "main", "run_captured"]

REPO = Path(__file__).resolve().parent.parent
#: every address a scenario uses is in 127.0.0.0/8; ICMP for port unreachables
CAPTURE_FILTER = "net 127.0.0.0/8 and (udp or icmp)"
#: the agent's default when a report names no scenario file
DEFAULT_GAP_THRESHOLD_MS = 60.0
_TCPDUMP_READY_S = 10.0
#: a bound on one scenario run (the longest built-in lasts 2 minutes)
_RUN_TIMEOUT_S = 900.0
NO_TCPDUMP = "wirecheck: tcpdump is not installed (scripts/setup.sh --dev installs it)"
KERNEL_LAB = (
    "not checked: a kernel-lab call crosses lab namespaces, not lo "
    "(capturing on the lab's links is not implemented)"
)
_DROPPED = re.compile(r"(\d+) packets? dropped by kernel")


@dataclass
class ScenarioCheck:
    name: str
    checks: list[Check] = field(default_factory=list)
    #: why the scenario could not be checked (no report, no capture)
    error: str | None = None

    @property
    def agrees(self) -> bool:
        """No figure differs, except where the wire is blind (``status`` blind)."""
        return self.error is None and all(c.status != "DIFF" for c in self.checks)


def check_capture(
    report_path: Path, pcap_path: Path, name: str | None = None
) -> ScenarioCheck:
    """Compare the first call of a report with a capture."""
    try:
        report = json.loads(report_path.read_text())
        call = report["calls"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return ScenarioCheck(
            name or report_path.stem, error=f"no call in {report_path}: {exc}"
        )
    label = name or str(call.get("scenario") or report_path.stem)
    try:
        packets = list(read_capture(pcap_path))
    except (OSError, PcapError) as exc:
        return ScenarioCheck(label, error=str(exc))
    facts = wire_facts(packets, seed_endpoints(call), dead_endpoints(call))
    result = ScenarioCheck(label, compare(call, facts, _gap_threshold_ms(call)))
    # tcpdump's own account, kept beside the capture: a dropped packet makes
    # every count below it suspect.
    log = pcap_path.with_suffix(".log")
    dropped = _DROPPED.search(log.read_text()) if log.exists() else None
    if dropped is not None:
        lost = int(dropped.group(1))
        result.checks.insert(0, Check("capture_dropped", "0", str(lost), lost == 0))
    return result


def _gap_threshold_ms(call: dict[str, Any]) -> float:
    path = call.get("scenario_file")
    if not path:
        return DEFAULT_GAP_THRESHOLD_MS
    try:
        return float(load_scenario(path).media.gap_threshold_ms)
    except AgentError:
        return DEFAULT_GAP_THRESHOLD_MS


# -- capturing --------------------------------------------------------------


def run_captured(scenario: Path, out: Path, *, netns: bool = True) -> ScenarioCheck:
    """Run one scenario under tcpdump and check its report against the capture."""
    stem = scenario.stem
    # The capture runs with the repository as its working directory.
    scenario, out = scenario.resolve(), out.resolve()
    pcap, report, log = out / f"{stem}.pcap", out / f"{stem}.json", out / f"{stem}.log"
    for stale in (pcap, report):
        stale.unlink(missing_ok=True)
    inner = [sys.executable, "-m", "benchmarks.wirecheck", "--capture-inside"]
    inner += [str(scenario), str(pcap), str(report), str(log)]
    command = ["unshare", "--net", "--", *inner] if netns else inner
    done = subprocess.run(
        command, cwd=REPO, env=_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return ScenarioCheck(stem, error=f"capture failed: {tail}")
    return check_capture(report, pcap, stem)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    return env


def _capture_inside(scenario: str, pcap: str, report: str, log: str) -> int:
    """In the namespace (or on the host): lo up, tcpdump, the run, tcpdump stopped."""
    if shutil.which("tcpdump") is None:
        print(NO_TCPDUMP, file=sys.stderr)
        return 2
    # A new namespace's lo is down; on the host's this is a no-op.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)
    with open(log, "w") as log_file:
        tcpdump = subprocess.Popen(
            [
                *("tcpdump", "-i", "lo", "-n", "-s", "0", "-Z", "root"),
                # Without it, packets still in the ring's last block are lost
                # when tcpdump is stopped (TPACKET_V3 hands over whole blocks).
                "--immediate-mode",
                # 32 MiB of kernel buffer: on a loaded host the default 2 MiB
                # overflowed ("2 packets dropped by kernel" in sbc_failover).
                *("-B", "32768"),
                *("-U", "-w", pcap, CAPTURE_FILTER),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tcpdump.stderr is not None
            ready = tcpdump.stderr.readline()  # "listening on lo, ..." once armed
            log_file.write(ready)
            if "listening on" not in ready:
                print(
                    f"wirecheck: tcpdump did not start: {ready.strip()}",
                    file=sys.stderr,
                )
                return 2
            command = [sys.executable, "-m", "agent.cli", "run", scenario]
            command += ["--report", report, "--quiet"]
            try:
                run = subprocess.run(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=_RUN_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                print(
                    f"wirecheck: {scenario} ran over {_RUN_TIMEOUT_S:.0f} s",
                    file=sys.stderr,
                )
                return 2
            log_file.write(f"callagent exit {run.returncode}\n")
        finally:
            tcpdump.send_signal(signal.SIGINT)
            try:
                _, rest = tcpdump.communicate(timeout=_TCPDUMP_READY_S)
            except subprocess.TimeoutExpired:
                tcpdump.kill()
                _, rest = tcpdump.communicate()
            log_file.write(rest)
    return 0


# -- output -----------------------------------------------------------------


def format_result(result: ScenarioCheck) -> str:
    if result.error is not None:
        return f"{result.name}: ERROR {result.error}"
    blind = sum(c.status == "blind" for c in result.checks)
    verdict = "AGREES" if result.agrees else "DISAGREES"
    lines = [f"{result.name}: {verdict}" + (f" ({blind} blind)" if blind else "")]
    width = max(len(c.name) for c in result.checks)
    for check in result.checks:
        line = f"  {check.status:<5} {check.name:<{width}}  report {check.report:<12}"
        line += f"  wire {check.wire}"
        lines.append(line + (f"  [{check.blind}]" if check.blind else ""))
    return "\n".join(lines)


def _scenario_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        found = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
        for file in found:
            load_scenario(file)  # bad input: one clear line before any capture
            files.append(file)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.wirecheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("scenarios", nargs="*", help="scenario files or directories")
    parser.add_argument(
        "--out", type=Path, help="keep captures and reports here (default: a temp dir)"
    )
    parser.add_argument(
        "--shared-lo", action="store_true", help="capture the host's lo (no namespace)"
    )
    parser.add_argument(
        "--compare", nargs=2, metavar=("REPORT", "PCAP"), help="check an existing pair"
    )
    parser.add_argument("--capture-inside", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.capture_inside:
        return _capture_inside(*args.capture_inside)
    if args.compare:
        results = [check_capture(Path(args.compare[0]), Path(args.compare[1]))]
    else:
        if not args.scenarios:
            parser.error("give scenario files or directories, or --compare REPORT PCAP")
        try:
            files = _scenario_files(args.scenarios)
        except AgentError as exc:
            print(f"wirecheck: {exc}", file=sys.stderr)
            return 2
        if shutil.which("tcpdump") is None:
            print(
                NO_TCPDUMP,
                file=sys.stderr,
            )
            return 2
        netns = not args.shared_lo
        if netns and (os.geteuid() != 0 or shutil.which("unshare") is None):
            print(
                "wirecheck: a network namespace needs root and unshare; "
                "use --shared-lo",
                file=sys.stderr,
            )
            return 2
        out = args.out or Path(tempfile.mkdtemp(prefix="wirecheck-"))
        out.mkdir(parents=True, exist_ok=True)
        results = []
        for file in files:
            if load_scenario(file).network.lab == "kernel":
                # Its calls run in lab namespaces (lan0/wan0 through a NAT
                # namespace), not on the lo this captures: an empty capture
                # would be a false disagreement.
                result = ScenarioCheck(file.stem, error=KERNEL_LAB)
                print(format_result(result), flush=True)
                results.append(result)
                continue
            result = run_captured(file, out, netns=netns)
            print(format_result(result), flush=True)
            results.append(result)
        print(f"captures and reports: {out}")
    if args.compare:
        print(format_result(results[0]))
    agreeing = sum(r.agrees for r in results)
    print(f"{agreeing} of {len(results)} scenarios agree with the wire")
    if any(r.error is not None for r in results):
        return 2
    return 0 if agreeing == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
