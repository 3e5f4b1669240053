"""``net.jitter``: a uniform random extra delay per datagram, which reorders
them as a real queue with variable delay does."""

from __future__ import annotations

import random
from typing import Any

from agent.net.faults.base import FilterFault, SeededParams, register
from agent.net.faults.params import NonNegativeSeconds, Seconds
from agent.net.filters import DelayFilter


class JitterParams(SeededParams):
    #: each datagram gets a uniform extra delay in 0..jitter (reorders)
    jitter: Seconds
    #: a fixed delay on top
    delay: NonNegativeSeconds = 0.0


@register
class Jitter(FilterFault[JitterParams]):
    name = "net.jitter"
    Params = JitterParams
    default_cause = "jitter"
    summary = "delay the side's datagrams by a random 0..jitter (seeded; reorders)"

    def build(self, params: JitterParams, rng: random.Random) -> DelayFilter:
        return DelayFilter(params.delay, params.jitter, rng, params.direction)

    def detail(self, params: JitterParams) -> dict[str, Any]:
        return {"delay_ms": params.delay * 1000, "jitter_ms": params.jitter * 1000}
