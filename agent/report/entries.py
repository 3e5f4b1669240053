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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from agent.observe.correlate import AGENT_STALL
from agent.observe.events import (
    Event,
    JsonObject,
    MediaGapEvent,
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
class FarEndView:
    """``sides.<remote>.view``: the far end's own view of the call.

    A browser target reports it from its ``getStats()``, sampled every 50 ms
    through the call (agent.targets.browser.page): what the far end saw,
    where the agent cannot see (the direction it receives).
    """

    #: where the view comes from (``getStats``)
    source: str
    selected_pair_changes: int
    #: its selected pairs in order (``local -> remote``), the last ten
    selected_pairs: list[str]
    #: every local ufrag it used, in order (a restart adds one)
    local_ufrags: list[str]
    dtls_state: str | None
    connection_state: str | None
    ice_state: str | None
    packets_received: int
    packets_sent: int
    #: the longest stretch with no audio arriving (50 ms resolution)
    max_gap_ms: float | None
    #: audio arrived in the last 1.5 s of the call
    inbound_recent: bool
    #: ICE restarts it started itself (``pc.restartIce()``)
    restarts: int
    #: re-offers from the agent it answered
    reoffers_answered: int
    #: its last errors (a rejected re-offer), newest last
    errors: list[str] = field(default_factory=list)


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
    #: the ``--target`` it was (``browser:firefox``…), for a target call
    target: str | None = absent_if_none()
    #: the far end's own view, when it reports one (a browser target)
    view: FarEndView | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class GapEntry:
    start_ms: float
    length_ms: float
    packets_missing: int
    sender_paused: bool
    #: the silence lasted until hang-up (no packet closed it)
    until_end: bool | None = absent_if_none()

    @classmethod
    def from_gap(cls, gap: MediaGap) -> GapEntry:
        return cls(
            start_ms=round(gap.start_ms, 1),
            length_ms=round(gap.length_ms, 1),
            packets_missing=gap.packets_missing,
            sender_paused=gap.sender_paused,
            until_end=True if gap.until_end else None,
        )


#: A direction silent this long at hang-up has stopped for good: one-way audio.
ONE_WAY_MS = 1000.0


@dataclass(frozen=True)
class GapShares:
    """Whose a direction's longest gap was (see :func:`gap_shares`)."""

    #: the network's and the far end's share: what expectations judge
    network_ms: float
    #: the longest gap the agent's own lateness explains (``agent_stall``)
    agent_ms: float


def gap_shares(events: Sequence[Event], direction: str, stats: MediaStats) -> GapShares:
    """Split ``direction``'s gaps between the agent (cause ``agent_stall``) and
    everyone else; below the threshold, the largest spacing counts."""
    network = [stats.max_spacing_ms]
    agent = [0.0]
    for event in events:
        if isinstance(event, MediaGapEvent) and event.detail.direction == direction:
            mine = event.cause == AGENT_STALL
            (agent if mine else network).append(event.detail.length_ms)
    return GapShares(network_ms=max(network), agent_ms=max(agent))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True)
