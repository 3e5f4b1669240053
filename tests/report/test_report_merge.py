"""Shard reports merged into one (agent.report.merge): bookkeeping only."""

from __future__ import annotations

from typing import Any

import pytest

from agent.report.merge import MergeError, merge_reports


def shard(index: int, count: int, *calls: str, **extra: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": 1,
        "tool": "callagent test",
        "run_id": "run-1",
        "started_at": f"2026-01-01T00:00:0{index}.000Z",
        "finished_at": f"2026-01-01T00:01:0{index}.000Z",
        "complete": True,
        "interrupted": None,
        "seed": 7,
        "host": {},
        "shard": {"index": index, "count": count},
        "calls": [
            {"id": call, "seed": n, "expectations": {"passed": True, "checks": []}}
            for n, call in enumerate(calls)
        ],
    }
    report.update(extra)
    return report


def test_every_shard_reported_gives_one_complete_report() -> None:
    merged = merge_reports(
        [("b", shard(1, 2, "x#2")), ("a", shard(0, 2, "x#1", "x#3"))]
    )
    assert merged["complete"] is True and merged["interrupted"] is None
    assert [c["id"] for c in merged["calls"]] == ["x#1", "x#3", "x#2"]
    assert merged["summary"] == {"calls": 3, "passed": 3, "failed": 0, "errors": 0}
    assert merged["shards"] == {
        "count": 2,
        "reported": [0, 1],
        "missing": [],
        "incomplete": [],
    }
    assert merged["started_at"].endswith("00:00:00.000Z")
    assert merged["finished_at"].endswith("00:01:01.000Z")
    assert merged["run_id"] == "run-1" and merged["seed"] == 7


def test_a_shard_that_never_reported_is_named_not_rerun() -> None:
    merged = merge_reports([("a", shard(0, 3, "x#1")), ("c", shard(2, 3, "x#3"))])
    assert merged["complete"] is False
    assert merged["shards"]["missing"] == [1]
    assert "shard 1/3 never reported" in merged["interrupted"]
    assert [c["id"] for c in merged["calls"]] == ["x#1", "x#3"]


def test_the_launcher_knows_the_count_when_no_report_says_it_all() -> None:
    merged = merge_reports([("a", shard(0, 2, "x#1"))], count=2)
    assert merged["shards"]["missing"] == [1]


def test_a_shard_that_stopped_early_makes_the_merge_incomplete() -> None:
    stopped = shard(1, 2, "x#2", complete=False, interrupted="SIGTERM")
    merged = merge_reports([("a", shard(0, 2, "x#1")), ("b", stopped)])
    assert merged["complete"] is False
    assert merged["shards"]["incomplete"] == [1]
    assert "shard 1/2 stopped early: SIGTERM" in merged["interrupted"]


def test_resource_samples_keep_their_shard() -> None:
    sample = {"t_s": 0.0, "rss_bytes": 1, "open_fds": 3}
    merged = merge_reports(
        [("a", shard(0, 2, resources=[sample])), ("b", shard(1, 2, resources=[sample]))]
    )
    assert [s["shard"] for s in merged["resources"]] == [0, 1]


@pytest.mark.parametrize(
    ("reports", "message"),
    [
        ([("a", shard(0, 2)), ("b", shard(0, 2))], "b: shard 0/2 is also in a"),
        ([("a", shard(0, 2)), ("b", shard(1, 3))], "but the run has 2 shards"),
        ([("a", shard(0, 2)), ("b", shard(1, 2, seed=8))], "seed 8 differs from 7"),
        ([("a", shard(0, 2, shard={"index": 2, "count": 2}))], "a: 'shard'"),
        ([], "no shard reports"),
    ],
)
def test_reports_of_different_runs_are_refused(
    reports: list[tuple[str, dict[str, Any]]], message: str
) -> None:
    with pytest.raises(MergeError, match=message):
        merge_reports(reports)
