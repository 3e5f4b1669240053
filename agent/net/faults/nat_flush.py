"""``nat.flush``: firewall state eviction — the NAT forgets every mapping and
permission; inbound is dropped until the inside sends again, and the ports
come back if still free (port preservation, as conntrack NAT does)."""

from __future__ import annotations

from agent.net.faults.base import (
    FaultHost,
    FaultParams,
    KernelAction,
    NatFault,
    register,
)
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.net.nat import NatMapping
from agent.net.natbox import UserSpaceNat
from agent.observe.model import Side


@register
class NatFlush(NatFault[FaultParams]):
    name = "nat.flush"
    default_cause = "firewall_eviction"
    summary = (
        "the NAT forgets its state (eviction): inbound dropped until the inside sends"
    )

    def act(self, nat: UserSpaceNat) -> list[NatMapping]:
        return nat.flush()

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: FaultParams
    ) -> KernelAction:
        # ``conntrack -F`` in the NAT namespace (every flow of a shared lab:
        # an eviction is the whole table), plus the NAT's learned sets.
        ports = lab.ports(host.side_net(lab.inside, self.kind))
        fault = await lab_faults.flush_conntrack(lab.lab)
        return KernelAction(
            [fault], dict(fault.detail), ends="mapping", watch_ports=ports
        )
