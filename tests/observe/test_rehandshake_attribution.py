"""DESIGN.md: a DTLS rehandshake that follows an ICE restart on the same call
within the correlation window is "triggered by ICE, not DTLS itself", and the
report must say so. These tests fail if ``attribute_rehandshakes`` stops doing
that, or does it for rehandshakes it should leave alone."""

from __future__ import annotations

from agent.observe.correlate import (
    CORRELATION_WINDOW_MS,
    attribute_rehandshakes,
    build_timeline,
)
from agent.observe.events import (
    CorrelatedWith,
    DtlsRehandshakeDetail,
    DtlsRehandshakeEvent,
    Event,
    IceRestartDetail,
    IceRestartEvent,
    to_json,
)
from agent.observe.model import Initiator, Outcome, Side
from agent.report.schema import ice_triggered_rehandshakes

CALLER, CALLEE = Side.CALLER, Side.CALLEE


def restart(
    t: float, side: Side = CALLER, generation: int = 1, cause: str | None = "nat_rebind"
) -> IceRestartEvent:
    return IceRestartEvent(
        t_ms=t,
        side=side,
        initiator=Initiator.LOCAL,
        cause=cause,
        detail=IceRestartDetail(
            outcome=Outcome.COMPLETED,
            duration_ms=300.0,
            trigger="disconnected",
            generation=generation,
        ),
    )


def rehandshake(
    t: float, side: Side = CALLER, cause: str | None = None
) -> DtlsRehandshakeEvent:
    return DtlsRehandshakeEvent(
        t_ms=t,
        side=side,
        initiator=Initiator.LOCAL,
        cause=cause,
        detail=DtlsRehandshakeDetail(
            outcome=Outcome.COMPLETED,
            duration_ms=120.0,
            trigger="ice_restart",
            detected_by="stack",
        ),
    )


def only_rehandshake(events: list[Event]) -> DtlsRehandshakeEvent:
    (found,) = [e for e in events if isinstance(e, DtlsRehandshakeEvent)]
    return found


def test_a_rehandshake_after_a_restart_on_the_same_side_is_ice_triggered() -> None:
    out = attribute_rehandshakes([restart(1000.0, generation=2), rehandshake(1800.0)])
    event = only_rehandshake(out)
    assert event.detail.triggered_by == "ice_restart"
    assert event.detail.correlated_with == CorrelatedWith(t_ms=1000.0, generation=2)
    # With no cause of its own it takes the restart's.
    assert event.cause == "nat_rebind"


def test_without_a_restart_cause_the_cause_is_ice_restart() -> None:
    out = attribute_rehandshakes([restart(1000.0, cause=None), rehandshake(1200.0)])
    assert only_rehandshake(out).cause == "ice_restart"


def test_a_rehandshake_keeps_a_more_specific_cause() -> None:
    out = attribute_rehandshakes(
        [restart(1000.0), rehandshake(1200.0, cause="cert_expiry")]
    )
    event = only_rehandshake(out)
    assert event.cause == "cert_expiry"
    assert event.detail.triggered_by == "ice_restart"


def test_the_latest_restart_before_it_is_the_trigger() -> None:
    out = attribute_rehandshakes(
        [restart(100.0, generation=1), restart(900.0, generation=2), rehandshake(1000)]
    )
    correlated = only_rehandshake(out).detail.correlated_with
    assert correlated is not None and correlated.generation == 2


def test_unrelated_rehandshakes_are_left_alone() -> None:
    cases: list[list[Event]] = [
        # before the restart
        [rehandshake(900.0), restart(1000.0)],
        # after the correlation window
        [restart(1000.0), rehandshake(1000.0 + CORRELATION_WINDOW_MS + 1)],
        # the restart was seen by the other side's observer
        [restart(1000.0, side=CALLEE), rehandshake(1200.0, side=CALLER)],
        # no restart at all
        [rehandshake(1200.0)],
    ]
    for events in cases:
        event = only_rehandshake(attribute_rehandshakes(events))
        assert event.detail.triggered_by is None, events
        assert event.detail.correlated_with is None, events
        assert event.cause is None, events


def test_the_report_says_so_and_the_views_count_it() -> None:
    timeline = build_timeline([restart(1000.0), rehandshake(1300.0)])
    events = [to_json(e) for e in timeline]
    (written,) = [e for e in events if e["type"] == "dtls_rehandshake"]
    assert written["detail"]["triggered_by"] == "ice_restart"
    assert written["detail"]["correlated_with"] == {
        "type": "ice_restart",
        "t_ms": 1000.0,
        "generation": 1,
    }
    assert written["cause"] == "nat_rebind"
    assert ice_triggered_rehandshakes({"events": events}) == 1
    # An unattributed rehandshake is not counted as ICE-triggered.
    alone = [to_json(e) for e in build_timeline([rehandshake(1300.0)])]
    assert ice_triggered_rehandshakes({"events": alone}) == 0
