"""Every built-in scenario in ``scenarios/`` passes against agent peers.

They are what the README's quick start runs, so they are run here too: all at
once (each is a real loopback call lasting its duration), then each call's
expectations are checked. Long soak-style scenarios (over a minute) are left
to the quick start.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.report.schema import Verdict, call_verdict
from agent.scenario.loader import load_scenarios
from agent.scenario.runner import ScenarioRunner
from tests.support.report_schema import as_report, assert_matches_schema

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
LONGEST_S = 60.0


async def test_every_builtin_scenario_passes() -> None:
    scenarios = [s for s in load_scenarios([SCENARIOS]) if s.duration <= LONGEST_S]
    assert len(scenarios) >= 8
    runs = [ScenarioRunner(seed=1234).run([s]) for s in scenarios]
    results = await asyncio.wait_for(asyncio.gather(*runs), timeout=150)
    # Every event type every fault produces, against docs/report.schema.json.
    assert_matches_schema(as_report([call for result in results for call in result]))
    failures = []
    for scenario, (result, *_) in zip(scenarios, results, strict=True):
        verdict = call_verdict(result)
        # INCONCLUSIVE: every check that could be judged passed, and the one
        # that could not says the agent itself stalled (this test runs all
        # the calls at once on a shared machine: issue 10, a busy host must
        # not fail healthy calls). Anything else not PASS is a failure.
        unjudged = [
            c for c in result["expectations"]["checks"] if c.get("inconclusive")
        ]
        assert all("agent stalled" in c["actual"] for c in unjudged), unjudged
        if verdict is not Verdict.PASS and verdict is not Verdict.INCONCLUSIVE:
            failed = [
                f"{c['name']}: expected {c['expected']}, got {c['actual']}"
                for c in result["expectations"]["checks"]
                if not c["passed"]
            ]
            failures.append(f"{scenario.name}: {result['error'] or '; '.join(failed)}")
    assert not failures, "\n".join(failures)
