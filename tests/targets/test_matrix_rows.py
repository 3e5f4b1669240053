"""Matrix verdicts from a call's report entry: a row the target's capabilities
say it cannot do is XFAIL with the reason, even when audio still flows (a far
end that keeps its old DTLS association after the agent's new certificate)."""

from __future__ import annotations

from typing import Any

from agent.targets.matrix import CAUSES, row_of, shortfall
from agent.targets.spec import parse_target

ROTATION = "matrix-cert-rotation"


def rotated_call(rehandshake_outcome: str) -> dict[str, Any]:
    """The report entry's fields a row reads, for a 10 s call with audio to
    the end both ways."""
    passed = rehandshake_outcome == "completed"
    return {
        "scenario": ROTATION,
        "local_side": "caller",
        "mode": "browser-firefox",
        "final_state": "connected",
        "connected": True,
        "duration_ms": 10_000.0,
        "metrics": {"dtls_rehandshakes": {"local": 1, "remote": 0}},
        "media": {
            "callee_to_caller": {"max_gap_ms": 40.0, "last_arrival_ms": 9_990.0},
            "caller_to_callee": {"observed": False},
        },
        "sides": {"callee": {"view": {"inbound_recent": True, "max_gap_ms": 60}}},
        "expectations": {
            "passed": passed,
            "checks": [
                {"name": "call_up", "actual": "connected", "passed": True},
                {
                    "name": "outcomes.dtls_rehandshakes",
                    "actual": rehandshake_outcome,
                    "passed": passed,
                },
            ],
        },
    }


def test_capabilities_say_who_takes_a_new_certificate() -> None:
    firefox = parse_target("browser:firefox")
    assert firefox.capabilities.takes_new_certificate is False
    assert shortfall(ROTATION, firefox) == (
        "keeps its old DTLS association on a new certificate"
    )
    for text in ("agent", "browser:chromium"):
        assert shortfall(ROTATION, parse_target(text)) is None
    assert shortfall("matrix-baseline", firefox) is None


def test_a_rotation_the_far_end_ignores_is_xfail_with_the_reason() -> None:
    firefox = parse_target("browser:firefox")
    row = row_of(
        rotated_call("incomplete"),
        cause=CAUSES[ROTATION],
        shortfall=shortfall(ROTATION, firefox),
        passed=False,
    )
    assert row.recovered is True  # audio flows on the old association
    assert row.verdict == "XFAIL"
    assert row.note == (
        "expected: the far end keeps its old DTLS association on a new "
        "certificate; outcomes.dtls_rehandshakes: got incomplete"
    )


def test_the_same_miss_is_a_fail_where_the_capabilities_promise_it() -> None:
    chromium = parse_target("browser:chromium")
    row = row_of(
        rotated_call("incomplete"),
        cause=CAUSES[ROTATION],
        shortfall=shortfall(ROTATION, chromium),
        passed=False,
    )
    assert row.verdict == "FAIL"
    assert row.note == "outcomes.dtls_rehandshakes: got incomplete"
    done = row_of(
        rotated_call("completed"),
        cause=CAUSES[ROTATION],
        shortfall=None,
        passed=True,
    )
    assert done.verdict == "PASS" and done.note == ""
