"""Real loopback calls through the scenario runner: results as the report holds them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.call.calls import CallConfig, LoopbackCall
from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner

SHORT = """
name: short
duration: 2s
expect:
  ice_restarts: 0
  dtls_rehandshakes: 0
  max_media_gap_ms: 100
"""


async def run(text: str, seed: int = 7) -> list[dict[str, Any]]:
    runner = ScenarioRunner(seed=seed)
    return await asyncio.wait_for(runner.run([parse_scenario(text)]), timeout=60)


async def test_baseline_call_connects_counts_nothing_and_media_flows_both_ways() -> (
    None
):
    (result,) = await run(SHORT)
    assert result["connected"] and result["final_state"] == "connected"
    assert result["expectations"]["passed"], result["expectations"]
    for metric in ("ice_restarts", "dtls_rehandshakes"):
        assert result["metrics"][metric] == {
            "total": 0,
            "local": 0,
            "remote": 0,
            "level": "good",
        }
    for direction in ("caller_to_callee", "callee_to_caller"):
        media = result["media"][direction]
        # 2 s of 20 ms packets is ~100; all of them arrive on loopback.
        assert media["packets_received"] >= 90
        assert media["packets_lost"] == 0
        assert media["max_gap_ms"] < 100
    assert 0 < result["setup_ms"] < 5000
    # Both sides saw their own handshake and connection; the timeline is ordered.
    types = {(e["side"], e["type"], e["detail"].get("state")) for e in result["events"]}
    assert ("caller", "dtls_state", "connected") in types
    assert ("callee", "connection_state", "connected") in types
    times = [e["t_ms"] for e in result["events"]]
    assert times == sorted(times)
    assert result["sides"]["caller"]["selected_pair"]["local"].startswith("127.0.0.1:")
    assert result["sides"]["callee"]["selected_pair"]["local"].startswith("127.0.0.2:")


async def test_hangup_step_ends_the_call_early_and_is_on_the_timeline() -> None:
    (result,) = await run(
        """
name: hang
duration: 30s
steps:
  - {at: 500ms, do: hangup, side: callee}
expect: {call_up: false}
"""
    )
    assert result["hung_up_by"] == "callee"
    assert result["duration_ms"] < 10_000
    steps = [e for e in result["events"] if e["type"] == "step"]
    assert steps and steps[0]["detail"]["do"] == "hangup"
    assert result["sides"]["caller"]["final_state"] == "closed"


async def test_unmet_expectation_fails_the_call_with_the_actual_value() -> None:
    (result,) = await run(SHORT.replace("ice_restarts: 0", "ice_restarts: 1"))
    assert not result["expectations"]["passed"]
    failed = [c for c in result["expectations"]["checks"] if not c["passed"]]
    assert [(c["name"], c["actual"]) for c in failed] == [("ice_restarts", "0")]


async def test_concurrent_copies_each_get_their_own_seed_and_report() -> None:
    results = await run(SHORT.replace("duration: 2s", "duration: 1s\ncalls: 3"))
    assert sorted(r["id"] for r in results) == ["short#1", "short#2", "short#3"]
    assert len({r["seed"] for r in results}) == 3
    assert all(r["connected"] for r in results)


async def test_same_seed_gives_same_call_seeds() -> None:
    first = await run(SHORT.replace("duration: 2s", "duration: 1s"), seed=42)
    again = await run(SHORT.replace("duration: 2s", "duration: 1s"), seed=42)
    assert first[0]["seed"] == again[0]["seed"]


RESTART = """
name: restart
duration: 3s
peers:
  caller: {disconnected_after: 1s, consent_interval: 1s}
steps:
  - {at: 1s, do: ice.restart, side: SIDE, cause: path_change}
expect:
  ice_restarts: 1
  initiated_by:
    ice_restarts: {SIDE: 1}
  causes:
    ice_restarts: CAUSE
  dtls_rehandshakes: 0
  levels: {ice_restarts: warning}
"""


async def test_ice_restart_step_is_counted_once_with_initiator_and_outcome() -> None:
    for side in ("caller", "callee"):
        text = RESTART.replace("SIDE", side).replace("CAUSE", "path_change")
        (result,) = await run(text)
        restarts = [e for e in result["events"] if e["type"] == "ice_restart"]
        # One restart, seen by both observers: local on one, remote on the other.
        assert sorted((e["side"], e["initiator"]) for e in restarts) == sorted(
            [(side, "local"), ("callee" if side == "caller" else "caller", "remote")]
        )
        for event in restarts:
            assert event["detail"]["outcome"] == "completed"
            assert event["detail"]["generation"] == 1
            assert 0 < event["detail"]["duration_ms"] < 2000
        # Both observers carry the initiator's cause; the far end's says whose.
        for event in restarts:
            assert event["cause"] == "path_change"
            if event["side"] != side:
                assert event["detail"]["cause_from"] == side
        assert result["metrics"]["ice_restarts"]["total"] == 1
        assert result["final_state"] == "connected"
        # Make-before-break: no gap worth the name in either direction.
        for direction in ("caller_to_callee", "callee_to_caller"):
            assert result["media"][direction]["max_gap_ms"] < 200
        checks = {c["name"]: c for c in result["expectations"]["checks"]}
        assert checks["initiated_by.ice_restarts." + side]["passed"]
        assert checks["causes.ice_restarts"]["passed"]


async def test_a_stall_of_the_agents_own_loop_is_blamed_on_the_agent() -> None:
    call = LoopbackCall(CallConfig(call_id="stall#1", seed=3))
    try:
        await asyncio.wait_for(call.connect(), 10)
        await asyncio.sleep(0.5)  # media flows for a while
        time.sleep(0.3)  # noqa: ASYNC251 -- the process stops, as on a loaded host
        await asyncio.sleep(0.5)
    finally:
        await call.close()
    result = call.result(duration_ms=1300)
    stalls = [e for e in result["events"] if e["cause"] == "agent_stall"]
    notes = [e for e in stalls if e["type"] == "note"]
    gaps = [e for e in stalls if e["type"] == "media_gap"]
    assert notes and notes[0]["detail"]["stall_ms"] >= 250
    # Both directions stopped for the stall, and both gaps say why.
    assert {g["detail"]["direction"] for g in gaps} == {
        "caller_to_callee",
        "callee_to_caller",
    }
    unexplained = [
        e for e in result["events"] if e["type"] == "media_gap" and e["cause"] is None
    ]
    assert unexplained == []
