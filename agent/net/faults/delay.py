"""``net.delay``: every datagram late by the same time (a longer path)."""

from __future__ import annotations

import random
from typing import Any

from agent.net.faults.base import FilterFault, SeededParams, register
from agent.net.faults.params import Seconds
from agent.net.filters import DelayFilter


class DelayParams(SeededParams):
    #: added one-way delay per datagram
    delay: Seconds


@register
class Delay(FilterFault[DelayParams]):
    name = "net.delay"
    Params = DelayParams
    default_cause = "delay"
    summary = "delay the side's datagrams by a fixed time"

    def build(self, params: DelayParams, rng: random.Random) -> DelayFilter:
        return DelayFilter(params.delay, 0.0, rng, params.direction)

    def detail(self, params: DelayParams) -> dict[str, Any]:
        return {"delay_ms": params.delay * 1000, "jitter_ms": 0.0}
