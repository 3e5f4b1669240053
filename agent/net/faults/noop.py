"""``net.noop``: a fault that changes nothing — the minimal example.

It is on the timeline like any fault (``fault_start``, ``fault_end``, a
cause), but every datagram passes. A scenario uses it as a control: whatever
the correlation attributes to ``noop`` was not caused by the network.
"""

from __future__ import annotations

import random

from agent.net.faults.base import FilterFault, TimedParams, register
from agent.net.filters import Passthrough


@register
class Noop(FilterFault[TimedParams]):
    name = "net.noop"
    Params = TimedParams
    default_cause = "noop"
    summary = "nothing changes, but a fault is on the timeline (a control)"

    def build(self, params: TimedParams, rng: random.Random) -> Passthrough:
        return Passthrough()
