"""Real calls in the kernel lab (``--lab kernel``), checked on the wire.

``nat.rebind`` is watched with tcpdump in the NAT namespace: on the outside
link (``wan0``) the caller's public source port changes at the rebind; on the
inside link (``lan0``) the caller's own port never does. The fault events
and the report say the kernel applied it, and the report carries the lab.
Every test leaves ``ip netns list`` as it found it (the ``root_lab`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.net.lab.shell import list_namespaces
from agent.scenario.loader import load_scenarios
from agent.scenario.runner import ScenarioRunner
from tests.support.report_schema import as_report, assert_matches_schema

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("root_lab")]

SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"
#: "12:00:00.000000 IP 198.19.0.1.40000 > 198.19.0.2.5000: UDP, length 100"
_PACKET = re.compile(r" IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+):")


async def _until_nat_is_up(namespace: str, timeout: float = 20.0) -> None:
    """The NAT's ruleset is loaded last when a lab is built: once it lists,
    the links are up. Polled: the lab is built by other processes."""
    async with asyncio.timeout(timeout):
        while True:
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", namespace, "nft", "list", "table", "ip", "calab",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            if await proc.wait() == 0:
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _capture(namespace: str, ifname: str, path: Path) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace,
        "tcpdump", "-i", ifname, "-n", "-U", "-w", str(path), "udp",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        # tcpdump says "listening on ..." once the capture is open.
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=10)
        assert b"listening on" in line, line
        yield
    finally:
        # The lab's teardown ends every process in its namespaces (tcpdump
        # too: -U wrote each packet as it came); otherwise stop it here.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        await asyncio.wait_for(proc.communicate(), timeout=10)


def _packets(path: Path) -> list[tuple[str, int, str, int]]:
    out = subprocess.run(
        ["tcpdump", "-n", "-r", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        match = _PACKET.search(line)
        if match:
            src, sport, dst, dport = match.groups()
            found.append((src, int(sport), dst, int(dport)))
    return found


def _fault_events(call: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        e
        for e in call["events"]
        if e["type"] in ("fault_start", "fault_end") and e["detail"]["fault"] == kind
    ]


async def test_nat_rebind_in_the_kernel_changes_the_public_port_on_the_wire(
    tmp_path: Path,
) -> None:
    (scenario,) = load_scenarios([SCENARIOS / "nat_rebind.yaml"])
    runner = ScenarioRunner(seed=7, lab="kernel", lab_run_id="tcaprebind")
    nat_ns = "ca-tcaprebind-0-nat"
    run = asyncio.create_task(runner.run([scenario]))
    try:
        await _until_nat_is_up(nat_ns)
        wan, lan = tmp_path / "wan.pcap", tmp_path / "lan.pcap"
        async with _capture(nat_ns, "wan0", wan), _capture(nat_ns, "lan0", lan):
            (call,) = await asyncio.wait_for(run, timeout=60)
    finally:
        run.cancel()
    assert call["expectations"]["passed"], call["expectations"]
    assert_matches_schema(as_report([call]))

    start, end = _fault_events(call, "nat_rebind")
    assert start["detail"]["layer"] == end["detail"]["layer"] == "kernel"
    (inside_port,) = start["detail"]["inside_ports"]
    (old_port,) = start["detail"]["old_public_ports"]
    new_port = start["detail"]["pinned_ports"][str(inside_port)]
    assert end["detail"]["new_mapping"] == [f"198.19.0.1:{new_port}"]
    lab = call["lab"]
    assert lab["namespaces"]["nat"] == nat_ns
    assert lab["placement"] == {"caller": "inside", "callee": "outside"}
    assert "masquerade" in lab["nat_rules"]
    assert [f["kind"] for f in lab["faults"]] == ["nat.rebind"]

    # Outside link: the caller's packets come from the public address, from
    # the old port and then from the new one.
    public_ports = [sport for src, sport, _, _ in _packets(wan) if src == "198.19.0.1"]
    assert old_port in public_ports and new_port in public_ports
    first_new = public_ports.index(new_port)
    assert old_port not in public_ports[first_new:]
    # Inside link: the caller only ever sends from its one socket.
    inside = {sport for src, sport, _, _ in _packets(lan) if src == "198.18.0.2"}
    assert inside == {inside_port}
    assert nat_ns not in await list_namespaces()


async def test_firewall_overflow_new_flows_fail_established_calls_keep_media() -> None:
    (scenario,) = load_scenarios([SCENARIOS / "firewall_overflow.yaml"])
    runner = ScenarioRunner(seed=11, lab_run_id="tfull")
    lab = runner.new_lab(scenario, seed=0)
    await lab.build()
    try:
        calls = [
            asyncio.create_task(runner.run_call(scenario, index, shared=lab))
            for index in range(scenario.calls)
        ]

        async def all_connected() -> None:
            # The runner's progress is the only view of "connected" here.
            progress = runner.progress.calls.values()
            while True:
                if sum(p.state == "connected" for p in progress) == scenario.calls:
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(all_connected(), timeout=60)
        # The table is full now: one more call through the same NAT is all
        # new flows, and never connects.
        late_scenario = scenario.model_copy(update={"name": "late-call", "steps": ()})
        late = await runner.run_call(late_scenario, scenario.calls, shared=lab)
        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
    finally:
        await lab.teardown()
    assert not late["connected"] and "not connected" in late["error"]
    assert late["lab"]["flow_limit"] == 2 * scenario.calls
    assert late["lab"]["shared_by"] == scenario.calls
    for call in results:
        assert call["connected"] and call["error"] is None, call["id"]
        (restart,) = [
            e
            for e in call["events"]
            if e["type"] == "ice_restart" and e["side"] == "caller"
        ]
        assert restart["detail"]["outcome"] == "failed", call["id"]
        for direction in ("caller_to_callee", "callee_to_caller"):
            media = call["media"][direction]
            assert media["packets_lost"] == 0, (call["id"], direction)
            assert media["packets_received"] > 0.9 * media["packets_sent"]
    assert_matches_schema(as_report([*results, late]))
