"""``nat.flush``: firewall state eviction — the NAT forgets every mapping and
permission; inbound is dropped until the inside sends again, and the ports
come back if still free (port preservation, as conntrack NAT does)."""

from __future__ import annotations

from agent.net.faults.base import FaultParams, NatFault, register
from agent.net.nat import NatMapping
from agent.net.natbox import UserSpaceNat


@register
class NatFlush(NatFault[FaultParams]):
    name = "nat.flush"
    default_cause = "firewall_eviction"
    summary = (
        "the NAT forgets its state (eviction): inbound dropped until the inside sends"
    )

    def act(self, nat: UserSpaceNat) -> list[NatMapping]:
        return nat.flush()
