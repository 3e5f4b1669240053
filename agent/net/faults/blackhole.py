"""``net.blackhole``: a dead path, or a firewall that closed, for a while."""

from __future__ import annotations

import random

from agent.net.faults.base import DirectedParams, FilterFault, register
from agent.net.filters import Blackhole as BlackholeFilter


@register
class Blackhole(FilterFault[DirectedParams]):
    name = "net.blackhole"
    Params = DirectedParams
    default_cause = "blackhole"
    summary = "drop all of the side's traffic (both ways or one way) for a duration"

    def build(self, params: DirectedParams, rng: random.Random) -> BlackholeFilter:
        return BlackholeFilter(params.direction)
