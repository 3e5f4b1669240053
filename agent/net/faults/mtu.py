"""``net.mtu``: a path with a small MTU and no fragmentation (DF set, ICMP
filtered): big DTLS handshake flights vanish, audio and STUN pass."""

from __future__ import annotations

import random
from typing import Any

from agent.net.faults.base import DirectedParams, FilterFault, register
from agent.net.faults.params import DatagramBytes
from agent.net.filters import MtuLimit


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
