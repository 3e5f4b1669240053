"""check_expectations against literal report dicts: one pass and one fail each."""

import dataclasses
from typing import Any

import pytest

from agent.scenario.expect import Check, check_expectations
from agent.scenario.model import Expectations


def report(**overrides: Any) -> dict[str, Any]:
    """A healthy call's report; keyword ``a__b`` overrides ``result[a][b]``."""
    result: dict[str, Any] = {
        "connected": True,
        "final_state": "connected",
        "ended_early": False,
        "setup_ms": 180.0,
        "metrics": {
            "ice_restarts": {"total": 0, "local": 0, "remote": 0, "level": "good"},
            "dtls_rehandshakes": {"total": 0, "local": 0, "remote": 0, "level": "good"},
            "selected_pair_changes": 0,
        },
        "media": {
            "caller_to_callee": {"max_gap_ms": 42.0, "packets_lost": 0},
            "callee_to_caller": {"max_gap_ms": 61.5, "packets_lost": 0},
        },
    }
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = result
        for part in parents:
            node = node[part]
        node[leaf] = value
    return result


def checks(expect: dict[str, Any], result: dict[str, Any]) -> list[Check]:
    return check_expectations(Expectations.model_validate(expect), result)


def only(expect: dict[str, Any], result: dict[str, Any], name: str) -> Check:
    [check] = [c for c in checks(expect, result) if c.name == name]
    return check


def test_default_expectations_check_only_that_the_call_stays_up() -> None:
    assert checks({}, report()) == [
        Check("call_up", "connected until the end", "connected", True)
    ]


def test_call_up_false_checks_nothing() -> None:
    assert checks({"call_up": False}, report(connected=False)) == []


@pytest.mark.parametrize(
    ("overrides", "actual"),
    [
        ({"connected": False, "final_state": "failed"}, "never connected"),
        ({"final_state": "failed", "ended_early": True}, "failed (ended early)"),
        ({"final_state": "closed"}, "closed"),
        ({"ended_early": True}, "connected (ended early)"),
    ],
)
def test_call_up_fails(overrides: dict[str, Any], actual: str) -> None:
    assert only({}, report(**overrides), "call_up") == Check(
        "call_up", "connected until the end", actual, False
    )


def test_max_setup_ms() -> None:
    expect = {"max_setup_ms": 500}
    assert only(expect, report(), "max_setup_ms") == Check(
        "max_setup_ms", "<= 500 ms", "180 ms", True
    )
    assert only(expect, report(setup_ms=731.2), "max_setup_ms") == Check(
        "max_setup_ms", "<= 500 ms", "731 ms", False
    )
    never = report(connected=False, setup_ms=None)
    assert only(expect, never, "max_setup_ms").actual == "never connected"
    assert not only(expect, never, "max_setup_ms").passed


@pytest.mark.parametrize("metric", ["ice_restarts", "dtls_rehandshakes"])
def test_contract_metric_exact_count(metric: str) -> None:
    assert only({metric: 0}, report(), metric) == Check(metric, "0", "0", True)
    two = report(**{f"metrics__{metric}__total": 2})
    assert only({metric: 1}, two, metric) == Check(metric, "1", "2", False)


@pytest.mark.parametrize(
    ("written", "total", "expected", "passed"),
    [
        ({"min": 1, "max": 2}, 1, "1..2", True),
        ({"min": 1, "max": 2}, 3, "1..2", False),
        ({"min": 1}, 5, ">= 1", True),
        ({"min": 1}, 0, ">= 1", False),
        ({"max": 1}, 0, "<= 1", True),
        ({"max": 1}, 2, "<= 1", False),
    ],
)
def test_contract_metric_ranges(
    written: dict[str, int], total: int, expected: str, passed: bool
) -> None:
    result = report(metrics__ice_restarts__total=total)
    assert only({"ice_restarts": written}, result, "ice_restarts") == Check(
        "ice_restarts", expected, str(total), passed
    )


