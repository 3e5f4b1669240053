"""``net.loss``: independent random losses (seeded, so a run replays)."""

from __future__ import annotations

import random
from typing import Any

from agent.net.faults.base import FilterFault, SeededParams, register
from agent.net.faults.params import Rate
from agent.net.filters import Loss as LossFilter


class LossParams(SeededParams):
    #: share of datagrams dropped, more than 0, at most 1
    rate: Rate


@register
class Loss(FilterFault[LossParams]):
    name = "net.loss"
    Params = LossParams
    default_cause = "packet_loss"
    summary = "drop a share of the side's datagrams at random (seeded)"

    def build(self, params: LossParams, rng: random.Random) -> LossFilter:
        return LossFilter(params.rate, rng, params.direction)

    def detail(self, params: LossParams) -> dict[str, Any]:
        return {"loss_rate": params.rate}
