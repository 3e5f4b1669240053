"""A stall of the agent never turns a figure into a failure (issue 10).

Real loopback calls whose event loop is blocked on purpose, for a bounded
time, at the moment the judged figure is being measured: the check becomes
``inconclusive`` with "agent stalled" in its reason. The same figure spoilt by
the network while the agent did not stall still fails.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from rich.console import Console

from agent.call.calls import CallConfig, LoopbackCall
from agent.observe.events import IceStateEvent, to_json
from agent.observe.model import Side
from agent.report.schema import Verdict, call_verdict
from agent.report.table import render_results
from agent.scenario.expect import check_expectations
from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner

BLOCK_S = 0.35


def _expect(text: str) -> Any:
    return parse_scenario(f"name: x\nduration: 1s\nexpect: {text}\n").expect


def _judge(result: dict[str, Any], expect: str) -> dict[str, Any]:
    checks = check_expectations(_expect(expect), result)
    result["expectations"] = {
        "passed": all(c.passed for c in checks),
        "checks": [to_json(c) for c in checks],
    }
    return {c.name: c for c in checks}


async def _call_blocked_during_setup() -> dict[str, Any]:
    call = LoopbackCall(CallConfig(call_id="stall-setup#1", seed=3))
    caller = call.observer(Side.CALLER)

    async def block_when_checking() -> None:
        # ICE checks under way: the handshake is being measured now. (The
        # observer only records; there is no event to await.)
        while not any(isinstance(e, IceStateEvent) for e in caller.events):  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        time.sleep(BLOCK_S)  # noqa: ASYNC251 -- the process stops, as on a busy host

    blocker = asyncio.create_task(block_when_checking())
    try:
        await asyncio.wait_for(call.connect(), 10)
        await blocker
        await asyncio.sleep(0.5)
    finally:
        blocker.cancel()
        await call.close()
    return call.result(duration_ms=1000)


async def test_a_stall_during_setup_makes_setup_and_start_inconclusive() -> None:
    result = await _call_blocked_during_setup()
    assert result["setup_ms"] >= BLOCK_S * 1000 * 0.8, result["setup_ms"]
    checks = _judge(result, "{call_up: false, max_setup_ms: 200}")
    setup = checks["max_setup_ms"]
    assert not setup.passed and setup.inconclusive, setup
    assert "agent stalled" in setup.actual, setup
    assert call_verdict(result) is Verdict.INCONCLUSIVE
    # The results table says the host was the limit, with the stall's length.
    console = Console(record=True, width=400)
    render_results({"complete": True, "calls": [result]}, console)
    hint = console.export_text().splitlines()[-1]
    assert hint.startswith("host too busy: 1 call inconclusive because"), hint
    longest = re.search(r"longest (\d+) ms", hint)
    assert longest is not None and int(longest[1]) >= BLOCK_S * 1000 * 0.8, hint


async def test_a_late_stream_start_while_the_agent_stalled_is_inconclusive() -> None:
    call = LoopbackCall(CallConfig(call_id="stall-start#1", seed=4))
    observers = [call.observer(Side.CALLER), call.observer(Side.CALLEE)]

    def stall_when_both_connected(side: int) -> None:
        observer, other = observers[side], observers[1 - side]
        heard = observer.on_dtls_state

        def on_dtls_state(state: str, at_ms: float | None = None) -> None:
            # Both sides' DTLS is up (setup ends), this side's RTP sender
            # not yet started: the process stops here, as on a busy host.
            heard(state, at_ms)
            if state == "connected" and other.dtls_connected_at_ms is not None:
                time.sleep(BLOCK_S)

        observer.on_dtls_state = on_dtls_state  # type: ignore[method-assign]

    stall_when_both_connected(0)
    stall_when_both_connected(1)
    try:
        await asyncio.wait_for(call.connect(), 10)
        await asyncio.sleep(0.5)
    finally:
        await call.close()
    result = call.result(duration_ms=1000)
    starts = {d: result["media"][d]["start_ms"] for d in result["media"]}
    assert max(starts.values()) >= 250, starts
    checks = _judge(result, "{call_up: false, max_media_start_ms: 100}")
    start = checks["max_media_start_ms"]
    assert not start.passed and start.inconclusive, start
    assert "agent stalled" in start.actual, start
    assert call_verdict(result) is Verdict.INCONCLUSIVE


def test_a_direction_that_never_starts_fails_with_its_reason() -> None:
    # Judging is pure (a saved report gives the same verdict): a direction
    # due (it sends) with no packet until hang-up fails call_up and the
    # start check, with the reason, and no stall excuses it.
    flowing = {"sends": True, "packets_received": 500, "start_ms": 3.0}
    dark = {"sends": True, "packets_received": 0, "packets_sent": 500}
    result: dict[str, Any] = {
        "connected": True,
        "final_state": "connected",
        "ended_early": False,
        "setup_ms": 50.0,
        "media": {"caller_to_callee": flowing, "callee_to_caller": dark},
        "events": [
            {
                "type": "note",
                "t_ms": 60.0,
                "cause": "agent_stall",
                "detail": {"stall_ms": 300.0},
            },
        ],
    }
    checks = _judge(result, "{max_media_start_ms: 500}")
    up, start = checks["call_up"], checks["max_media_start_ms"]
    assert up.actual == "connected, but callee_to_caller never started", up
    assert not up.passed and not up.inconclusive
    assert "callee_to_caller never started" in start.actual, start
    assert not start.passed and not start.inconclusive
    assert call_verdict(result) is Verdict.FAIL


async def test_a_network_start_delay_without_a_stall_still_fails() -> None:
    # The callee's outbound is dark for the first 600 ms after connect; the
    # agent does not stall: a late start the network made is a failure.
    (result,) = await asyncio.wait_for(
        ScenarioRunner(seed=10).run(
            [
                parse_scenario(
                    "name: late\nduration: 2s\n"
                    "expect: {call_up: false, max_media_start_ms: 300}\n"
                    "steps:\n"
                    "  - {at: 0s, do: net.blackhole, side: callee, "
                    "direction: outbound, duration: 600ms}\n"
                )
            ]
        ),
        60,
    )
    media = result["media"]["callee_to_caller"]
    checks = {c["name"]: c for c in result["expectations"]["checks"]}
    start = checks["max_media_start_ms"]
    if media["start_ms"] >= 300:
        assert not start["passed"] and not start.get("inconclusive"), start
        assert call_verdict(result) is Verdict.FAIL
    else:
        # A packet slipped out before the blackhole landed: then the
        # stream started and stopped, and its gap is the network's.
        assert media["max_gap_ms"] >= 450, media


async def _call_blocked_before_hangup(block_s: float) -> dict[str, Any]:
    call = LoopbackCall(CallConfig(call_id="stall-end#1", seed=6))
    try:
        await asyncio.wait_for(call.connect(), 10)
        await asyncio.sleep(1.0)  # media flowing both ways
        # The loop stalls and the call is hung up straight after, as a busy
        # worker tears down while its senders are behind their schedule: the
        # packets due in the stall are never sent.
        time.sleep(block_s)  # noqa: ASYNC251 -- the process stops, as on a busy host
        final_state = call.final_state()  # as the runner reads it at hang-up
    finally:
        await call.close()
    result = call.result(duration_ms=1000 + block_s * 1000)
    result["final_state"] = final_state
    return result


async def test_silence_until_hangup_from_a_late_sender_is_inconclusive() -> None:
    result = await _call_blocked_before_hangup(BLOCK_S)
    states = {d: result["media"][d]["state"] for d in result["media"]}
    # The agent's senders were behind by the block when the call ended: the
    # receivers heard nothing for it, judged against media due until hang-up.
    assert "stopped" in states.values(), states
    checks = _judge(result, "{call_up: true}")
    up = checks["call_up"]
    assert not up.passed and up.inconclusive, up
    assert "agent stalled" in up.actual, up
    assert call_verdict(result) is Verdict.INCONCLUSIVE
    # A sender behind when it stopped says so: a late run up to the stop.
    late = [
        e
        for e in result["events"]
        if e["type"] == "note" and e.get("cause") == "agent_stall"
    ]
    assert any(e["detail"]["stall_ms"] >= BLOCK_S * 1000 * 0.8 for e in late), late


async def test_a_direction_stopped_by_the_network_before_hangup_still_fails() -> None:
    # The agent keeps its schedule; the network drops the caller's media
    # from 1.5 s to hang-up: a stop of the network's, a failure.
    scenario = parse_scenario(
        "name: end\nduration: 2s\nexpect: {call_up: true}\nsteps:\n"
        "  - {at: 1.5s, do: net.blackhole, side: caller, direction: outbound}\n",
        "end.yaml",
    )
    result = await ScenarioRunner(seed=8).run_call(scenario, 0)
    (up,) = [c for c in result["expectations"]["checks"] if c["name"] == "call_up"]
    assert not up["passed"] and not up.get("inconclusive"), up
    assert "caller_to_callee stopped" in up["actual"], up
    assert call_verdict(result) is Verdict.FAIL
