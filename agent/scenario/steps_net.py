"""Network fault steps, derived from the fault registry — none written by hand.

Every fault in :data:`~agent.net.faults.FAULTS` becomes one step of the same
name: ``net.*`` steps need ``side:`` (they act on that side's own sockets),
``nat.*`` steps take none (they act on the call's NAT). The step's ``Params``
*is* the fault's ``Params`` model, so the scenario schema, ``callagent
steps`` and the README's fault table (:func:`fault_table`) cannot disagree
with what the fault takes. Running the step hands the validated params to
the call (:class:`NetStepTarget`), which looks the fault up again by name.

How a file writes a value is this layer's business: :data:`FILE_SYNTAX_CONTEXT`
gives the fault types their file syntax (``500ms``, loopback-only addresses)
from :mod:`agent.scenario.fields`, passed as pydantic validation context.

``python -m agent.scenario.steps_net README.md`` rewrites the README's table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from agent.errors import CallError
from agent.net.faults import FAULTS, Fault, FaultParams
from agent.net.faults.params import FILE_SYNTAX, Written
from agent.observe.model import Side
from agent.scenario.duration import Duration
from agent.scenario.fields import LoopbackAddress, PositiveDuration
from agent.scenario.steps import STEPS, SidePolicy, Step, StepTarget, register

__all__ = [
    "FAULT_STEPS",
    "FILE_SYNTAX_CONTEXT",
    "FaultStep",
    "NetStepTarget",
    "fault_of",
    "fault_table",
    "step_signature",
]


class NetStepTarget(StepTarget, Protocol):
    """A live call that can inject network faults."""

    async def apply_fault(
        self, side: Side | None, fault: str, params: FaultParams
    ) -> None:
        """Start the fault named ``fault`` on ``side`` (``None``: the NAT)."""
        ...


def _net(target: StepTarget, step: str) -> NetStepTarget:
    if not hasattr(target, "apply_fault"):
        raise CallError(f"{step}: this call cannot inject network faults")
    return target  # type: ignore[return-value]


# --- file syntax for the fault types -------------------------------------------


def _written_as(field_type: Any) -> Callable[[Any], Any]:
    """Validate a value as the scenario ``field_type`` would, keeping its
    error type and message (raised inside the fault's own validation)."""
    adapter: TypeAdapter[Any] = TypeAdapter(field_type)

    def convert(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PydanticCustomError(
                first["type"], "{message}", {"message": first["msg"]}
            ) from None

    return convert


#: Validation context that reads fault params as scenario files write them.
FILE_SYNTAX_CONTEXT: dict[str, Any] = {
    FILE_SYNTAX: {
        Written.SECONDS: _written_as(PositiveDuration),
        Written.SECONDS_OR_ZERO: _written_as(Duration),
        Written.ADDRESS: _written_as(LoopbackAddress),
    }
}


# --- one step per fault --------------------------------------------------------


class FaultStep(Step):
    """Starts :attr:`fault` on the call; generated, one per registered fault."""

    fault: ClassVar[type[Fault[Any]]]

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        if self.side == "required" and side is None:
            raise ValueError(f"{self.name} needs a side")
        assert isinstance(params, FaultParams)
        await _net(target, self.name).apply_fault(side, self.name, params)


def _step_for(fault: type[Fault[Any]]) -> type[FaultStep]:
    side: SidePolicy = "required" if fault.acts_on == "side" else "none"
    attributes = {
        "__doc__": fault.__doc__ or sys.modules[fault.__module__].__doc__,
        "__module__": __name__,
        "name": fault.name,
        "side": side,
        "Params": fault.Params,
        "summary": fault.summary,
        "fault": fault,
    }
    step = type(f"{fault.__name__}Step", (FaultStep,), attributes)
    return register(step)


#: The generated step of every registered fault, by name.
FAULT_STEPS: dict[str, type[FaultStep]] = {
    name: _step_for(fault) for name, fault in sorted(FAULTS.items())
}


def fault_of(step_name: str) -> type[Fault[Any]] | None:
    """The fault a step starts, or None when the step is not a network fault."""
    step = STEPS.get(step_name)
    return (
        step.fault if isinstance(step, type) and issubclass(step, FaultStep) else None
    )


# --- the README's table ----------------------------------------------------------

TABLE_BEGIN = (
    "<!-- fault-table: generated from agent/net/faults; regenerate with "
    "`python -m agent.scenario.steps_net README.md` -->"
)
TABLE_END = "<!-- /fault-table -->"


def step_signature(
    params: type[BaseModel], side: SidePolicy, omit: Container[str] = ()
) -> str:
    """``{side, rate, duration?}``: the keys a step takes, required ones first."""
    fields = {k: v for k, v in params.model_fields.items() if k not in omit}
    keys = {"required": ["side"], "optional": ["side?"], "none": []}[side]
    keys += [name for name, info in fields.items() if info.is_required()]
    keys += [f"{name}?" for name, info in fields.items() if not info.is_required()]
    return f"{{{', '.join(keys)}}}" if keys else ""


def fault_table() -> str:
    """The README's Markdown table of the network fault steps."""
    rows = [
        "| step | what happens | default cause |",
        "|---|---|---|",
    ]
    order = sorted(FAULTS.values(), key=lambda f: (f.acts_on != "side", f.name))
    for fault in order:
        # Every fault takes ``cause``; the README says so once, under the table.
        side = FAULT_STEPS[fault.name].side
        signature = step_signature(fault.Params, side, omit={"cause"})
        shown = f" `{signature}`" if signature else ""
        rows.append(
            f"| `{fault.name}`{shown} | {fault.summary} | `{fault.default_cause}` |"
        )
    return "\n".join(rows)


def replace_fault_table(text: str) -> str:
    """``text`` with the table between the markers regenerated."""
    head, begin, rest = text.partition(TABLE_BEGIN)
    _, end, tail = rest.partition(TABLE_END)
    if not begin or not end:
        raise ValueError(f"no {TABLE_BEGIN!r} ... {TABLE_END!r} markers")
    return f"{head}{TABLE_BEGIN}\n{fault_table()}\n{TABLE_END}{tail}"


def main(argv: Sequence[str]) -> int:
    for name in argv:
        path = Path(name)
        path.write_text(replace_fault_table(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
