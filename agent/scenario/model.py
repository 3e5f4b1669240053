"""What a scenario *is*, as validated data: the call, its timeline, its verdict.

Theory of operation
-------------------
A scenario file is a mapping that :class:`Scenario` validates in one pass.
Every model here is frozen and refuses unknown keys, so a misspelt field is
an error that names the closest valid field instead of a setting silently
ignored (a scenario that quietly did not inject its fault would still
"pass"). Every error is raised as a pydantic error *at the location of the
offending key* (``('steps', 2, 'at')``); :mod:`agent.scenario.loader` maps
that location back to a file line and turns it into one sentence.

The ``expect:`` and ``thresholds:`` sections live in
:mod:`agent.scenario.expectations`, ``media:`` and ``peers:`` in
:mod:`agent.scenario.peers`, ``network:`` in :mod:`agent.scenario.network`;
the first two are re-exported here. Three kinds of rule live here:

* field rules (types, ranges, ``Duration`` syntax, loopback-only addresses),
  mostly as the shared types of :mod:`agent.scenario.fields`;
* step rules: ``do`` picks a class from :data:`~agent.scenario.steps.STEPS`,
  whose own ``Params`` model validates the keys written inline next to
  ``at``/``do``/``side``, and whose ``side`` policy is enforced (the network
  fault steps and their params come from :mod:`agent.net.faults`, read in
  file syntax via :data:`~agent.scenario.steps_net.FILE_SYNTAX_CONTEXT`);
* cross-field rules that only the whole scenario can judge (a step after the
  end, a step after a hangup, an expectation the media settings cannot
  measure). Those are :class:`Scenario` validators.

``model_dump(mode="json")`` gives the file form back (durations as seconds,
step params inline), so a dumped scenario loads to an equal one, and
:func:`scenario_digest` hashes that canonical form for reports.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    InstanceOf,
    PrivateAttr,
    SerializationInfo,
    StrictStr,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.observe.model import Side
from agent.scenario.duration import (
    Duration,
    describe_value,
    format_duration,
)
from agent.scenario.expectations import (
    CauseExpectations,
    CountRange,
    Expectations,
    InitiatorExpectations,
    LevelExpectations,
    OutcomeExpectations,
    SideCounts,
    SidePairChanges,
    ThresholdSettings,
)
from agent.scenario.fields import (
    CallCount,
    CallDuration,
    Loc,
    Section,
    Seed,
    Slug,
    fail,
    located_error,
    raise_errors,
    unknown_key_errors,
)
from agent.scenario.network import NetworkSettings, kernel_refusal
from agent.scenario.peers import MediaSettings, PeerSettings, PeersSettings
from agent.scenario.steps import RESERVED_KEYS, STEPS, Step
from agent.scenario.steps_net import FILE_SYNTAX_CONTEXT, fault_of
from agent.targets.spec import TargetError, parse_target

__all__ = [
    "CauseExpectations",
    "CountRange",
    "Duration",
    "Expectations",
    "InitiatorExpectations",
    "LevelExpectations",
    "MediaSettings",
    "OutcomeExpectations",
    "PeerSettings",
    "PeersSettings",
    "Scenario",
    "ScenarioSource",
    "SideCounts",
    "SidePairChanges",
    "StepSpec",
    "ThresholdSettings",
    "scenario_digest",
]


# --- steps ------------------------------------------------------------------


class StepSpec(BaseModel):
    """One timeline entry: at ``at``, run step ``do`` on ``side`` with ``params``.

    In a file the step's parameters sit inline (``{at: 5s, do: net.blackhole,
    side: caller, duration: 2s}``); here they are validated into
    ``params``, an instance of the step's ``Params`` model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Duration
    do: str
    side: Side | None = None
    params: InstanceOf[BaseModel]

    @property
    def step(self) -> type[Step]:
        return STEPS[self.do]

    @model_validator(mode="before")
    @classmethod
    def _split_inline_params(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data  # not a mapping: field validation says what is wrong
        step = cls._named_step(data)
        name = step.name
        built = data.get("params")
        if isinstance(built, BaseModel):
            # Built in code with ``params=``: only its type is left to check.
            if type(built) is not step.Params:
                message = (
                    f"step {name!r} takes {step.Params.__name__}, "
                    f"got {type(built).__name__}"
                )
                fail(cls.__name__, ("params",), "step_params", message, built)
            return data
        inline = {key: value for key, value in data.items() if key not in RESERVED_KEYS}
        param_names = step.Params.model_fields
        kind = f"parameter for step {name!r}" + (
            "" if param_names else ", which takes none"
        )
        raise_errors(cls.__name__, unknown_key_errors(inline, param_names, kind))
        # A ValidationError from here keeps its locations, which are already
        # the inline keys: ('steps', i, 'duration').
        params = step.Params.model_validate(inline, context=FILE_SYNTAX_CONTEXT)
        timeline = {key: value for key, value in data.items() if key in RESERVED_KEYS}
        return {**timeline, "params": params}

    @classmethod
    def _named_step(cls, data: Mapping[str, Any]) -> type[Step]:
        known_steps = ", ".join(sorted(STEPS))
        if "do" not in data:
            message = f"required field is missing; name a step ({known_steps})"
            fail(cls.__name__, ("do",), "missing_step", message, None)
        name = data["do"]
        step = STEPS.get(name) if isinstance(name, str) else None
        if step is None:
            hint = difflib.get_close_matches(str(name), sorted(STEPS), n=1)
            guess = f" (did you mean {hint[0]!r}?)" if hint else ""
            message = (
                f"unknown step {describe_value(name)}{guess}; "
                f"known steps: {known_steps}"
            )
            fail(cls.__name__, ("do",), "unknown_step", message, name)
        return step

    @model_validator(mode="after")
    def _check_side_policy(self) -> Self:
        policy = self.step.side
        if policy == "required" and self.side is None:
            message = f"step {self.do!r} needs side: caller or callee"
            fail(type(self).__name__, ("side",), "side", message, None)
        if policy == "none" and self.side is not None:
            message = f"step {self.do!r} takes no side; remove side: {self.side}"
            fail(type(self).__name__, ("side",), "side", message, self.side)
        return self

    @model_serializer(mode="plain")
    def _to_file_form(self, info: SerializationInfo) -> dict[str, Any]:
        as_json = info.mode == "json"
        out: dict[str, Any] = {"at": self.at, "do": self.do}
        if self.side is not None:
            out["side"] = self.side.value if as_json else self.side
        out.update(self.params.model_dump(mode="json" if as_json else "python"))
        return out


# --- the scenario -----------------------------------------------------------


#: Most call starts per second a ramp may ask for (a ramp above it is "at once").
MAX_RAMP_PER_S = 10_000.0
_RATE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*/\s*(?P<unit>s|m|min)")


def parse_rate(value: Any) -> float:
    """Calls per second from ``50/s``, ``600/m`` (``/min``) or a bare number."""
    rate: float | None = None
    # bool is an int subclass; ``ramp: yes`` is not a rate.
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str) and (match := _RATE.fullmatch(value.strip())):
        per = 60.0 if match["unit"] in ("m", "min") else 1.0
        rate = float(match["number"]) / per
    if rate is None:
        raise PydanticCustomError(
            "rate",
            "invalid ramp {value}: write calls per second or minute, like 50/s "
            "or 600/m",
            {"value": str(value)[:40]},
        )
    if not 0 < rate <= MAX_RAMP_PER_S:
        raise PydanticCustomError(
            "rate_range",
            "ramp {value} is out of range: more than 0 and at most {limit}/s",
            {"value": str(value)[:40], "limit": int(MAX_RAMP_PER_S)},
        )
    return rate


