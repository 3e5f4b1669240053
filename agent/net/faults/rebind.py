"""``net.rebind``: the side's traffic continues from a new source port and the
old port is dead — exactly what a NAT rebinding looks like to the far end
(RFC 4787 §4.3), hence the default cause."""

from __future__ import annotations

from agent.net.faults.base import FaultParams, RouteFault, register
from agent.net.routes import Rebind as RebindRoute


@register
class Rebind(RouteFault[FaultParams]):
    name = "net.rebind"
    default_cause = "nat_rebind"
    summary = "the side's traffic continues from a new source port; the old one dies"

    def route(self, params: FaultParams) -> RebindRoute:
        return RebindRoute()
