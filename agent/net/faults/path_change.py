"""``net.path_change``: the side sends from another local address while the old
one still receives — a route change (Wi-Fi to wired, a multi-homed host)."""

from __future__ import annotations

from agent.net.faults.base import LabMove, MoveFault, register
from agent.net.lab import faults as lab_faults
from agent.net.lab.lab import KernelFault
from agent.net.labnet import CallLab
from agent.net.routes import PathChange as PathChangeRoute

__all__ = ["PathChange"]


@register
class PathChange(MoveFault):
    name = "net.path_change"
    Route = PathChangeRoute
    default_cause = "path_change"
    summary = "the side sends from another local address; the old one stays alive"

    async def leave_in_lab(
        self, lab: CallLab, move: LabMove
    ) -> tuple[list[KernelFault], list[str]]:
        # The side's packets leave from the new address (snat in its own
        # namespace, ports kept); the old address stays and still receives.
        applied = [await lab_faults.source_nat(lab.lab, move.role, move.old, move.new)]
        return applied, [f"{move.new}:{port}" for port in move.ports]
