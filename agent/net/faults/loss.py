"""``net.loss``: independent random losses (seeded, so a run replays)."""

from __future__ import annotations

import random
from typing import Any

from agent.net.faults.base import (
    FaultHost,
    FilterFault,
    KernelAction,
    SeededParams,
    register,
)
from agent.net.faults.params import Rate
from agent.net.filters import Loss as LossFilter
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.observe.model import Side


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

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: LossParams
    ) -> KernelAction:
        # ``numgen random`` on the side's own link: the kernel's PRNG, so the
        # rate is recorded but the choices are not replayable (seeded: false).
        assert side is not None
        link = lab.link(side)
        fault = await lab_faults.loss(
            lab.lab, params.rate * 100, link, lab.direction(side, params.direction)
        )
        return KernelAction(
            [fault],
            {
                "direction": str(params.direction),
                "loss_rate": params.rate,
                "link": link,
                "seeded": False,
            },
            duration=params.duration,
        )
