"""Far ends as first-class targets: the built-in agent, any WHIP endpoint, and
headless browsers; what each can do, and the resilience matrix.

Layer: above ``call`` (it builds calls), below ``scenario`` (which names a
target in its files and dispatches on it). See docs/targets.md.
"""

from agent.targets.spec import (
    Capabilities,
    StepView,
    Target,
    TargetError,
    TargetKind,
    parse_target,
    refusals,
)

__all__ = [
    "Capabilities",
    "StepView",
    "Target",
    "TargetError",
    "TargetKind",
    "parse_target",
    "refusals",
]
