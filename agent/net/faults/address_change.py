"""``net.address_change``: the side moves to another local address and the old
one is dead — a VPN reconnect that hands out a new tunnel address."""

from __future__ import annotations

from agent.net.faults.base import FaultParams, RouteFault, register
from agent.net.faults.params import Address
from agent.net.routes import AddressChange as AddressChangeRoute


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
