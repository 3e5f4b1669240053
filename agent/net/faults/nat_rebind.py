"""``nat.rebind``: the NAT loses its mappings; the next packets leave from new
public ports the far end has never seen."""

from __future__ import annotations

from agent.net.faults.base import FaultParams, NatFault, register
from agent.net.nat import NatMapping
from agent.net.natbox import UserSpaceNat


@register
class NatRebind(NatFault[FaultParams]):
    name = "nat.rebind"
    default_cause = "nat_rebind"
    summary = "the NAT drops its mappings; the next packets get new public ports"

    def act(self, nat: UserSpaceNat) -> list[NatMapping]:
        return nat.rebind()