def test_a_metric_missing_from_the_report_fails_as_not_measured() -> None:
    result = report()
    del result["metrics"]["dtls_rehandshakes"]
    assert only({"dtls_rehandshakes": 0}, result, "dtls_rehandshakes") == Check(
        "dtls_rehandshakes", "0", "not measured", False
    )


def test_selected_pair_changes() -> None:
    expect = {"selected_pair_changes": {"max": 1}}
    assert only(expect, report(), "selected_pair_changes").passed
    changed = report(metrics__selected_pair_changes=2)
    assert only(expect, changed, "selected_pair_changes") == Check(
        "selected_pair_changes", "<= 1", "2", False
    )


@pytest.mark.parametrize("metric", ["ice_restarts", "dtls_rehandshakes"])
def test_levels(metric: str) -> None:
    expect = {"levels": {metric: "good"}}
    name = f"levels.{metric}"
    assert only(expect, report(), name) == Check(name, "good", "good", True)
    warned = report(**{f"metrics__{metric}__level": "warning"})
    assert only(expect, warned, name) == Check(name, "good", "warning", False)


def test_max_media_gap_reports_the_worse_direction() -> None:
    expect = {"max_media_gap_ms": 100}
    assert only(expect, report(), "max_media_gap_ms") == Check(
        "max_media_gap_ms", "<= 100 ms", "62 ms (callee_to_caller)", True
    )
    gap = report(media__caller_to_callee__max_gap_ms=480.0)
    assert only(expect, gap, "max_media_gap_ms") == Check(
        "max_media_gap_ms", "<= 100 ms", "480 ms (caller_to_callee)", False
    )


def test_max_media_gap_needs_both_directions_measured() -> None:
    expect = {"max_media_gap_ms": 100}
    one_way = report(media__callee_to_caller__max_gap_ms=None)
    assert only(expect, one_way, "max_media_gap_ms") == Check(
        "max_media_gap_ms", "<= 100 ms", "not measured (callee_to_caller)", False
    )
    never = report(connected=False, media={})
    assert only(expect, never, "max_media_gap_ms").actual == "never connected"


def test_max_packets_lost_counts_both_directions() -> None:
    expect = {"max_packets_lost": 10}
    lossy = report(
        media__caller_to_callee__packets_lost=4,
        media__callee_to_caller__packets_lost=5,
    )
    assert only(expect, lossy, "max_packets_lost") == Check(
        "max_packets_lost",
        "<= 10",
        "9 (caller_to_callee 4, callee_to_caller 5)",
        True,
    )
    lossier = report(media__callee_to_caller__packets_lost=11)
    assert only(expect, lossier, "max_packets_lost") == Check(
        "max_packets_lost",
        "<= 10",
        "11 (caller_to_callee 0, callee_to_caller 11)",
        False,
    )


def test_checks_come_in_a_fixed_order() -> None:
    expect = {
        "max_packets_lost": 0,
        "max_media_gap_ms": 100,
        "levels": {"dtls_rehandshakes": "good", "ice_restarts": "good"},
        "selected_pair_changes": 0,
        "dtls_rehandshakes": 0,
        "ice_restarts": 0,
        "max_setup_ms": 1000,
    }
    assert [c.name for c in checks(expect, report())] == [
        "call_up",
        "max_setup_ms",
        "ice_restarts",
        "dtls_rehandshakes",
        "selected_pair_changes",
        "levels.ice_restarts",
        "levels.dtls_rehandshakes",
        "max_media_gap_ms",
        "max_packets_lost",
    ]
    assert all(c.passed for c in checks(expect, report()))


