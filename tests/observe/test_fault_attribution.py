"""Network faults give their cause to the effects they produce (pure)."""

from __future__ import annotations

from agent.observe.correlate import attribute_stalls, build_timeline
from agent.observe.events import (
    ConnectionStateDetail,
    ConnectionStateEvent,
    Event,
    FaultDetail,
    FaultEndDetail,
    FaultEndEvent,
    FaultRef,
    FaultStartEvent,
    IceRestartDetail,
    IceRestartEvent,
    MediaGapDetail,
    MediaGapEvent,
    NoteDetail,
    NoteEvent,
    SelectedPairChangeEvent,
    SelectedPairDetail,
)
from agent.observe.model import Initiator, Outcome, Side

CALLER, CALLEE = Side.CALLER, Side.CALLEE


def fault(t: float, kind: str, cause: str, fault_id: int, end: bool = False) -> Event:
    if end:
        return FaultEndEvent(
            t_ms=t,
            side=CALLER,
            initiator=Initiator.NETWORK,
            cause=cause,
            detail=FaultEndDetail(
                fault=kind, fault_id=fault_id, target="caller", duration_ms=0.0
            ),
        )
    return FaultStartEvent(
        t_ms=t,
        side=CALLER,
        initiator=Initiator.NETWORK,
        cause=cause,
        detail=FaultDetail(fault=kind, fault_id=fault_id, target="caller"),
    )


def state(t: float, value: str, side: Side = CALLER) -> ConnectionStateEvent:
    return ConnectionStateEvent(
        t_ms=t, side=side, detail=ConnectionStateDetail(state=value)
    )


def gap(
    t: float, length_ms: float, side: Side = CALLER, cause: str | None = None
) -> MediaGapEvent:
    return MediaGapEvent(
        t_ms=t,
        side=side,
        cause=cause,
        detail=MediaGapDetail(
            direction=f"{side.other}_to_{side}",
            length_ms=length_ms,
            packets_missing=0,
            ssrc=1,
        ),
    )


def restart(
    t: float, side: Side, initiator: Initiator, cause: str | None, trigger: str
) -> IceRestartEvent:
    return IceRestartEvent(
        t_ms=t,
        side=side,
        initiator=initiator,
        cause=cause,
        detail=IceRestartDetail(
            outcome=Outcome.COMPLETED,
            duration_ms=20.0,
            trigger=trigger,
            generation=1,
        ),
    )


def pair_change(t: float, side: Side, initial: bool) -> SelectedPairChangeEvent:
    return SelectedPairChangeEvent(
        t_ms=t,
        side=side,
        detail=SelectedPairDetail(
            initial=initial,
            generation=1,
            local="127.0.0.1:1",
            remote="127.0.0.2:2",
            local_type="host",
            remote_type="host",
        ),
    )


def test_effects_inside_and_shortly_after_a_fault_take_its_cause() -> None:
    timeline = build_timeline(
        [
            state(50, "connected"),
            fault(1000, "nat_rebind", "nat_rebind", 1),
            # The gap starts at the last packet before the fault.
            gap(990, 2500),
            fault(1020, "nat_rebind", "nat_rebind", 1, end=True),
            state(3000, "disconnected"),
            restart(3001, CALLER, Initiator.LOCAL, "disconnected", "disconnected"),
            restart(9000, CALLER, Initiator.LOCAL, "manual", "step"),
            state(30000, "disconnected"),
        ],
        [
            restart(3002, CALLEE, Initiator.REMOTE, None, "remote"),
            pair_change(3500, CALLEE, initial=False),
            pair_change(3600, CALLEE, initial=True),
        ],
    )
    causes = [(e.type, e.side, e.t_ms, e.cause) for e in timeline]
    assert ("connection_state", CALLER, 50, None) in causes  # before it
    assert ("media_gap", CALLER, 990, "nat_rebind") in causes
    assert ("connection_state", CALLER, 3000, "nat_rebind") in causes
    assert ("ice_restart", CALLER, 3001, "nat_rebind") in causes
    assert ("ice_restart", CALLEE, 3002, "nat_rebind") in causes
    assert ("selected_pair_change", CALLEE, 3500, "nat_rebind") in causes
    assert ("selected_pair_change", CALLEE, 3600, None) in causes
    # A chosen cause is kept; after the effect window nothing is attributed.
    assert ("ice_restart", CALLER, 9000, "manual") in causes
    assert ("connection_state", CALLER, 30000, None) in causes
    first = next(e for e in timeline if e.t_ms == 3001)
    assert isinstance(first, IceRestartEvent)
    assert first.detail.fault == FaultRef(fault_id=1, kind="nat_rebind", t_ms=1000)


def test_the_latest_fault_wins_and_an_open_fault_lasts() -> None:
    timeline = build_timeline(
        [
            fault(0, "nat_timeout", "nat_timeout", 1),
            fault(100, "blackhole", "firewall_eviction", 2),
            state(60000, "failed"),
        ]
    )
    assert timeline[-1].cause == "firewall_eviction"


def test_an_unexplained_gap_overlapping_an_agent_stall_is_the_agents() -> None:
    stall = NoteEvent(
        t_ms=1000.0,
        side=CALLER,
        cause="agent_stall",
        detail=NoteDetail(stall_ms=200.0),
    )
    during = gap(980.0, 240.0, CALLEE)
    later = gap(5000.0, 90.0, CALLEE)
    known = gap(990.0, 300.0, CALLER, cause="nat_rebind")
    out = attribute_stalls([stall, during, later, known])
    assert isinstance(out[1], MediaGapEvent)
    assert out[1].cause == "agent_stall" and out[1].detail.stall_ms == 200.0
    assert out[2].cause is None  # after the stall: not the agent's doing
    assert out[3].cause == "nat_rebind"  # a fault's gap keeps its cause
