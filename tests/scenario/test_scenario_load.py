"""Load fields and sharding of a run: ``ramp``, ``shard_plan``."""

from __future__ import annotations

import pytest

from agent.errors import ScenarioError
from agent.scenario.loader import parse_scenario
from agent.scenario.model import Scenario
from agent.scenario.runner import ScenarioRunner, Shard, shard_plan


def scenario(body: str) -> Scenario:
    return parse_scenario(f"name: s\nduration: 5s\n{body}", "s.yaml")


@pytest.mark.parametrize(
    ("text", "rate"), [("50/s", 50.0), ("600/m", 10.0), ("30/min", 0.5), ("2.5", 2.5)]
)
def test_ramp_is_calls_per_second(text: str, rate: float) -> None:
    assert scenario(f"calls: 10\nramp: {text}\n").ramp == rate


def test_no_ramp_starts_the_calls_together() -> None:
    assert scenario("calls: 10\n").ramp is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fast", "s.yaml:4: ramp: invalid ramp fast"),
        ("0/s", "ramp 0/s is out of range"),
        ("50/h", "invalid ramp 50/h"),
        ("true", "invalid ramp True"),
        ("20000/s", "at most 10000/s"),
    ],
)
def test_a_bad_ramp_is_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario(f"calls: 10\nramp: {text}\n")


def test_a_dumped_ramp_loads_back_equal() -> None:
    original = scenario("calls: 10\nramp: 600/m\n")
    dumped = original.model_dump(mode="json")
    assert dumped["ramp"] == 10.0
    assert Scenario.model_validate(dumped).ramp == original.ramp


def _calls(plan: list[tuple[Scenario, list[int]]]) -> list[tuple[str, int]]:
    return [(s.name, i) for s, indices in plan for i in indices]


def test_shards_split_the_run_wide_call_index_without_overlap() -> None:
    suite = [
        parse_scenario(f"name: {name}\nduration: 1s\ncalls: {n}\n", f"{name}.yaml")
        for name, n in (("a", 1), ("b", 1), ("c", 3), ("d", 1))
    ]
    whole = _calls(shard_plan(suite, Shard(0, 1)))
    parts = [_calls(shard_plan(suite, Shard(i, 4))) for i in range(4)]
    assert sorted(c for part in parts for c in part) == sorted(whole)
    # One-call scenarios spread over the shards, not all onto shard 0.
    assert [len(part) for part in parts] == [2, 2, 1, 1]
    assert parts[0] == [("a", 0), ("c", 2)]
    assert parts[1] == [("b", 0), ("d", 0)]


def test_a_call_keeps_its_seed_whichever_shard_runs_it() -> None:
    s = scenario("calls: 4\n")
    runner = ScenarioRunner(seed=7)
    seeds = {i: runner.call_seed(s, i) for i in range(4)}
    other = ScenarioRunner(seed=7)
    for shard in (Shard(0, 2), Shard(1, 2)):
        for _, indices in shard_plan([s], shard):
            assert all(other.call_seed(s, i) == seeds[i] for i in indices)


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_shard_outside_the_count_does_not_exist(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Shard(index, count)


def test_a_shared_lab_scenario_is_never_split_over_shards() -> None:
    # Its calls fill one lab NAT's state table: split over two worker
    # processes, each would build its own half-empty table.
    shared = scenario(
        "calls: 10\nnetwork: {lab: kernel, shared: true, max_flows: 20}\n"
    )
    plain = scenario("calls: 3\n")
    shards = [shard_plan([plain, shared], Shard(i, 2)) for i in range(2)]
    holding = [plan for plan in shards if any(s is shared for s, _ in plan)]
    assert len(holding) == 1
    (indices,) = [ix for s, ix in holding[0] if s is shared]
    assert indices == list(range(10))
