"""Shared helpers for the scenario tests: a scratch step registry, a test step."""

from collections.abc import Iterator
from typing import ClassVar

import pytest
from pydantic import BaseModel, Field

from agent.observe.model import Side
from agent.scenario.duration import Duration
from agent.scenario.steps import STEPS, Step, StepParams, StepTarget, register


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Let a test register steps without leaking them into other tests."""
    before = dict(STEPS)
    yield
    STEPS.clear()
    STEPS.update(before)


class BlackholeParams(StepParams):
    duration: Duration
    loss: float = Field(default=1.0, ge=0, le=1)


class FakeBlackhole(Step):
    """Shaped like a future ``net.blackhole``: a step with parameters."""

    name = "test.blackhole"
    side = "required"
    Params: ClassVar[type[BaseModel]] = BlackholeParams
    summary = "drop the side's packets for a while (test double)"

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        assert isinstance(params, BlackholeParams)
        target.note(side, f"blackhole {params.duration}s")


@pytest.fixture
def blackhole_step(scratch_registry: None) -> type[Step]:
    return register(FakeBlackhole)
