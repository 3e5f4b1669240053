"""Report dicts shaped exactly as the call layer writes them (schema version 1)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

_METRIC_ZERO = {"total": 0, "local": 0, "remote": 0, "level": "good"}


def _media(
    *, lost: int = 0, delayed: int = 0, max_gap_ms: float = 41.2
) -> dict[str, Any]:
    return {
        "packets_sent": 500,
        "sends": True,
        "packets_received": 500 - lost,
        "packets_expected": 500,
        "packets_lost": lost,
        "packets_delayed": delayed,
        "packets_duplicated": 0,
        "packets_reordered": 0,
        "max_gap_ms": max_gap_ms,
        "jitter_ms": 1.3,
        "gaps": [],
    }


def _side(metrics: dict[str, Any], address: str) -> dict[str, Any]:
    return {
        "metrics": copy.deepcopy(metrics),
        "address": address,
        "selected_pair": None,
        "final_state": "closed",
        "certificate": None,
        "certificates": [],
        "packets_sent": 500,
        "frames_decoded": None,
    }


def make_call(
    call_id: str = "baseline#1",
    *,
    ice_restarts: dict[str, Any] | None = None,
    dtls_rehandshakes: dict[str, Any] | None = None,
    checks: list[dict[str, Any]] | None = None,
    error: str | None = None,
    events: list[dict[str, Any]] | None = None,
    gap_to_callee_ms: float = 41.2,
    gap_to_caller_ms: float = 38.0,
    lost: int = 1,
    delayed: int = 0,
    setup_ms: float | None = 85.2,
) -> dict[str, Any]:
    scenario = call_id.split("#")[0]
    checks = (
        checks
        if checks is not None
        else [{"name": "ice_restarts", "expected": "0", "actual": "0", "passed": True}]
    )
    metrics = {
        "dtls_rehandshakes": dtls_rehandshakes or dict(_METRIC_ZERO),
        "ice_restarts": ice_restarts or dict(_METRIC_ZERO),
        "selected_pair_changes": 0,
    }
    return {
        "id": call_id,
        "scenario": scenario,
        "scenario_file": f"scenarios/{scenario}.yaml",
        "scenario_sha256": "0" * 64,
        "mode": "loopback",
        "local_side": "caller",
        "seed": 1234,
        "started_at": "2026-11-23T12:15:00.200Z",
        "duration_ms": 10012.3,
        "setup_ms": setup_ms,
        "connected": error is None,
        "final_state": "closed" if error is None else "never_connected",
        "ended_early": False,
        "error": error,
        "metrics": metrics,
        "sides": {
            "caller": _side(metrics, "127.0.0.1"),
            "callee": _side(metrics, "127.0.0.2"),
        },
        "media": {
            "caller_to_callee": _media(
                lost=lost, delayed=delayed, max_gap_ms=gap_to_callee_ms
            ),
            "callee_to_caller": _media(max_gap_ms=gap_to_caller_ms),
        },
        "events": events or [],
        "expectations": {
            "passed": all(check["passed"] for check in checks),
            "checks": checks,
        },
    }


META = {
    "tool": "callagent 0.1.0",
    "run_id": "20261123T121500Z-ab12",
    "started_at": "2026-11-23T12:15:00.123Z",
    "seed": 1234,
    "host": {
        "python": "3.11.7",
        "aiortc": "1.16.0",
        "aioice": "0.13.0",
        "platform": "linux",
    },
}


@pytest.fixture
def call_factory() -> Callable[..., dict[str, Any]]:
    return make_call


@pytest.fixture
def meta() -> dict[str, Any]:
    return copy.deepcopy(META)


def build_mixed_report() -> dict[str, Any]:
    """A finished run: one pass, one expectation failure, one error."""
    restart = {
        "type": "ice_restart",
        "t_ms": 5012.5,
        "side": "caller",
        "initiator": "local",
        "cause": "nat_rebind",
        "detail": {
            "outcome": "completed",
            "duration_ms": 812.4,
            "trigger": "disconnected",
            "generation": 1,
            "media_gap_ms": {"caller_to_callee": 900.5, "callee_to_caller": 850.0},
            "correlated_with": None,
        },
    }
    rehandshake = {
        "type": "dtls_rehandshake",
        "t_ms": 5100.0,
        "side": "caller",
        "initiator": "local",
        # As agent.observe.correlate attributes it: the cause is the restart's.
        "cause": "nat_rebind",
        "detail": {
            "outcome": "completed",
            "duration_ms": 120.0,
            "detected_by": "stack",
            "triggered_by": "ice_restart",
            "correlated_with": {"type": "ice_restart", "t_ms": 5012.5, "generation": 1},
        },
    }
    calls = [
        make_call("baseline#1"),
        make_call(
            "nat_rebind#1",
            ice_restarts={"total": 2, "local": 1, "remote": 1, "level": "critical"},
            dtls_rehandshakes={"total": 1, "local": 1, "remote": 0, "level": "warning"},
            checks=[
                {
                    "name": "ice_restarts",
                    "expected": "1",
                    "actual": "2",
                    "passed": False,
                },
                {
                    "name": "max_media_gap_ms",
                    "expected": "<= 1500",
                    "actual": "1900.5",
                    "passed": False,
                },
                {
                    "name": "dtls_rehandshakes",
                    "expected": "<= 1",
                    "actual": "1",
                    "passed": True,
                },
            ],
            events=[rehandshake, restart],
            gap_to_callee_ms=1900.5,
            gap_to_caller_ms=850.0,
            lost=14,
            delayed=3,
        ),
        make_call(
            "nat_rebind#2",
            error="ICE failed: no candidate pair succeeded",
            setup_ms=None,
        ),
    ]
    return {
        "version": 1,
        **META,
        "finished_at": "2026-11-23T12:16:00.000Z",
        "complete": True,
        "interrupted": None,
        "calls": calls,
        "summary": {"calls": 3, "passed": 1, "failed": 1, "errors": 1},
    }


@pytest.fixture
def mixed_report() -> dict[str, Any]:
    return build_mixed_report()
