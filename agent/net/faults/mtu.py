"""``net.mtu``: a path with a small MTU and no fragmentation (DF set, ICMP
filtered): big DTLS handshake flights vanish, audio and STUN pass."""

from __future__ import annotations

import random
from typing import Any

from agent.net.faults.base import (
    DirectedParams,
    FaultHost,
    FilterFault,
    KernelAction,
    register,
)
from agent.net.faults.params import DatagramBytes
from agent.net.filters import Direction, MtuLimit
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.observe.model import Side

#: IPv4 and UDP headers: a link MTU carries this much less UDP payload.
_IP_UDP_HEADERS = 28
#: The smallest IPv4 MTU (RFC 791): a max_bytes below it stays in user space.
_MIN_MTU = 68


class MtuParams(DirectedParams):
    #: largest UDP payload that passes
    max_bytes: DatagramBytes


@register
class Mtu(FilterFault[MtuParams]):
    name = "net.mtu"
    Params = MtuParams
    default_cause = "mtu"
    summary = "drop the side's datagrams larger than max_bytes (path-MTU trouble)"

    def build(self, params: MtuParams, rng: random.Random) -> MtuLimit:
        return MtuLimit(params.max_bytes, params.direction)

    def detail(self, params: MtuParams) -> dict[str, Any]:
        return {"max_bytes": params.max_bytes}

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: MtuParams
    ) -> KernelAction | None:
        # The link past the router gets the MTU on the router's end and the
        # router's ICMP frag-needed is dropped (a PMTUD black hole, as the
        # user-space fault models). Both ways only: one way stays user space.
        assert side is not None
        mtu = params.max_bytes + _IP_UDP_HEADERS
        if params.direction is not Direction.BOTH or mtu < _MIN_MTU:
            return None
        link = lab.far_link(side)
        fault = await lab_faults.path_mtu_blackhole(lab.lab, mtu, link)
        return KernelAction(
            [fault],
            {
                "direction": str(params.direction),
                "max_bytes": params.max_bytes,
                "link": link,
                "link_mtu": mtu,
                "icmp_frag_needed": "dropped",
            },
            duration=params.duration,
        )
