"""Network faults give their cause to the effects they produce (pure)."""

from __future__ import annotations

from agent.observe.correlate import attribute_stalls, build_timeline
from agent.observe.model import Event, EventType, Initiator, Side

CALLER, CALLEE = Side.CALLER, Side.CALLEE


def fault(t: float, kind: str, cause: str, fault_id: int, end: bool = False) -> Event:
    return Event(
        EventType.FAULT_END if end else EventType.FAULT_START,
        t,
        CALLER,
        Initiator.NETWORK,
        cause,
        {"fault": kind, "fault_id": fault_id},
    )


def test_effects_inside_and_shortly_after_a_fault_take_its_cause() -> None:
    timeline = build_timeline(
        [
            Event(
                EventType.CONNECTION_STATE, 50, CALLER, detail={"state": "connected"}
            ),
            fault(1000, "nat_rebind", "nat_rebind", 1),
            # The gap starts at the last packet before the fault.
            Event(
                EventType.MEDIA_GAP,
                990,
                CALLER,
                detail={"length_ms": 2500, "direction": "callee_to_caller"},
            ),
            fault(1020, "nat_rebind", "nat_rebind", 1, end=True),
            Event(
                EventType.CONNECTION_STATE,
                3000,
                CALLER,
                detail={"state": "disconnected"},
            ),
            Event(
                EventType.ICE_RESTART,
                3001,
                CALLER,
                Initiator.LOCAL,
                "disconnected",
                {"trigger": "disconnected", "duration_ms": 20},
            ),
            Event(
                EventType.ICE_RESTART,
                9000,
                CALLER,
                Initiator.LOCAL,
                "manual",
                {"trigger": "step", "duration_ms": 20},
            ),
            Event(
                EventType.CONNECTION_STATE,
                30000,
                CALLER,
                detail={"state": "disconnected"},
            ),
        ],
        [
            Event(
                EventType.ICE_RESTART,
                3002,
                CALLEE,
                Initiator.REMOTE,
                None,
                {"trigger": "remote", "duration_ms": 20},
            ),
            Event(
                EventType.SELECTED_PAIR_CHANGE,
                3500,
                CALLEE,
                detail={"initial": False},
            ),
            Event(
                EventType.SELECTED_PAIR_CHANGE, 3600, CALLEE, detail={"initial": True}
            ),
        ],
    )
    causes = [(e.type, e.side, e.t_ms, e.cause) for e in timeline]
    assert (EventType.CONNECTION_STATE, CALLER, 50, None) in causes  # before it
    assert (EventType.MEDIA_GAP, CALLER, 990, "nat_rebind") in causes
    assert (EventType.CONNECTION_STATE, CALLER, 3000, "nat_rebind") in causes
    assert (EventType.ICE_RESTART, CALLER, 3001, "nat_rebind") in causes
    assert (EventType.ICE_RESTART, CALLEE, 3002, "nat_rebind") in causes
    assert (EventType.SELECTED_PAIR_CHANGE, CALLEE, 3500, "nat_rebind") in causes
    assert (EventType.SELECTED_PAIR_CHANGE, CALLEE, 3600, None) in causes
    # A chosen cause is kept; after the effect window nothing is attributed.
    assert (EventType.ICE_RESTART, CALLER, 9000, "manual") in causes
    assert (EventType.CONNECTION_STATE, CALLER, 30000, None) in causes
    restart = next(e for e in timeline if e.t_ms == 3001)
    assert restart.detail["fault"] == {
        "fault_id": 1,
        "kind": "nat_rebind",
        "t_ms": 1000,
    }


def test_the_latest_fault_wins_and_an_open_fault_lasts() -> None:
    timeline = build_timeline(
        [
            fault(0, "nat_timeout", "nat_timeout", 1),
            fault(100, "blackhole", "firewall_eviction", 2),
            Event(
                EventType.CONNECTION_STATE, 60000, CALLER, detail={"state": "failed"}
            ),
        ]
    )
    assert timeline[-1].cause == "firewall_eviction"


def test_an_unexplained_gap_overlapping_an_agent_stall_is_the_agents() -> None:
    stall = Event(
        EventType.NOTE, 1000.0, Side.CALLER, None, "agent_stall", {"stall_ms": 200.0}
    )
    during = Event(
        EventType.MEDIA_GAP, 980.0, Side.CALLEE, None, None, {"length_ms": 240.0}
    )
    later = Event(
        EventType.MEDIA_GAP, 5000.0, Side.CALLEE, None, None, {"length_ms": 90.0}
    )
    known = Event(
        EventType.MEDIA_GAP,
        990.0,
        Side.CALLER,
        None,
        "nat_rebind",
        {"length_ms": 300.0},
    )
    out = attribute_stalls([stall, during, later, known])
    assert out[1].cause == "agent_stall" and out[1].detail["stall_ms"] == 200.0
    assert out[2].cause is None  # after the stall: not the agent's doing
    assert out[3].cause == "nat_rebind"  # a fault's gap keeps its cause
