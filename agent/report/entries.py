"""Typed report entries: the JSON report (schema version 1) as dataclasses.

Theory of operation
-------------------
The call layer builds a :class:`CallEntry` per finished call from typed parts
(:class:`SideEntry`, :class:`MediaEntry`, the observers'
:class:`~agent.observe.model.Metrics` and typed events) and writes it with
:func:`~agent.observe.events.to_json`, which keeps the version-1 shape: field
names here are the JSON keys. :class:`Report` is the whole document.

The same types generate the report's JSON Schema
(:mod:`agent.report.jsonschema`, committed as ``docs/report.schema.json``), so
the schema, the writer and the docs cannot drift apart unnoticed: a test
compares the committed file with the generated one, and every report the tests
write is validated against it.

Objects may carry keys not declared here (docs/report.md: readers ignore what
they do not know), so the schema does not forbid additional properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from agent.observe.events import (
    JsonObject,
    PairInfo,
    TaggedEvent,
    absent_if_none,
    to_json,
)
from agent.observe.media import MediaGap, MediaStats
from agent.observe.model import Metrics


@dataclass(frozen=True, kw_only=True)
class CertificateInfo:
    fingerprint_sha256: str | None
    #: null when only the far end's fingerprint is known (from its SDP)
    not_after: str | None


@dataclass(frozen=True, kw_only=True)
class SideEntry:
    """``sides.<side>`` for a side the agent plays."""

    metrics: Metrics
    address: str
    selected_pair: PairInfo | None
    final_state: str
    certificate: CertificateInfo | None
    #: every certificate the side used, as the stack records them
    certificates: list[Mapping[str, JsonValue]] = field(default_factory=list)
    packets_sent: int
    #: null unless the call decodes audio
    frames_decoded: int | None = None


@dataclass(frozen=True, kw_only=True)
class RemoteIce:
    ufrag: str | None
    candidates: int


@dataclass(frozen=True, kw_only=True)
class RemoteSideEntry:
    """``sides.<side>`` for a far end the agent does not play (WHIP, browser)."""

    agent: Literal[False] = False
    #: where its media came from, when a pair was selected
    address: str | None = None
    #: not observed by us
    metrics: None = None
    certificate: CertificateInfo | None = absent_if_none()
    ice: RemoteIce | None = absent_if_none()
    #: its SDP media direction (``sendrecv``, ``recvonly``…)
    direction: str | None = absent_if_none()
    #: a served call: where the offer came from, and its User-Agent
    remote_address: str | None = absent_if_none()
    user_agent: str | None = absent_if_none()
    #: a WHIP client call: the endpoint and the session resource it created
    endpoint: str | None = absent_if_none()
    resource: str | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class GapEntry:
    start_ms: float
    length_ms: float
    packets_missing: int
    sender_paused: bool

    @classmethod
    def from_gap(cls, gap: MediaGap) -> GapEntry:
        return cls(
            start_ms=round(gap.start_ms, 1),
            length_ms=round(gap.length_ms, 1),
            packets_missing=gap.packets_missing,
            sender_paused=gap.sender_paused,
        )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True, kw_only=True)
class MediaEntry:
    """``media.<direction>``, as the receiver of that direction saw it."""

    #: null when the sender is not ours
    packets_sent: int | None
    #: false: the sender is receive-only by design (nothing to judge)
    sends: bool | None
    #: false: the far end receives this direction; we cannot see arrivals
    observed: bool | None = absent_if_none()
    packets_received: int | None = None
    packets_lost: int | None = None
    max_gap_ms: float | None = None
    packets_expected: int | None = absent_if_none()
    packets_delayed: int | None = absent_if_none()
    packets_duplicated: int | None = absent_if_none()
    packets_reordered: int | None = absent_if_none()
    packets_discarded: int | None = absent_if_none()
    gaps: list[GapEntry] | None = absent_if_none()
    gap_count: int | None = absent_if_none()
    jitter_ms: float | None = absent_if_none()
    first_arrival_ms: float | None = absent_if_none()
    last_arrival_ms: float | None = absent_if_none()

    @classmethod
    def received(
        cls, packets_sent: int | None, sends: bool | None, stats: MediaStats
    ) -> MediaEntry:
        return cls(
            packets_sent=packets_sent,
            sends=sends,
            packets_received=stats.packets_received,
            packets_expected=stats.packets_expected,
            packets_lost=stats.packets_lost,
            packets_delayed=stats.packets_delayed,
            packets_duplicated=stats.packets_duplicated,
            packets_reordered=stats.packets_reordered,
            packets_discarded=stats.packets_discarded,
            max_gap_ms=_ms(stats.max_gap_ms),
            gaps=[GapEntry.from_gap(gap) for gap in stats.gaps],
            gap_count=stats.gap_count,
            jitter_ms=_ms(stats.jitter_ms),
            first_arrival_ms=_ms(stats.first_arrival_ms),
            last_arrival_ms=_ms(stats.last_arrival_ms),
        )


@dataclass(frozen=True)
class CheckEntry:
    """One expectation's verdict; ``expected``/``actual`` are for people."""

    name: str
    expected: str
    actual: str
    passed: bool


