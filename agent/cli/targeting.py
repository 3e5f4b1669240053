"""``--target`` on the command line: parse it, and refuse what it cannot do.

Every refusal is one line naming the file and the step or setting, printed
before any call is placed (exit 2), so a run never spends a call on a step
the far end could only fail for the wrong reason (agent.targets.spec).
"""

from __future__ import annotations

from agent.errors import ScenarioError, ScenarioErrors
from agent.scenario.model import PeerSettings, Scenario
from agent.targets.spec import StepView, Target, parse_target, refusals

__all__ = ["check_targets", "scenario_target"]


def scenario_target(scenario: Scenario, override: Target | None) -> Target:
    """The flag wins over the file's ``target:``; neither: the built-in agent."""
    return override or parse_target(scenario.target)


def _far_end_settings(scenario: Scenario) -> list[str]:
    callee = scenario.peers.callee
    default = PeerSettings(address=callee.address)
    return [
        name
        for name in PeerSettings.model_fields
        if name != "address" and getattr(callee, name) != getattr(default, name)
    ]


def check_targets(scenarios: list[Scenario], override: Target | None) -> None:
    """Raise :class:`ScenarioErrors`, one line per thing a target cannot do."""
    errors: list[ScenarioError] = []
    for scenario in scenarios:
        target = scenario_target(scenario, override)
        steps = [
            StepView(
                index,
                spec.do,
                None if spec.side is None else str(spec.side),
                spec.params.model_dump(mode="json"),
            )
            for index, spec in enumerate(scenario.steps)
        ]
        nat = scenario.network.nat
        found = refusals(
            target,
            steps,
            far_end_settings=_far_end_settings(scenario),
            nat_side=None if nat is None else str(nat.side),
        )
        path = scenario.source.path if scenario.source is not None else scenario.name
        errors.extend(
            ScenarioError(f"target {target} refuses it: {why}", path=path, field=where)
            for where, why in found
        )
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ScenarioErrors(errors)
