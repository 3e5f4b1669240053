"""The observation vocabulary shared by every layer: sides, events, metric levels.

Theory of operation
-------------------
Each peer of a call has one observer. An observer turns what the peer's ICE
gatherer, ICE transport, DTLS transport, wire tap and media receiver did into
typed events (:mod:`agent.observe.events`) on a timeline (``t_ms`` from the
start of the call, taken from an injectable clock). Metrics are *derived*
from the events — never counted separately — so the JSON report's counters
and its timeline cannot disagree.

The metric contract (``../shared/DESIGN.md``):

* ``dtls_rehandshakes`` counts DTLS handshakes that *start* after the initial one
  completed; the initial handshake and retransmitted flights are not counted.
* ``ice_restarts`` counts ICE generations (new ufrag/pwd) after the initial one.
* ``selected_pair_changes`` counts selected-pair switches inside one generation.

``initiator`` on an event is relative to the observing ``side``: ``local`` means
that peer started it, ``remote`` the far end, ``network`` a fault nobody chose.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class Side(enum.StrEnum):
    CALLER = "caller"
    CALLEE = "callee"

    @property
    def other(self) -> Side:
        return Side.CALLEE if self is Side.CALLER else Side.CALLER


class Initiator(enum.StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    NETWORK = "network"


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    #: the call ended before the restart/rehandshake finished
    INCOMPLETE = "incomplete"
    #: the far end answered an ICE restart with its old credentials: it did
    #: not restart, and the old generation stays in use
    REJECTED = "rejected"


class Level(enum.StrEnum):
    GOOD = "good"
    WARNING = "warning"
    CRITICAL = "critical"


class EventType(enum.StrEnum):
    #: RTCPeerConnection-like connection state: new/connecting/connected/
    #: disconnected/failed/closed
    CONNECTION_STATE = "connection_state"
    ICE_STATE = "ice_state"
    ICE_GATHERING = "ice_gathering"
    DTLS_STATE = "dtls_state"
    SELECTED_PAIR_CHANGE = "selected_pair_change"
    ICE_RESTART = "ice_restart"
    DTLS_REHANDSHAKE = "dtls_rehandshake"
    #: a DTLS record of interest seen by the wire tap (e.g. an alert after setup)
    DTLS_RECORD = "dtls_record"
    MEDIA_GAP = "media_gap"
    STEP = "step"
    FAULT_START = "fault_start"
    FAULT_END = "fault_end"
    NOTE = "note"


#: The two media directions of a call, as the report names them.
DIRECTIONS = ("caller_to_callee", "callee_to_caller")

#: Event types that the metric contract counts.
COUNTED = {
    EventType.DTLS_REHANDSHAKE: "dtls_rehandshakes",
    EventType.ICE_RESTART: "ice_restarts",
}


@dataclass(frozen=True)
class Thresholds:
    """Levels per DESIGN.md: below ``warning`` good, below ``critical`` warning."""

    warning: int = 1
    critical: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.warning <= self.critical:
            raise ValueError("thresholds need 0 < warning <= critical")

    def level(self, count: int) -> Level:
        if count >= self.critical:
            return Level.CRITICAL
        if count >= self.warning:
            return Level.WARNING
        return Level.GOOD


@dataclass(frozen=True)
class MetricCount:
    total: int
    local: int
    remote: int
    level: Level


@dataclass(frozen=True)
class Metrics:
    """The contract metrics of one observer (``metrics`` in the report)."""

    dtls_rehandshakes: MetricCount
    ice_restarts: MetricCount
    #: selected-pair switches within one ICE generation
    selected_pair_changes: int


class Countable(Protocol):
    """An event, or a span still open, as far as counting needs it."""

    @property
    def type(self) -> EventType: ...
    @property
    def initiator(self) -> Initiator | None: ...


def count_metric(
    events: Iterable[Countable], kind: EventType, thresholds: Thresholds
) -> MetricCount:
    """Count one contract metric from one observer's events.

    An event initiated by the network (a fault) counts toward ``total`` but
    toward neither ``local`` nor ``remote``.
    """
    local = remote = total = 0
    for event in events:
        if event.type is not kind:
            continue
        total += 1
        if event.initiator is Initiator.LOCAL:
            local += 1
        elif event.initiator is Initiator.REMOTE:
            remote += 1
    return MetricCount(total, local, remote, thresholds.level(total))


def worst(levels: Iterable[Level]) -> Level:
    order = [Level.GOOD, Level.WARNING, Level.CRITICAL]
    return max(levels, key=order.index, default=Level.GOOD)