#: Calls started per second, written ``50/s`` or ``600/m``.
CallRate = Annotated[float, BeforeValidator(parse_rate)]


@dataclass(frozen=True)
class ScenarioSource:
    """Which bytes a scenario came from, for the report's provenance."""

    path: str
    sha256: str
    text: str


class Scenario(Section):
    """A call, a timeline of steps, and what the report must show."""

    name: Slug
    description: StrictStr = ""
    duration: CallDuration
    #: None: the runner picks one and records it, so the run can be replayed
    seed: Seed | None = None
    #: concurrent copies of this call
    calls: CallCount = 1
    #: start the copies at this many calls per second (``50/s``), not all at
    #: once: 500 handshakes in the same millisecond measure the burst, not
    #: the system; None starts them together
    ramp: CallRate | None = None
    media: MediaSettings = MediaSettings()
    peers: PeersSettings = PeersSettings()
    network: NetworkSettings = NetworkSettings()
    steps: tuple[StepSpec, ...] = ()
    expect: Expectations = Expectations()
    #: in a kernel lab, these replace the same keys of ``expect`` (where the
    #: physics differ: say why in the description)
    expect_kernel: Expectations | None = None
    thresholds: ThresholdSettings = ThresholdSettings()
    #: the far end (``agent``, ``whip+http(s)://…``, ``browser:chromium``…);
    #: None: the built-in agent. ``--target`` overrides it (agent.targets).
    target: StrictStr | None = None

    _source: ScenarioSource | None = PrivateAttr(default=None)

    @property
    def source(self) -> ScenarioSource | None:
        """The file this was loaded from; None when built in code."""
        return self._source

    def with_source(self, source: ScenarioSource) -> Scenario:
        copy = self.model_copy()
        copy._source = source
        return copy

    @property
    def ordered_steps(self) -> tuple[StepSpec, ...]:
        """Steps in the order they run: by ``at``, ties in file order."""
        return tuple(sorted(self.steps, key=lambda spec: spec.at))

    @model_validator(mode="after")
    def _check_timeline_and_expectations(self) -> Self:
        errors = [
            *self._steps_outside_the_call(),
            *self._steps_after_the_call_ended(),
            *self._expectations_that_cannot_hold(),
        ]
        raise_errors(type(self).__name__, errors)
        return self

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_target(value)
            except TargetError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check_lab(self) -> Self:
        network = self.network
        errors: list[InitErrorDetails] = []
        if network.lab == "user":
            for key in ("shared", "max_flows"):
                if getattr(network, key) not in (False, None):
                    errors.append(
                        located_error(
                            ("network", key),
                            "needs_kernel_lab",
                            f"network.{key} needs network.lab: kernel",
                            getattr(network, key),
                        )
                    )
        else:
            reason = kernel_refusal(network, self.calls)
            if reason is not None:
                errors.append(
                    located_error(("network", "lab"), "kernel_lab", reason, "kernel")
                )
        raise_errors(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _check_network_steps(self) -> Self:
        errors: list[InitErrorDetails] = []
        nat = self.network.nat
        for index, spec in enumerate(self.steps):
            fault = fault_of(spec.do)
            if fault is None:
                continue
            if fault.acts_on == "nat" and nat is None:
                errors.append(
                    located_error(
                        ("steps", index, "do"),
                        "needs_nat",
                        f"{spec.do} acts on the NAT, but network.nat is not set",
                        spec.do,
                    )
                )
            if nat is not None and fault.moves_side and spec.side == nat.side:
                errors.append(
                    located_error(
                        ("steps", index, "side"),
                        "behind_nat",
                        f"the {nat.side} is behind the NAT; its traffic moves "
                        "with nat.rebind, not " + spec.do,
                        str(spec.side),
                    )
                )
        raise_errors(type(self).__name__, errors)
        return self

    def _steps_outside_the_call(self) -> Iterable[InitErrorDetails]:
        for index, spec in enumerate(self.steps):
            if spec.at >= self.duration:
                yield located_error(
                    ("steps", index, "at"),
                    "step_after_end",
                    f"{format_duration(spec.at)} is not before the end of the "
                    f"scenario (duration {format_duration(self.duration)})",
                    spec.at,
                )

    def _first_call_end(self) -> tuple[int, StepSpec] | None:
        ordered = sorted(enumerate(self.steps), key=lambda item: item[1].at)
        return next(((i, s) for i, s in ordered if s.step.ends_call), None)

    def _steps_after_the_call_ended(self) -> Iterable[InitErrorDetails]:
        end = self._first_call_end()
        if end is None:
            return
        end_index, end_spec = end
        order = [i for i, _ in sorted(enumerate(self.steps), key=lambda x: x[1].at)]
        for index in order[order.index(end_index) + 1 :]:
            yield located_error(
                ("steps", index, "at"),
                "step_after_hangup",
                f"runs after the {end_spec.do} at {format_duration(end_spec.at)} "
                f"(steps[{end_index}]) ended the call, so it would never run",
                self.steps[index].at,
            )

    def _expectations_that_cannot_hold(self) -> Iterable[InitErrorDetails]:
        end = self._first_call_end()
        if end is not None and self.expect.call_up:
            end_index, end_spec = end
            # Point at what the user wrote: their call_up, else the step.
            if "call_up" in self.expect.model_fields_set:
                loc: Loc = ("expect", "call_up")
                message = (
                    f"the call cannot be up at the end: steps[{end_index}] "
                    f"({end_spec.do} at {format_duration(end_spec.at)}) ends it; "
                    "set call_up: false"
                )
            else:
                loc = ("steps", end_index, "do")
                message = (
                    f"{end_spec.do} ends the call, but expect.call_up (true by "
                    "default) wants it up at the end; set expect.call_up: false"
                )
            yield located_error(loc, "call_up_after_hangup", message, True)
        if not self.media.audio:
            # Gaps and losses are measured on the RTP audio stream.
            for field in ("max_media_gap_ms", "max_packets_lost"):
                if getattr(self.expect, field) is not None:
                    yield located_error(
                        ("expect", field),
                        "needs_audio",
                        "needs media.audio: true (it is measured on the audio stream)",
                        getattr(self.expect, field),
                    )


def scenario_digest(scenario: Scenario) -> str:
    """sha256 of the canonical JSON form: equal for equal scenarios, whatever
    the file's formatting, comments or key order."""
    canonical = json.dumps(
        scenario.model_dump(mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
