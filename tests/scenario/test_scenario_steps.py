"""The step registry and the two shipped steps, run against a fake call."""

from typing import ClassVar, cast

import pytest
from pydantic import BaseModel, ConfigDict

from agent.observe.model import Side
from agent.scenario.steps import (
    STEPS,
    Hangup,
    Noop,
    SidePolicy,
    Step,
    StepParams,
    StepTarget,
    register,
)


class FakeCall:
    """Records what steps asked of it; the call layer is not under test."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Side | None, str]] = []

    async def hangup(self, side: Side) -> None:
        self.actions.append(("hangup", side, ""))

    def note(self, side: Side | None, text: str) -> None:
        self.actions.append(("note", side, text))


def _as_target(call: FakeCall) -> StepTarget:
    # FakeCall has only the methods the steps under test call; a step that
    # calls another fails the test with an AttributeError.
    return cast(StepTarget, call)


def _step(
    name: str = "test.step",
    side: SidePolicy = "none",
    params: type[BaseModel] = StepParams,
    summary: str = "a test step",
) -> type[Step]:
    class Custom(Step):
        Params: ClassVar[type[BaseModel]] = params

        async def run(
            self, target: StepTarget, side: Side | None, params: BaseModel
        ) -> None:
            target.note(side, "ran")

    Custom.name = name
    Custom.side = side
    Custom.summary = summary
    return Custom


def test_shipped_steps_are_registered() -> None:
    assert STEPS["noop"] is Noop
    assert STEPS["hangup"] is Hangup
    assert Noop.side == "none"
    assert Hangup.side == "required"
    assert Hangup.ends_call and not Noop.ends_call


def test_every_registered_step_can_be_listed() -> None:
    for name, step in STEPS.items():
        assert step.name == name
        assert step.summary and "\n" not in step.summary
        assert step.Params.model_config.get("extra") == "forbid"


async def test_noop_does_nothing_and_records_nothing() -> None:
    call = FakeCall()
    await Noop().run(_as_target(call), None, StepParams())
    assert call.actions == []


@pytest.mark.parametrize("side", list(Side))
async def test_hangup_asks_that_side_to_hang_up(side: Side) -> None:
    call = FakeCall()
    await Hangup().run(_as_target(call), side, StepParams())
    assert call.actions == [("hangup", side, "")]


async def test_hangup_without_a_side_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="hangup needs a side"):
        await Hangup().run(_as_target(FakeCall()), None, StepParams())


@pytest.mark.usefixtures("scratch_registry")
async def test_register_adds_a_runnable_step() -> None:
    custom = register(_step())
    assert STEPS["test.step"] is custom
    call = FakeCall()
    await custom().run(_as_target(call), None, StepParams())
    assert call.actions == [("note", None, "ran")]


@pytest.mark.usefixtures("scratch_registry")
def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="'noop' is already registered by"):
        register(_step(name="noop"))
    assert STEPS["noop"] is Noop


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize("name", ["", "Net.Blackhole", "net blackhole", "net.", "1x"])
def test_bad_step_names_raise(name: str) -> None:
    with pytest.raises(TypeError, match="dotted lowercase name"):
        register(_step(name=name))


@pytest.mark.usefixtures("scratch_registry")
def test_bad_side_policy_raises() -> None:
    with pytest.raises(TypeError, match="side must be"):
        register(_step(side="both"))  # type: ignore[arg-type]


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize("summary", ["", "  ", "two\nlines"])
def test_summary_must_be_one_line(summary: str) -> None:
    with pytest.raises(TypeError, match="summary must be one non-empty line"):
        register(_step(summary=summary))


@pytest.mark.usefixtures("scratch_registry")
def test_params_must_forbid_unknown_keys() -> None:
    class Lenient(BaseModel):
        model_config = ConfigDict(extra="ignore")

    with pytest.raises(TypeError, match="extra='forbid'"):
        register(_step(params=Lenient))


@pytest.mark.usefixtures("scratch_registry")
def test_params_must_be_a_pydantic_model() -> None:
    with pytest.raises(TypeError, match="must be a pydantic model"):
        register(_step(params=dict))  # type: ignore[arg-type]


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize("reserved", ["at", "do", "side", "params"])
def test_params_cannot_shadow_timeline_keys(reserved: str) -> None:
    clashing = type(
        "Clashing", (StepParams,), {"__annotations__": {reserved: int}, reserved: 0}
    )
    with pytest.raises(TypeError, match="reserved field names"):
        register(_step(params=clashing))
