"""``nat.rebind``: the NAT loses its mappings; the next packets leave from new
public ports the far end has never seen."""

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
class NatRebind(NatFault[FaultParams]):
    name = "nat.rebind"
    default_cause = "nat_rebind"
    summary = "the NAT drops its mappings; the next packets get new public ports"

    def act(self, nat: UserSpaceNat) -> list[NatMapping]:
        return nat.rebind()

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: FaultParams
    ) -> KernelAction:
        # conntrack entries of this call's inside sockets deleted; the next
        # packet gets a new public port (EIM: pinned by an snat rule, since
        # port preservation would hand the old one back).
        ports = lab.ports(host.side_net(lab.inside, self.kind))
        applied = [await lab_faults.rebind(lab.lab, port) for port in ports]
        old: set[int] = set()
        pinned: dict[str, object] = {}
        deleted = 0
        for fault in applied:
            ports_before = fault.detail["old_public_ports"]
            pins = fault.detail["pinned_ports"]
            count = fault.detail["conntrack_deleted"]
            assert isinstance(ports_before, list) and isinstance(pins, dict)
            assert isinstance(count, int)
            old.update(int(p) for p in ports_before)
            pinned.update(pins)
            deleted += count
        return KernelAction(
            applied,
            {
                "inside_ports": ports,
                "old_public_ports": sorted(old),
                "pinned_ports": pinned,
                "conntrack_deleted": deleted,
            },
            ends="mapping",
            watch_ports=ports,
            old_ports=sorted(old),
        )
