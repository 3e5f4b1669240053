"""A cancel that arrives while a call is closing keeps the call's entry.

Under load many calls close at once, slowly; a SIGTERM or Ctrl-C then used to
raise out of the runner's ``finally: await asyncio.shield(call.close())`` and
the call, which ran, was missing from the report.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.call.calls import Call, CallConfig, LoopbackCall
from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner


class ClosingCall(LoopbackCall):
    """A real loopback call that says when its close has begun."""

    closing: asyncio.Event

    async def close(self) -> None:
        self.closing.set()
        await super().close()


async def test_a_cancel_during_close_keeps_the_calls_entry() -> None:
    closing = asyncio.Event()
    calls: list[ClosingCall] = []

    def factory(config: CallConfig) -> Call:
        call = ClosingCall(config)
        call.closing = closing
        calls.append(call)
        return call

    results: list[dict[str, Any]] = []
    runner = ScenarioRunner(seed=3, on_result=results.append, call_factory=factory)
    scenario = parse_scenario("name: s\nduration: 1s\n", "s.yaml")
    task = asyncio.create_task(runner.run_call(scenario, 0))
    await asyncio.wait_for(closing.wait(), timeout=20)
    task.cancel()  # while the call is in its close
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r["id"] for r in results] == ["s#1"]
    # The call ran its whole timeline: the cancel came during the teardown,
    # so its entry says how it went, not "interrupted".
    assert results[0]["final_state"] == "connected"
    assert results[0].get("error") is None
    assert results[0]["expectations"]["passed"] is True


async def test_a_cancel_during_the_call_still_reports_it_interrupted() -> None:
    connected = asyncio.Event()

    class WatchedCall(LoopbackCall):
        async def connect(self) -> None:
            await super().connect()
            connected.set()

    results: list[dict[str, Any]] = []
    runner = ScenarioRunner(
        seed=3, on_result=results.append, call_factory=lambda c: WatchedCall(c)
    )
    scenario = parse_scenario("name: s\nduration: 30s\n", "s.yaml")
    task = asyncio.create_task(runner.run_call(scenario, 0))
    await asyncio.wait_for(connected.wait(), timeout=20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(results) == 1
    assert results[0]["error"] == "interrupted"
