"""``net.address_change``: the side moves to another local address and the old
one is dead — a VPN reconnect that hands out a new tunnel address."""

from __future__ import annotations

from agent.net.faults.base import LabMove, MoveFault, MoveParams, register
from agent.net.lab import faults as lab_faults
from agent.net.lab.lab import KernelFault
from agent.net.labnet import CallLab
from agent.net.routes import AddressChange as AddressChangeRoute

__all__ = ["AddressChange", "MoveParams"]


@register
class AddressChange(MoveFault):
    name = "net.address_change"
    Route = AddressChangeRoute
    default_cause = "vpn_reconnect"
    summary = "the side moves to another local address; the old one dies (VPN)"

    async def leave_in_lab(
        self, lab: CallLab, move: LabMove
    ) -> tuple[list[KernelFault], list[str]]:
        # The old address is really removed: sends from its sockets fail,
        # nothing reaches them; the side's next sockets bind the new one.
        box, role = lab.lab, move.role
        removed = await lab_faults.remove_address(
            box, role, f"{move.old}/24", move.ifname
        )
        # The default route went with the old (primary) address.
        gateway = box.topology.default_routes[role]
        rerouted = await lab_faults.replace_route(box, role, ["via", gateway])
        lab.moved[move.side] = move.new
        return [removed, rerouted], [move.new]