@dataclass(frozen=True, kw_only=True)
class ExpectationsEntry:
    #: true only if every check passed (and the call had no error)
    passed: bool
    checks: list[CheckEntry] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class CallEntry:
    """One call in ``calls`` (docs/report.md#call)."""

    id: str
    mode: str
    local_side: Literal["caller", "callee"]
    seed: int
    started_at: str
    duration_ms: float
    setup_ms: float | None
    connected: bool
    final_state: str
    ended_early: bool
    hung_up_by: Literal["caller", "callee"] | None = None
    error: str | None
    #: as seen from ``local_side``
    metrics: Metrics
    sides: dict[str, SideEntry | RemoteSideEntry]
    media: dict[str, MediaEntry]
    events: list[TaggedEvent]
    # Added by the layer that ran the call (scenario runner, server).
    scenario: str | None = absent_if_none()
    scenario_file: str | None = absent_if_none()
    scenario_sha256: str | None = absent_if_none()
    #: the scenario's steps as written (each step's own parameters)
    steps: list[Mapping[str, JsonValue]] | None = absent_if_none()
    #: how a served call ended
    ended_by: str | None = absent_if_none()
    expectations: ExpectationsEntry | None = absent_if_none()

    def to_json(self) -> JsonObject:
        out: JsonObject = to_json(self)
        return out


@dataclass(frozen=True, kw_only=True)
class Host:
    python: str
    aiortc: str
    aioice: str
    platform: str


@dataclass(frozen=True, kw_only=True)
class Summary:
    """Verdict counts: ``calls == passed + failed + errors``."""

    calls: int
    passed: int
    failed: int
    errors: int


@dataclass(frozen=True, kw_only=True)
class ShardEntry:
    """``shard``: which part of a run this report holds (``run --shard I/N``)."""

    index: int
    count: int


@dataclass(frozen=True, kw_only=True)
class ShardsEntry:
    """``shards``: the parts a merged or multi-worker report was made of."""

    count: int
    reported: list[int]
    #: shards (workers) that never reported: their calls are not in the report
    missing: list[int]
    #: shards that reported but stopped early (``complete: false``)
    incomplete: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ResourceSample:
    """``resources[]``: one process's footprint at ``t_s`` seconds into the run
    (a soak is judged on these staying flat)."""

    t_s: float
    #: resident memory; null where /proc is not available
    rss_bytes: int | None
    open_fds: int | None
    #: the worker process (``--workers``); absent for the parent
    worker: int | None = absent_if_none()
    #: the shard the sample came from (merged reports)
    shard: int | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class Report:
    """The whole JSON document (docs/report.md#run)."""

    version: Literal[1]
    tool: str
    run_id: str | None
    started_at: str
    finished_at: str | None
    complete: bool
    interrupted: str | None
    seed: int | None
    host: Host | Mapping[str, JsonValue]
    calls: list[CallEntry]
    summary: Summary
    #: worker processes the run used (``run --workers``)
    workers: int | None = absent_if_none()
    shard: ShardEntry | None = absent_if_none()
    shards: ShardsEntry | None = absent_if_none()
    resources: list[ResourceSample] | None = absent_if_none()