def test_check_is_a_frozen_dataclass() -> None:
    check = Check("call_up", "a", "b", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.passed = False  # type: ignore[misc]
    assert dataclasses.asdict(check) == {
        "name": "call_up",
        "expected": "a",
        "actual": "b",
        "passed": True,
        # set only by a check the agent's own stall left unjudged
        "inconclusive": None,
    }


def restart(side: str, initiator: str, cause: str | None) -> dict[str, Any]:
    return {"type": "ice_restart", "side": side, "initiator": initiator, "cause": cause}


def with_events(*events: dict[str, Any], local_side: str = "caller") -> dict[str, Any]:
    return report(events=list(events), local_side=local_side)


def test_initiated_by_counts_the_local_sides_events_by_who_started_them() -> None:
    expect = {"initiated_by": {"ice_restarts": {"caller": 1, "callee": 0}}}
    # The callee's observer sees the same restart as remote: not counted twice.
    seen = with_events(
        restart("caller", "local", "manual"), restart("callee", "remote", None)
    )
    assert [c.passed for c in checks(expect, seen)][-2:] == [True, True]
    by_callee = with_events(
        restart("caller", "remote", None), restart("callee", "local", "manual")
    )
    assert only(expect, by_callee, "initiated_by.ice_restarts.caller") == Check(
        "initiated_by.ice_restarts.caller", "1", "0", False
    )
    assert only(expect, by_callee, "initiated_by.ice_restarts.callee") == Check(
        "initiated_by.ice_restarts.callee", "0", "1", False
    )


def test_initiated_by_follows_the_local_side_and_network_faults() -> None:
    expect = {"initiated_by": {"ice_restarts": {"caller": 1, "network": 1}}}
    seen = with_events(
        restart("callee", "remote", None),
        restart("callee", "network", "nat_rebind"),
        local_side="callee",
    )
    assert all(c.passed for c in checks(expect, seen))


def test_initiated_by_without_events_is_not_measured() -> None:
    expect = {"initiated_by": {"dtls_rehandshakes": {"callee": 0}}}
    check = only(expect, report(), "initiated_by.dtls_rehandshakes.callee")
    assert check == Check(
        "initiated_by.dtls_rehandshakes.callee", "0", "not measured", False
    )


def test_causes_need_every_counted_event_to_carry_the_cause() -> None:
    expect = {"causes": {"ice_restarts": "nat_timeout"}}
    name = "causes.ice_restarts"
    good = with_events(restart("caller", "local", "nat_timeout"))
    assert only(expect, good, name) == Check(name, "nat_timeout", "nat_timeout", True)
    mixed = with_events(
        restart("caller", "local", "nat_timeout"), restart("caller", "local", "manual")
    )
    assert only(expect, mixed, name) == Check(
        name, "nat_timeout", "manual, nat_timeout", False
    )
    assert only(expect, with_events(), name) == Check(
        name, "nat_timeout", "no events", False
    )


def test_media_checks_judge_only_the_directions_the_agent_observes() -> None:
    # A WHIP call: the remote receives caller_to_callee, we cannot see it.
    remote = report(media__caller_to_callee={"observed": False})
    gap = only({"max_media_gap_ms": 100}, remote, "max_media_gap_ms")
    assert gap == Check(
        "max_media_gap_ms", "<= 100 ms", "62 ms (callee_to_caller)", True
    )
    lost = only({"max_packets_lost": 0}, remote, "max_packets_lost")
    assert lost.passed and lost.actual == "0 (callee_to_caller 0)"
    nothing = report(
        media__caller_to_callee={"observed": False},
        media__callee_to_caller={"observed": False},
    )
    assert not only({"max_packets_lost": 0}, nothing, "max_packets_lost").passed


def test_outcomes_need_every_counted_event_to_have_ended_that_way() -> None:
    expect = {"outcomes": {"dtls_rehandshakes": "completed"}}
    name = "outcomes.dtls_rehandshakes"

    def rehandshake(outcome: str) -> dict[str, Any]:
        return {
            "type": "dtls_rehandshake",
            "side": "caller",
            "initiator": "local",
            "cause": "manual",
            "detail": {"outcome": outcome},
        }

    good = with_events(rehandshake("completed"))
    assert only(expect, good, name) == Check(name, "completed", "completed", True)
    stuck = with_events(rehandshake("completed"), rehandshake("incomplete"))
    assert only(expect, stuck, name) == Check(
        name, "completed", "completed, incomplete", False
    )
