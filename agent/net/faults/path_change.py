"""``net.path_change``: the side sends from another local address while the old
one still receives — a route change (Wi-Fi to wired, a multi-homed host)."""

from __future__ import annotations

from agent.net.faults.address_change import MoveParams
from agent.net.faults.base import FaultHost, KernelAction, RouteFault, register
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.net.routes import PathChange as PathChangeRoute
from agent.observe.model import Side


@register
class PathChange(RouteFault[MoveParams]):
    name = "net.path_change"
    Params = MoveParams
    default_cause = "path_change"
    summary = "the side sends from another local address; the old one stays alive"

    def route(self, params: MoveParams) -> PathChangeRoute:
        return PathChangeRoute(str(params.address))

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: MoveParams
    ) -> KernelAction:
        # A spare address of the side's subnet is added and the side's
        # packets leave from it (snat in its own namespace); the old address
        # stays and still receives.
        assert side is not None
        role = lab.role(side)
        old = lab.address(side)
        ports = lab.ports(host.side_net(side, self.kind))
        new, ifname = lab.lab.spare_address(role)
        applied = [
            await lab_faults.add_address(lab.lab, role, f"{new}/24", ifname),
            await lab_faults.source_nat(lab.lab, role, old, new),
        ]
        return KernelAction(
            applied,
            {
                "old": [f"{old}:{port}" for port in ports],
                "new": [f"{new}:{port}" for port in ports],
                "old_address_alive": True,
                "requested": str(params.address),
            },
            ends="instant",
        )