class NotDueEntry:
    """An interval (call clock) when a direction's media was not due."""

    start_ms: float
    end_ms: float | None


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
    #: how long after setup (both sides' DTLS connected, ``setup_ms``) the
    #: first packet of this direction arrived
    start_ms: float | None = absent_if_none()
    #: the longest gap the agent's own lateness explains (``agent_stall``);
    #: ``max_gap_ms`` is the rest (the network's and the far end's share)
    agent_gap_ms: float | None = absent_if_none()
    #: the longest a packet waited in the kernel for this process to read it
    #: (the agent's receive loop stalling; arrival times are the kernel's)
    receive_lag_ms: float | None = absent_if_none()
    #: packets our sender numbered but could not send (no ICE pair, DTLS
    #: down): never on the wire, so not in ``packets_lost``
    packets_unsent: int | None = absent_if_none()
    #: ``flowing`` or ``stopped`` at hang-up, and since when (call clock)
    state: Literal["flowing", "stopped"] | None = absent_if_none()
    state_since_ms: float | None = absent_if_none()
    #: stopped for good (silent for ``ONE_WAY_MS`` up to hang-up)
    one_way: bool | None = absent_if_none()
    #: when media was not due: a re-offer left the sender without send
    #: (a hold), until one resumed it (``end_ms`` null: still at hang-up)
    not_due: list[NotDueEntry] | None = absent_if_none()

    @classmethod
    def received(
        cls,
        packets_sent: int | None,
        sends: bool | None,
        stats: MediaStats,
        *,
        shares: GapShares | None = None,
        packets_unsent: int | None = None,
        receive_lag_ms: float | None = None,
        not_due: Sequence[tuple[float, float | None]] = (),
        setup_ms: float | None = None,
    ) -> MediaEntry:
        stopped = stats.state == "stopped"
        silence = stats.gaps[-1].length_ms if stopped and stats.gaps else 0.0
        lost = stats.packets_lost
        if packets_unsent:
            # Holes in the sequence that our own sender left: not the network.
            lost = max(0, lost - packets_unsent)
        return cls(
            packets_sent=packets_sent,
            sends=sends,
            packets_received=stats.packets_received,
            packets_expected=stats.packets_expected,
            packets_lost=lost,
            packets_delayed=stats.packets_delayed,
            packets_duplicated=stats.packets_duplicated,
            packets_reordered=stats.packets_reordered,
            packets_discarded=stats.packets_discarded,
            max_gap_ms=_ms(stats.max_gap_ms if shares is None else shares.network_ms),
            gaps=[GapEntry.from_gap(gap) for gap in stats.gaps],
            gap_count=stats.gap_count,
            jitter_ms=_ms(stats.jitter_ms),
            first_arrival_ms=_ms(stats.first_arrival_ms),
            last_arrival_ms=_ms(stats.last_arrival_ms),
            start_ms=None
            if setup_ms is None or stats.first_arrival_ms is None
            else _ms(max(0.0, stats.first_arrival_ms - setup_ms)),
            agent_gap_ms=None if shares is None else _ms(shares.agent_ms),
            receive_lag_ms=_ms(receive_lag_ms),
            packets_unsent=packets_unsent,
            state="stopped" if stopped else "flowing",
            state_since_ms=_ms(stats.state_since_ms),
            one_way=stopped and silence >= ONE_WAY_MS,
            not_due=[NotDueEntry(round(a, 1), _ms(b)) for a, b in not_due] or None,
        )


@dataclass(frozen=True)
class CheckEntry:
    """One expectation's verdict; ``expected``/``actual`` are for people."""

    name: str
    expected: str
    actual: str
    passed: bool
    #: the agent was too stalled to judge this figure (then ``passed`` is
    #: false, and the call's verdict is INCONCLUSIVE, not FAIL)
    inconclusive: bool | None = absent_if_none()


@dataclass(frozen=True, kw_only=True)
class ExpectationsEntry:
    #: true only if every check passed (and the call had no error)
    passed: bool
    checks: list[CheckEntry] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class LabLinkEnd:
    namespace: str
    ifname: str
    #: address/prefix
    address: str


@dataclass(frozen=True, kw_only=True)
class LabLink:
    #: "lan" (inside - nat) or "wan" (nat - outside)
    name: str
    subnet: str
    ends: list[LabLinkEnd]


@dataclass(frozen=True, kw_only=True)
class LabFaultEntry:
    """A fault the kernel applied (nftables, conntrack, a link, a route)."""

    kind: str
    layer: Literal["kernel"]
    active: bool
    detail: Mapping[str, JsonValue]


@dataclass(frozen=True, kw_only=True)
class LabEntry:
    """The kernel network lab a call ran in (``--lab kernel``)."""

    run_id: str
    index: int
    #: role (inside, nat, outside) -> network namespace name
    namespaces: dict[str, str]
    links: list[LabLink]
    #: the NAT's outside address: what the far end sees
    public_ip: str
    #: which agent side is in which namespace role
    placement: dict[str, str]
    #: false: no NAT in the scenario, the middle namespace only routes
    nat: bool
    #: the nftables ruleset in force in the nat namespace (``nft -f`` text)
    nat_rules: str
    #: the state-table limit (``ct count``), if any
    flow_limit: int | None
    #: calls sharing this lab (1: a lab of its own)
    shared_by: int
    notes: list[str]
    #: the kernel faults this call applied, in order
    faults: list[LabFaultEntry]


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
    #: the kernel lab the call ran in (absent: user space only)
    lab: LabEntry | None = absent_if_none()

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
    """Verdict counts: ``calls == passed + failed + errors + inconclusive``."""

    calls: int
    passed: int
    failed: int
    errors: int
    #: absent in reports written before the verdict existed (read as 0)
    inconclusive: int | None = absent_if_none()


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
