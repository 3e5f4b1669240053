"""No automatic full garbage collection while a call's media is due.

A full collection walks every object of the process (100-230 ms at 150 calls
on a 2-core host): every call's media stops for it. The runner turns the
automatic one off while calls are up and collects when the process is quiet.
"""

from __future__ import annotations

import gc

from agent.call.calls import Call, CallConfig, LoopbackCall
from agent.scenario.heap import HeapPolicy
from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner


async def test_no_full_collection_runs_by_itself_while_calls_are_up() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    full_during_calls: list[int] = []

    class WatchedCall(LoopbackCall):
        async def connect(self) -> None:
            await super().connect()
            seen.append(gc.get_threshold())
            # Objects that live on, as a long call's events do: with the
            # default thresholds these trigger full collections (3 here).
            full_before = gc.get_stats()[2]["collections"]
            keep: list[list[int]] = [[i] for i in range(300_000)]
            full_during_calls.append(gc.get_stats()[2]["collections"] - full_before)
            del keep

    def factory(config: CallConfig) -> Call:
        return WatchedCall(config)

    runner = ScenarioRunner(seed=5, call_factory=factory)
    first = parse_scenario("name: h\nduration: 1s\ncalls: 2\n", "h.yaml")
    second = parse_scenario("name: i\nduration: 1s\n", "i.yaml")
    results = await runner.run([first, second])  # one after the other
    assert [r["expectations"]["passed"] for r in results] == [True] * 3
    # While the calls were up: young collections only.
    assert len(seen) == 3
    assert all(t[:2] == before[:2] and t[2] > 10**8 for t in seen)
    assert full_during_calls == [0, 0, 0]
    # Collected once the process was quiet between the two scenarios, not
    # after the run's last call; the thresholds restored.
    assert runner.heap.collections == 1
    assert gc.get_threshold() == before


def test_the_policy_restores_thresholds_and_collects_when_quiet() -> None:
    before = gc.get_threshold()
    with HeapPolicy() as heap:
        assert gc.get_threshold()[2] > 10**8
        heap.call_started()
        heap.call_started()
        heap.call_ended()
        assert heap.collections == 0  # one call still up
        full = gc.get_stats()[2]["collections"]
        heap.call_ended()
        assert heap.collections == 1
        assert gc.get_stats()[2]["collections"] == full + 1
    assert gc.get_threshold() == before


def test_no_collection_after_the_runs_last_call() -> None:
    with HeapPolicy() as heap:
        heap.call_started()
        full = gc.get_stats()[2]["collections"]
        heap.call_ended(more_to_come=False)
        assert heap.collections == 0
        assert gc.get_stats()[2]["collections"] == full


def test_overlapping_runs_restore_the_thresholds_once_both_end() -> None:
    before = gc.get_threshold()
    first, second = HeapPolicy(), HeapPolicy()
    first.__enter__()
    second.__enter__()
    first.call_started()
    second.call_started()
    first.call_ended()
    assert first.collections == 0  # the other run's call is still up
    first.__exit__(None, None, None)
    assert gc.get_threshold()[2] > 10**8  # the other run is still going
    second.call_ended()
    assert second.collections == 1
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
