"""Scenario models built in code: defaults, rules, dump/validate round trip."""

from ipaddress import IPv4Address

import pytest
from pydantic import ValidationError

from agent.observe.model import Level, Side, Thresholds
from agent.scenario.model import (
    CountRange,
    Expectations,
    MediaSettings,
    PeersSettings,
    Scenario,
    ScenarioSource,
    StepSpec,
    scenario_digest,
)
from agent.scenario.steps import Hangup, Noop, Step, StepParams


def _only_error(exc: ValidationError) -> tuple[tuple[str | int, ...], str]:
    errors = exc.errors()
    assert len(errors) == 1, errors
    return tuple(errors[0]["loc"]), errors[0]["msg"]


def test_defaults() -> None:
    scenario = Scenario(name="x", duration=10)
    assert scenario.description == ""
    assert scenario.seed is None
    assert scenario.calls == 1
    assert scenario.media == MediaSettings()
    assert scenario.media.audio and not scenario.media.datachannel
    assert not scenario.media.decode
    assert scenario.media.packet_ms == 20
    assert scenario.media.gap_threshold_ms == 60
    assert scenario.media.jitter_budget_ms == 60
    assert scenario.peers.caller.address == IPv4Address("127.0.0.1")
    assert scenario.peers.callee.address == IPv4Address("127.0.0.2")
    assert scenario.steps == ()
    assert scenario.expect == Expectations()
    assert scenario.expect.call_up is True
    assert scenario.thresholds.ice_restarts == Thresholds(1, 2)
    assert scenario.thresholds.dtls_rehandshakes == Thresholds(1, 2)
    assert scenario.source is None


def test_a_peer_left_without_address_gets_its_roles_default() -> None:
    peers = PeersSettings.model_validate({"caller": {}, "callee": None})
    assert peers.caller.address == IPv4Address("127.0.0.1")
    assert peers.callee.address == IPv4Address("127.0.0.2")
    peers = PeersSettings.model_validate({"caller": {"address": "127.0.0.9"}})
    assert peers.caller.address == IPv4Address("127.0.0.9")
    assert peers.callee.address == IPv4Address("127.0.0.2")


def test_models_are_frozen() -> None:
    scenario = Scenario(name="x", duration=10)
    with pytest.raises(ValidationError):
        scenario.duration = 5
    with pytest.raises(ValidationError):
        scenario.media.audio = False


def test_thresholds_are_the_observe_layers_type() -> None:
    scenario = Scenario.model_validate(
        {"name": "x", "duration": 10, "thresholds": {"ice_restarts": {"warning": 2}}}
    )
    thresholds = scenario.thresholds.ice_restarts
    assert isinstance(thresholds, Thresholds)
    assert thresholds == Thresholds(warning=2, critical=2)
    assert thresholds.level(1) is Level.GOOD


def test_step_spec_built_in_code() -> None:
    spec = StepSpec.model_validate({"at": "5s", "do": "hangup", "side": "caller"})
    assert spec.at == 5.0
    assert spec.side is Side.CALLER
    assert spec.step is Hangup
    assert spec.params == StepParams()
    assert spec.model_dump(mode="json") == {"at": 5.0, "do": "hangup", "side": "caller"}


def test_step_spec_inline_params(blackhole_step: type[Step]) -> None:
    spec = StepSpec.model_validate(
        {"at": "1s", "do": "test.blackhole", "side": "callee", "duration": "2s"}
    )
    assert isinstance(spec.params, blackhole_step.Params)
    assert spec.params.model_dump() == {"duration": 2.0, "loss": 1.0}
    assert spec.model_dump(mode="json") == {
        "at": 1.0,
        "do": "test.blackhole",
        "side": "callee",
        "duration": 2.0,
        "loss": 1.0,
    }
    assert StepSpec.model_validate(spec.model_dump()) == spec


def test_step_param_errors_are_located_at_the_inline_key(
    blackhole_step: type[Step],
) -> None:
    with pytest.raises(ValidationError) as caught:
        StepSpec.model_validate(
            {"at": 1, "do": "test.blackhole", "side": "caller", "duration": "2q"}
        )
    loc, msg = _only_error(caught.value)
    assert loc == ("duration",)
    assert msg == "invalid duration '2q' (use e.g. 500ms, 5s, 2m)"


def test_step_unknown_param_suggests_the_closest(blackhole_step: type[Step]) -> None:
    with pytest.raises(ValidationError) as caught:
        StepSpec.model_validate(
            {"at": 1, "do": "test.blackhole", "side": "caller", "duraton": "2s"}
        )
    loc, msg = _only_error(caught.value)
    assert loc == ("duraton",)
    assert (
        msg == "unknown parameter for step 'test.blackhole'; did you mean 'duration'?"
    )


def test_ordered_steps_sort_by_time_keeping_file_order_for_ties() -> None:
    scenario = Scenario.model_validate(
        {
            "name": "x",
            "duration": 10,
            "steps": [
                {"at": 3, "do": "noop"},
                {"at": 1, "do": "noop"},
                {"at": 3, "do": "hangup", "side": "caller"},
            ],
            "expect": {"call_up": False},
        }
    )
    assert [(s.at, s.do) for s in scenario.ordered_steps] == [
        (1, "noop"),
        (3, "noop"),
        (3, "hangup"),
    ]


