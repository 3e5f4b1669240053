"""Every built-in scenario in ``scenarios/`` passes against agent peers.

They are what the README's quick start runs, so they are run here too: all at
once (each is a real loopback call lasting its duration), then each call's
expectations are checked. Long soak-style scenarios (over a minute) are left
to the quick start.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

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
        if not result["expectations"]["passed"] or result["error"]:
            failed = [
                f"{c['name']}: expected {c['expected']}, got {c['actual']}"
                for c in result["expectations"]["checks"]
                if not c["passed"]
            ]
            failures.append(f"{scenario.name}: {result['error'] or '; '.join(failed)}")
    assert not failures, "\n".join(failures)
