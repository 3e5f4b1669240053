"""``net.noop`` on a real loopback call: on the timeline, and nothing else.

The test of the minimal fault, and the template for a new fault's test: run a
short scenario through the runner (real sockets, real ICE and DTLS) and
assert on the report.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner


async def run(text: str, seed: int = 7) -> dict[str, Any]:
    runner = ScenarioRunner(seed=seed)
    (result,) = await asyncio.wait_for(runner.run([parse_scenario(text)]), timeout=60)
    return result


async def test_the_noop_fault_is_on_the_timeline_and_changes_nothing() -> None:
    result = await run(
        """
name: noop-fault
duration: 3s
steps: [{at: 1s, do: net.noop, side: caller, duration: 1s}]
expect:
  ice_restarts: 0
  dtls_rehandshakes: 0
  selected_pair_changes: 0
  max_media_gap_ms: 200
"""
    )
    failed = [
        c
        for c in result["expectations"]["checks"]
        if not c["passed"] and not c.get("inconclusive")  # a busy host's stall
    ]
    assert not failed, failed
    faults = [e for e in result["events"] if e["type"].startswith("fault_")]
    assert [e["type"] for e in faults] == ["fault_start", "fault_end"]
    start, end = faults
    assert start["cause"] == end["cause"] == "noop"
    assert start["initiator"] == "network" and start["side"] == "caller"
    assert start["detail"]["fault"] == "noop"
    assert start["detail"]["duration_ms"] == 1000.0
    assert 900 <= end["t_ms"] - start["t_ms"] <= 1500
    # Every datagram passed: both directions kept flowing through the fault.
    for direction in ("caller_to_callee", "callee_to_caller"):
        assert result["media"][direction]["packets_lost"] == 0