def test_a_step_at_the_same_time_as_a_hangup_but_listed_after_it_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Scenario.model_validate(
            {
                "name": "x",
                "duration": 10,
                "steps": [
                    {"at": 3, "do": "hangup", "side": "caller"},
                    {"at": 3, "do": "noop"},
                ],
                "expect": {"call_up": False},
            }
        )
    loc, msg = _only_error(caught.value)
    assert loc == ("steps", 1, "at")
    assert msg == (
        "runs after the hangup at 3s (steps[0]) ended the call, so it would never run"
    )


def test_step_at_zero_is_allowed_and_at_duration_is_not() -> None:
    Scenario.model_validate(
        {"name": "x", "duration": 10, "steps": [{"at": 0, "do": "noop"}]}
    )
    with pytest.raises(ValidationError) as caught:
        Scenario.model_validate(
            {"name": "x", "duration": "500ms", "steps": [{"at": 0.5, "do": "noop"}]}
        )
    loc, msg = _only_error(caught.value)
    assert loc == ("steps", 0, "at")
    assert msg == "500ms is not before the end of the scenario (duration 500ms)"


@pytest.mark.parametrize(
    ("written", "low", "high", "text"),
    [
        (0, 0, 0, "0"),
        (2, 2, 2, "2"),
        ({"min": 1, "max": 3}, 1, 3, "1..3"),
        ({"min": 1}, 1, None, ">= 1"),
        ({"max": 2}, None, 2, "<= 2"),
    ],
)
def test_count_range(
    written: object, low: int | None, high: int | None, text: str
) -> None:
    count = CountRange.model_validate(written)
    assert (count.min, count.max) == (low, high)
    assert str(count) == text
    assert CountRange.model_validate(count.model_dump()) == count


def test_count_range_contains() -> None:
    assert CountRange.model_validate(1).contains(1)
    assert not CountRange.model_validate(1).contains(0)
    between = CountRange.model_validate({"min": 1, "max": 3})
    assert [between.contains(n) for n in range(5)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert CountRange.model_validate({"min": 2}).contains(10**6)
    assert CountRange.model_validate({"max": 0}).contains(0)


def test_exact_count_dumps_as_an_int() -> None:
    expect = Expectations.model_validate(
        {"ice_restarts": 1, "dtls_rehandshakes": {"min": 0, "max": 2}}
    )
    dumped = expect.model_dump(mode="json")
    assert dumped["ice_restarts"] == 1
    assert dumped["dtls_rehandshakes"] == {"min": 0, "max": 2}


def _full() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "full",
            "description": "everything",
            "duration": "1m",
            "seed": 7,
            "calls": 3,
            "media": {"packet_ms": 40, "gap_threshold_ms": 90},
            "peers": {"callee": {"address": "127.0.0.3"}},
            "steps": [
                {"at": "1s", "do": "noop"},
                {"at": "30s", "do": "hangup", "side": "callee"},
            ],
            "expect": {
                "call_up": False,
                "ice_restarts": {"max": 1},
                "levels": {"dtls_rehandshakes": "good"},
                "max_media_gap_ms": 500,
            },
            "thresholds": {"dtls_rehandshakes": {"warning": 2, "critical": 4}},
        }
    )


def test_dump_validates_back_to_an_equal_scenario() -> None:
    scenario = _full()
    for mode in ("json", "python"):
        again = Scenario.model_validate(scenario.model_dump(mode=mode))
        assert again == scenario
        assert again.model_dump(mode=mode) == scenario.model_dump(mode=mode)


def test_digest_is_stable_and_content_sensitive() -> None:
    scenario = _full()
    assert scenario_digest(scenario) == scenario_digest(_full())
    assert len(scenario_digest(scenario)) == 64
    changed = scenario.model_copy(update={"seed": 8})
    assert scenario_digest(changed) != scenario_digest(scenario)


def test_with_source_keeps_the_scenario_and_adds_provenance() -> None:
    scenario = Scenario(name="x", duration=10)
    source = ScenarioSource("a.yaml", "0" * 64, "name: x\n")
    loaded = scenario.with_source(source)
    assert loaded.source == source
    assert scenario.source is None
    assert loaded.model_dump() == scenario.model_dump()
    assert scenario_digest(loaded) == scenario_digest(scenario)


def test_noop_is_the_default_template_step() -> None:
    spec = StepSpec.model_validate({"at": 0, "do": "noop"})
    assert spec.step is Noop
    assert spec.side is None


def test_step_spec_with_params_built_in_code(blackhole_step: type[Step]) -> None:
    params = blackhole_step.Params.model_validate({"duration": "2s"})
    spec = StepSpec(at=1, do="test.blackhole", side=Side.CALLER, params=params)
    assert spec.params is params
    with pytest.raises(ValidationError) as caught:
        StepSpec(at=1, do="hangup", side=Side.CALLER, params=params)
    loc, msg = _only_error(caught.value)
    assert loc == ("params",)
    assert msg == "step 'hangup' takes StepParams, got BlackholeParams"


def test_unknown_step_in_code_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        StepSpec(at=1, do="teleport", params=StepParams())
    loc, msg = _only_error(caught.value)
    assert loc == ("do",)
    assert msg.startswith("unknown step 'teleport'; known steps: ")
