"""``callagent lab``: the kernel network lab by hand, and ``--lab kernel``.

::

    callagent lab up SCENARIO     build the scenario's lab, print it, keep it
                                  up until Ctrl-C (or SIGTERM), then remove it
    callagent lab clean           remove every lab namespace left behind (a
                                  SIGKILLed run never reached its ``finally``)

``lab clean`` removes only namespaces named ``ca-<run>-<index>-<role>``
(:func:`agent.net.lab.clean`), nothing else. ``--lab kernel`` on ``run`` and
``check`` (:func:`lab_preflight`) says in one line, exit 2, why the lab cannot
be used: no root/CAP_NET_ADMIN, a missing tool, or a NAT behaviour nftables
cannot express.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.cli.targeting import scenario_target
from agent.errors import UsageError
from agent.net.lab import Lab, Role, clean, unavailable_reason
from agent.scenario.loader import load_scenarios
from agent.scenario.model import Scenario
from agent.scenario.network import kernel_refusal
from agent.targets.janus.launcher import janus_unavailable
from agent.targets.spec import Target, TargetKind

__all__ = ["add_lab_parser", "cmd_lab", "lab_preflight"]

EXIT_OK = 0


def add_lab_parser(sub: Any) -> None:
    lab = sub.add_parser("lab", help="the kernel network lab: up, clean")
    actions = lab.add_subparsers(dest="lab_command", required=True)
    up = actions.add_parser(
        "up", help="build a scenario's lab and keep it up until Ctrl-C"
    )
    up.add_argument("scenario", type=Path)
    actions.add_parser("clean", help="remove every lab namespace left behind")


def lab_preflight(
    scenarios: list[Scenario],
    forced: str | None,
    *,
    here: bool = True,
    target: Target | None = None,
) -> None:
    """Refuse, in one line (UsageError: exit 2), a kernel lab that cannot
    express a scenario or (``here``) cannot be built on this host; nothing
    when no scenario runs in a kernel lab. A target that lives in the lab
    (``janus``, ``gstreamer``: libnice) puts every scenario there, whatever
    ``--lab`` says."""
    kernel = []
    janus_here = False
    for scenario in scenarios:
        far = scenario_target(scenario, target)
        if far.kind is TargetKind.JANUS and not far.needs_lab:
            if (forced or scenario.network.lab) == "kernel":
                raise UsageError(
                    f"{scenario.name}: {far} is reached from this host's "
                    "namespace, not from inside a kernel lab (--target janus "
                    "runs a Janus of callagent's own in the lab)"
                )
            continue
        if far.needs_lab and far.kind is TargetKind.JANUS:
            janus_here = True
            if scenario.network.shared:
                raise UsageError(
                    f"{scenario.name}: --target {far} runs one Janus in each "
                    "call's own lab; network.shared is not supported"
                )
        if far.needs_lab or (forced or scenario.network.lab) == "kernel":
            kernel.append(scenario)
    if not kernel:
        return
    for scenario in kernel:
        reason = kernel_refusal(scenario.network, scenario.calls)
        if reason is not None:
            raise UsageError(f"{scenario.name}: {reason}")
    reason = unavailable_reason() if here else None
    if reason is not None:
        who = "--lab kernel" if forced or not janus_here else "--target janus"
        raise UsageError(f"{who}: {reason}")
    reason = janus_unavailable() if here and janus_here else None
    if reason is not None:
        raise UsageError(reason)


async def cmd_lab(args: argparse.Namespace, console: Console) -> int:
    if args.lab_command == "clean":
        reason = unavailable_reason()
        if reason is not None:
            raise UsageError(f"lab clean: {reason}")
        removed = await clean()
        for name in removed:
            console.print(f"removed {name}")
        if not removed:
            console.print("no lab namespace left behind")
        return EXIT_OK
    return await _lab_up(args.scenario, console)


async def _lab_up(path: Path, console: Console) -> int:
    (scenario,) = load_scenarios([path])[:1]
    lab_preflight([scenario], "kernel")
    nat = scenario.network.nat
    lab = Lab(
        None if nat is None else nat.behavior(),
        max_flows=scenario.network.max_flows,
        nat=nat is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with lab:
            _print_lab(console, scenario, lab)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print(f"lab {lab.topology.run_id} removed")
    return EXIT_OK


def _print_lab(console: Console, scenario: Scenario, lab: Lab) -> None:
    topo = lab.topology
    nat = scenario.network.nat
    inside = "caller" if nat is None else str(nat.side)
    console.print(f"lab {topo.run_id} for {scenario.name} (Ctrl-C removes it)")
    console.print(
        f"  {topo.namespace(Role.INSIDE)}  {topo.inside_ip}/24 on lan0"
        f"   ({inside}; default via {topo.lan.outer.address})"
    )
    console.print(
        f"  {topo.namespace(Role.NAT)}  lan0 {topo.lan.outer.address}/24, "
        f"wan0 {topo.public_ip}/24" + ("  (NAT)" if lab.nat else "  (router, no NAT)")
    )
    console.print(
        f"  {topo.namespace(Role.OUTSIDE)}  {topo.outside_ip}/24 on wan0"
        f"   (far end; default via {topo.public_ip})"
    )
    if lab.max_flows is not None:
        console.print(f"  state table: {lab.max_flows} flows (ct count)")
    for note in lab.ruleset.notes:
        console.print(f"  note: {note}")
    if lab.ruleset.nft:
        console.print("nftables in the nat namespace:")
        console.print(lab.ruleset.nft, markup=False, highlight=False)
    console.print(
        f"try: ip netns exec {topo.namespace(Role.NAT)} conntrack -L; "
        f"ip netns exec {topo.namespace(Role.NAT)} tcpdump -ni wan0 udp"
    )
