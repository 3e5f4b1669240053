"""``net.blackhole``: a dead path, or a firewall that closed, for a while."""

from __future__ import annotations

import random

from agent.net.faults.base import (
    DirectedParams,
    FaultHost,
    FilterFault,
    KernelAction,
    register,
)
from agent.net.filters import Blackhole as BlackholeFilter
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.observe.model import Side


@register
class Blackhole(FilterFault[DirectedParams]):
    name = "net.blackhole"
    Params = DirectedParams
    default_cause = "blackhole"
    summary = "drop all of the side's traffic (both ways or one way) for a duration"

    def build(self, params: DirectedParams, rng: random.Random) -> BlackholeFilter:
        return BlackholeFilter(params.direction)

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: DirectedParams
    ) -> KernelAction:
        # nftables drop at the ingress of the side's own link: lost on the
        # wire, after the sender's kernel (and the NAT's conntrack) saw it.
        assert side is not None
        link = lab.link(side)
        fault = await lab_faults.blackhole(
            lab.lab, link, lab.direction(side, params.direction)
        )
        return KernelAction(
            [fault],
            {"direction": str(params.direction), "link": link},
            duration=params.duration,
        )
