"""Typed timeline events: one frozen dataclass per event type.

Theory of operation
-------------------
Every event has the common fields of :class:`EventBase` (``t_ms``, ``side``,
``initiator``, ``cause``), a ``type`` tag (a ``Literal`` of
:class:`~agent.observe.model.EventType`) and a typed ``detail``. The report's
JSON keeps the shape of schema version 1 — ``{"type", "t_ms", "side",
"initiator", "cause", "detail": {…}}`` — so the detail is its own dataclass
and :func:`to_json` writes it as is: a field renamed here is renamed in the
report, the JSON Schema (``docs/report.schema.json``) and every reader that
mypy checks, in one change.

Fields that only some events of a type carry (an attribution added by
:mod:`agent.observe.correlate`, a ``wire_started_ms`` only the wire tap knows)
are declared with :func:`absent_if_none`: ``None`` means the key is left out of
the JSON, as version 1 always did. Free-form parameters that come from outside
(a step's or a fault's own parameters) are one :func:`flattened` field, merged
into the detail object.

Correlation rewrites events with :func:`dataclasses.replace`; nothing mutates
an event once recorded.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias, cast

from pydantic import Field, JsonValue

from agent.observe.model import EventType, Initiator, Outcome, Side

_ABSENT_IF_NONE = "absent_if_none"
_FLATTEN = "flatten"

#: A JSON object as ``json`` reads and writes it: the report's on-disk form,
#: used only at the boundary where typed values become JSON or JSON comes in.
JsonObject: TypeAlias = dict[str, Any]

#: JSON-ready parameters a step or fault passes through (foreign, not ours).
Params: TypeAlias = Annotated[Mapping[str, JsonValue], Field(exclude=True)]


def absent_if_none() -> Any:
    """A field that is left out of the JSON while it is ``None``."""
    return field(default=None, metadata={_ABSENT_IF_NONE: True})


def flattened() -> Any:
    """A :data:`Params` field whose keys are merged into the enclosing object."""
    return field(default_factory=dict, metadata={_FLATTEN: True})


# -- detail pieces shared by several event types ------------------------------
@dataclass(frozen=True, kw_only=True)
class FaultRef:
    """The network fault an effect is attributed to."""

    fault_id: int
    kind: str
    t_ms: float


@dataclass(frozen=True, kw_only=True)
class GapPerDirection:
    """Longest media gap (ms) per direction around a restart/rehandshake."""

    caller_to_callee: float
    callee_to_caller: float


@dataclass(frozen=True, kw_only=True)
class CountPerDirection:
    caller_to_callee: int
    callee_to_caller: int


@dataclass(frozen=True, kw_only=True)
class CorrelatedWith:
    """The ICE restart an ICE-triggered rehandshake follows."""

    type: Literal["ice_restart"] = "ice_restart"
    t_ms: float
    generation: int


@dataclass(frozen=True, kw_only=True)
class PairInfo:
    """A selected candidate pair, as ``agent.stack.ice.SelectedPair.to_dict``."""

    local: str
    remote: str
    local_type: str
    remote_type: str

    @classmethod
    def from_stack(cls, pair: Mapping[str, Any]) -> PairInfo:
        # The stack's listener interface passes dicts; convert at this boundary.
        return cls(
            local=str(pair["local"]),
            remote=str(pair["remote"]),
            local_type=str(pair["local_type"]),
            remote_type=str(pair["remote_type"]),
        )


@dataclass(frozen=True, kw_only=True)
class AssociationInfo:
    """One DTLS association, as ``agent.stack.dtls.DtlsAssociation.describe``."""

    association: int
    role: str
    version: str | None = None
    cipher: str | None = None
    srtp_profile: str | None = None
    local_fingerprint: str | None = None

    @classmethod
    def from_stack(cls, info: Mapping[str, Any] | None) -> AssociationInfo | None:
        if not isinstance(info, Mapping):
            return None

        def text(key: str) -> str | None:
            value = info.get(key)
            return None if value is None else str(value)

        return cls(
            association=int(info.get("association") or 0),
            role=str(info.get("role")),
            version=text("version"),
            cipher=text("cipher"),
            srtp_profile=text("srtp_profile"),
            local_fingerprint=text("local_fingerprint"),
        )


# -- details, one per event type ------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StateDetail:
    state: str


@dataclass(frozen=True, kw_only=True)
class ConnectionStateDetail(StateDetail):
    fault: FaultRef | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class IceStateDetail(StateDetail):
    generation: int


@dataclass(frozen=True, kw_only=True)
class SelectedPairDetail:
    #: the first pair of a generation: its initial selection, not a change
    initial: bool
    generation: int
    local: str
    remote: str
    local_type: str
    remote_type: str
    fault: FaultRef | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class SpanDetail:
    """What an ICE restart and a DTLS rehandshake both carry once closed."""

    outcome: Outcome
    duration_ms: float
    #: what set it off (``step``, ``disconnected``, ``remote``, ``cert_expiry``…);
    #: absent for a rehandshake only the wire tap saw
    trigger: str | None = absent_if_none()
    media_gap_ms: GapPerDirection | None = absent_if_none()
    #: sequence numbers skipped across those gaps
    packets_missing: CountPerDirection | None = absent_if_none()
    fault: FaultRef | None = absent_if_none()
    #: the side whose observer recorded the cause (both sides observed)
    cause_from: Side | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class IceRestartDetail(SpanDetail):
    generation: int
    #: the new generation's pair; null when it never got one
    selected_pair: PairInfo | None = None


@dataclass(frozen=True, kw_only=True)
class DtlsRehandshakeDetail(SpanDetail):
    #: ``stack``, ``wire`` or ``wire+stack``
    detected_by: str
    #: the first handshake message the wire tap saw (wire-detected only)
    first_message: str | None = absent_if_none()
    wire_started_ms: float | None = absent_if_none()
    before: AssociationInfo | None = absent_if_none()
    after: AssociationInfo | None = absent_if_none()
    error: str | None = absent_if_none()
    #: DESIGN.md: "triggered by ICE, not DTLS itself"
    triggered_by: Literal["ice_restart"] | None = absent_if_none()
    correlated_with: CorrelatedWith | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class DtlsRecordDetail:
    record: Literal["alert"] = "alert"
    direction: str
    epoch: int
    #: None when the alert was encrypted
    level: int | None
    description: int | None


@dataclass(frozen=True, kw_only=True)
class MediaGapDetail:
    #: e.g. ``callee_to_caller``
    direction: str
    length_ms: float
    packets_missing: int
    ssrc: int
    fault: FaultRef | None = absent_if_none()
    #: set when the agent's own stall explains the gap (cause ``agent_stall``)
    stall_ms: float | None = absent_if_none()
    #: the silence lasted until media stopped being due (hang-up): no packet
    #: closed it, the packets due in it are lost
    until_end: bool | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class StepDetail:
    do: str
    target: str | None
    #: the step's own parameters, merged into this object
    params: Params = flattened()


@dataclass(frozen=True, kw_only=True)
class FaultDetail:
    #: the fault's kind (``nat_rebind``, ``blackhole``…)
    fault: str
    fault_id: int
    target: str
    #: who applied it: the agent's own sockets (``user``) or the kernel lab
    #: (``kernel``: nftables, conntrack, links, routes in a namespace)
    layer: Literal["kernel", "user"] = "user"
    #: the kind's own parameters, merged into this object
    params: Params = flattened()


@dataclass(frozen=True, kw_only=True)
class FaultEndDetail(FaultDetail):
    duration_ms: float
    ended_by: str | None = absent_if_none()
    #: what a filter did while it lasted
    dropped: int | None = absent_if_none()
    delayed: int | None = absent_if_none()
    largest_dropped: int | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class NoteDetail:
    text: str | None = absent_if_none()
    #: cause ``agent_stall``: how late the agent's event loop woke, or how
    #: late the agent's RTP sender sent (then ``t_ms`` is when it was due)
    stall_ms: float | None = absent_if_none()
    #: cause ``cert_expiry``: the expired certificate kept in use
    fingerprint_sha256: str | None = absent_if_none()


# -- events --------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EventBase:
    """Fields every event has; ``initiator`` is relative to ``side``."""

    t_ms: float
    side: Side
    initiator: Initiator | None = None
    cause: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectionStateEvent(EventBase):
    type: Literal[EventType.CONNECTION_STATE] = EventType.CONNECTION_STATE
    detail: ConnectionStateDetail


@dataclass(frozen=True, kw_only=True)
class IceStateEvent(EventBase):
    type: Literal[EventType.ICE_STATE] = EventType.ICE_STATE
    detail: IceStateDetail


@dataclass(frozen=True, kw_only=True)
class IceGatheringEvent(EventBase):
    type: Literal[EventType.ICE_GATHERING] = EventType.ICE_GATHERING
    detail: IceStateDetail


@dataclass(frozen=True, kw_only=True)
class DtlsStateEvent(EventBase):
    type: Literal[EventType.DTLS_STATE] = EventType.DTLS_STATE
    detail: StateDetail


@dataclass(frozen=True, kw_only=True)
class SelectedPairChangeEvent(EventBase):
    type: Literal[EventType.SELECTED_PAIR_CHANGE] = EventType.SELECTED_PAIR_CHANGE
    detail: SelectedPairDetail


@dataclass(frozen=True, kw_only=True)
class IceRestartEvent(EventBase):
    type: Literal[EventType.ICE_RESTART] = EventType.ICE_RESTART
    detail: IceRestartDetail


@dataclass(frozen=True, kw_only=True)
class DtlsRehandshakeEvent(EventBase):
    type: Literal[EventType.DTLS_REHANDSHAKE] = EventType.DTLS_REHANDSHAKE
    detail: DtlsRehandshakeDetail


@dataclass(frozen=True, kw_only=True)
class DtlsRecordEvent(EventBase):
    type: Literal[EventType.DTLS_RECORD] = EventType.DTLS_RECORD
    detail: DtlsRecordDetail


@dataclass(frozen=True, kw_only=True)
class MediaGapEvent(EventBase):
    type: Literal[EventType.MEDIA_GAP] = EventType.MEDIA_GAP
    detail: MediaGapDetail


@dataclass(frozen=True, kw_only=True)
class StepEvent(EventBase):
    type: Literal[EventType.STEP] = EventType.STEP
    detail: StepDetail


@dataclass(frozen=True, kw_only=True)
class FaultStartEvent(EventBase):
    type: Literal[EventType.FAULT_START] = EventType.FAULT_START
    detail: FaultDetail


@dataclass(frozen=True, kw_only=True)
class FaultEndEvent(EventBase):
    type: Literal[EventType.FAULT_END] = EventType.FAULT_END
    detail: FaultEndDetail


@dataclass(frozen=True, kw_only=True)
class NoteEvent(EventBase):
    type: Literal[EventType.NOTE] = EventType.NOTE
    detail: NoteDetail


Event: TypeAlias = (
    ConnectionStateEvent
    | IceStateEvent
    | IceGatheringEvent
    | DtlsStateEvent
    | SelectedPairChangeEvent
    | IceRestartEvent
    | DtlsRehandshakeEvent
    | DtlsRecordEvent
    | MediaGapEvent
    | StepEvent
    | FaultStartEvent
    | FaultEndEvent
    | NoteEvent
)
"""Any timeline event; narrow with ``isinstance``."""

#: The union tagged by ``type``, for the generated JSON Schema.
TaggedEvent: TypeAlias = Annotated[Event, Field(discriminator="type")]

#: Restarts and rehandshakes: spans, counted by the metric contract.
SpanEvent: TypeAlias = IceRestartEvent | DtlsRehandshakeEvent
SPAN_EVENTS = (IceRestartEvent, DtlsRehandshakeEvent)


# -- JSON ---------------------------------------------------------------------
def to_json(value: object) -> Any:
    """``value`` as JSON-ready data (dicts, lists, str, numbers, bool, None).

    Dataclasses become objects in field order, leaving out
    :func:`absent_if_none` fields that are ``None`` and merging
    :func:`flattened` ones; enums become their values. An event is written
    with ``type`` first and ``t_ms`` to 0.1 ms, the version-1 shape.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, EventBase):
        tag = cast(Event, value).type
        out = {"type": str(tag), **_fields(value)}
        out["t_ms"] = round(value.t_ms, 1)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value


#: types written as they are (exactly these: an enum deriving from str is not)
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, type(None)})
#: a dataclass's fields as (name, flattened, absent if None), once per class:
#: a loaded call's report has thousands of events, and ``dataclasses.fields``
#: walks the class's metadata each time
_PLANS: dict[type, tuple[tuple[str, bool, bool], ...]] = {}


def _plan(kind: type) -> tuple[tuple[str, bool, bool], ...]:
    plan = _PLANS.get(kind)
    if plan is None:
        plan = _PLANS[kind] = tuple(
            (
                item.name,
                bool(item.metadata.get(_FLATTEN)),
                bool(item.metadata.get(_ABSENT_IF_NONE)),
            )
            for item in dataclasses.fields(kind)
        )
    return plan


def _fields(value: object) -> JsonObject:
    out: JsonObject = {}
    for name, flatten, absent_if_none in _plan(type(value)):
        current = getattr(value, name)
        if flatten:
            out.update(to_json(current))
        elif current is None and absent_if_none:
            continue
        else:
            out[name] = current if type(current) in _PLAIN else to_json(current)
    return out
