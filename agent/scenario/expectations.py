"""What a scenario expects of a call's report, and its level thresholds.

The ``expect:`` and ``thresholds:`` sections of a scenario file, as validated
data (split from :mod:`agent.scenario.model` to keep each module readable;
that module re-exports every name). :mod:`agent.scenario.expect` checks a
report against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    model_serializer,
    model_validator,
)

from agent.net.faults.params import Cause
from agent.observe.model import Level, Thresholds
from agent.scenario.duration import describe_value
from agent.scenario.fields import (
    Count,
    Milliseconds,
    NonNegativeMilliseconds,
    Section,
    fail,
)

__all__ = [
    "CauseExpectations",
    "CountRange",
    "Expectations",
    "InitiatorExpectations",
    "LevelExpectations",
    "MetricThresholds",
    "OutcomeExpectations",
    "SideCounts",
    "SidePairChanges",
    "ThresholdSettings",
]


# --- expectations -----------------------------------------------------------


class CountRange(Section):
    """An expected count: ``2`` (exactly) or ``{min: 1, max: 3}`` (either optional)."""

    min: Count | None = None
    max: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _exact_count(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"min": data, "max": data}
        if data is None or not isinstance(data, Mapping):
            message = (
                "expected a count (e.g. 0) or a range {min: 0, max: 2}, "
                f"got {describe_value(data)}"
            )
            fail(cls.__name__, (), "count", message, data)
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.min is None and self.max is None:
            message = "a range needs min, max or both"
            fail(type(self).__name__, (), "count_range", message, {})
        if self.min is not None and self.max is not None and self.min > self.max:
            message = f"min {self.min} is greater than max {self.max}"
            fail(type(self).__name__, (), "count_range", message, {})
        return self

    @model_serializer(mode="wrap")
    def _exact_as_int(self, handler: SerializerFunctionWrapHandler) -> Any:
        if self.min is not None and self.min == self.max:
            return self.min
        return handler(self)

    def contains(self, count: int) -> bool:
        return (self.min is None or count >= self.min) and (
            self.max is None or count <= self.max
        )

    def __str__(self) -> str:
        if self.min is not None and self.min == self.max:
            return str(self.min)
        if self.min is not None and self.max is not None:
            return f"{self.min}..{self.max}"
        if self.min is not None:
            return f">= {self.min}"
        return f"<= {self.max}"


class LevelExpectations(Section):
    """Expected DESIGN.md level per contract metric (exact match)."""

    ice_restarts: Level | None = None
    dtls_rehandshakes: Level | None = None


class SideCounts(Section):
    """Expected counts of one metric by the side that initiated them."""

    caller: CountRange | None = None
    callee: CountRange | None = None
    #: faults nobody chose (initiator ``network``)
    network: CountRange | None = None


class InitiatorExpectations(Section):
    """Who started the counted events: ``{ice_restarts: {caller: 1}}``."""

    ice_restarts: SideCounts | None = None
    dtls_rehandshakes: SideCounts | None = None


class SidePairChanges(Section):
    """Selected-pair changes as each side's own observer counted them."""

    caller: CountRange | None = None
    callee: CountRange | None = None


OutcomeName = Literal["completed", "failed", "incomplete"]


class OutcomeExpectations(Section):
    """The outcome every counted event of a metric must have."""

    ice_restarts: OutcomeName | None = None
    dtls_rehandshakes: OutcomeName | None = None


class CauseExpectations(Section):
    """The cause every counted event of a metric must carry."""

    ice_restarts: Cause | None = None
    dtls_rehandshakes: Cause | None = None


class Expectations(Section):
    """What one call's report must show for the scenario to pass.

    Only ``call_up`` is checked by default; every other check is opt-in.
    ``call_up: false`` means "not checked", not "must be down".
    """

    call_up: StrictBool = True
    max_setup_ms: Milliseconds | None = None
    ice_restarts: CountRange | None = None
    dtls_rehandshakes: CountRange | None = None
    selected_pair_changes: CountRange | None = None
    levels: LevelExpectations = LevelExpectations()
    #: counted events by the side that started them
    initiated_by: InitiatorExpectations = InitiatorExpectations()
    #: the cause each counted event is attributed to
    causes: CauseExpectations = CauseExpectations()
    #: how each counted event ended
    outcomes: OutcomeExpectations = OutcomeExpectations()
    #: the longest a direction took, after setup (both sides' DTLS
    #: connected), to bring its first packet (``media.<d>.start_ms``)
    max_media_start_ms: Milliseconds | None = None
    #: the longest gap seen by either receiver
    max_media_gap_ms: NonNegativeMilliseconds | None = None
    #: packets lost in both directions together
    max_packets_lost: Count | None = None
    #: the longest gap seen by either receiver, as a range: for a scenario
    #: whose point is that the tool *detects* an outage (``{min: 4500}``)
    media_gap_ms: CountRange | None = None
    #: packets lost in both directions together, as a range
    packets_lost: CountRange | None = None
    #: selected-pair changes per side (the far end follows a NAT rebinding)
    selected_pair_changes_by_side: SidePairChanges | None = None
    #: every restart, rehandshake, pair change, media gap and disconnected/
    #: failed state on the timeline carries a cause
    all_events_attributed: StrictBool = False


# --- thresholds -------------------------------------------------------------


class _ThresholdsSpec(Section):
    """The file form of :class:`~agent.observe.model.Thresholds`."""

    warning: Annotated[StrictInt, Field(ge=1)] = 1
    critical: Annotated[StrictInt, Field(ge=1)] = 2

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.warning > self.critical:
            message = (
                f"warning {self.warning} is above critical {self.critical}; "
                "need 0 < warning <= critical"
            )
            fail(type(self).__name__, (), "thresholds", message, {})
        return self


def _thresholds_from_file(value: Any) -> Any:
    if isinstance(value, Thresholds):
        return value
    spec = _ThresholdsSpec.model_validate(value)
    return Thresholds(warning=spec.warning, critical=spec.critical)


def _thresholds_to_file(thresholds: Thresholds) -> dict[str, int]:
    return {"warning": thresholds.warning, "critical": thresholds.critical}


MetricThresholds = Annotated[
    Thresholds,
    BeforeValidator(_thresholds_from_file),
    PlainSerializer(_thresholds_to_file),
]


class ThresholdSettings(Section):
    """Per-metric level thresholds; DESIGN.md's 0 good, 1 warning, 2+ critical."""

    ice_restarts: MetricThresholds = Thresholds()
    dtls_rehandshakes: MetricThresholds = Thresholds()
