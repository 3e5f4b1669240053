"""``net.address_change``: the side moves to another local address and the old
one is dead — a VPN reconnect that hands out a new tunnel address."""

from __future__ import annotations

from agent.net.faults.base import (
    FaultHost,
    FaultParams,
    KernelAction,
    RouteFault,
    register,
)
from agent.net.faults.params import Address
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.net.routes import AddressChange as AddressChangeRoute
from agent.observe.model import Side


class MoveParams(FaultParams):
    #: the side's new local address
    address: Address


@register
class AddressChange(RouteFault[MoveParams]):
    name = "net.address_change"
    Params = MoveParams
    default_cause = "vpn_reconnect"
    summary = "the side moves to another local address; the old one dies (VPN)"

    def route(self, params: MoveParams) -> AddressChangeRoute:
        return AddressChangeRoute(str(params.address))

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: MoveParams
    ) -> KernelAction:
        # In the lab the side gets a spare address of its own subnet (the
        # file's loopback address means nothing there) and the old one is
        # really removed: sends from its sockets fail, nothing reaches them.
        assert side is not None
        role = lab.role(side)
        old = lab.address(side)
        ports = lab.ports(host.side_net(side, self.kind))
        new, ifname = lab.lab.spare_address(role)
        applied = [await lab_faults.add_address(lab.lab, role, f"{new}/24", ifname)]
        applied.append(
            await lab_faults.remove_address(lab.lab, role, f"{old}/24", ifname)
        )
        # The default route went with the old (primary) address.
        gateway = lab.lab.topology.default_routes[role]
        applied.append(await lab_faults.replace_route(lab.lab, role, ["via", gateway]))
        lab.moved[side] = new
        return KernelAction(
            applied,
            {
                "old": [f"{old}:{port}" for port in ports],
                "new": [new],
                "old_address_alive": False,
                "requested": str(params.address),
            },
            ends="instant",
        )
