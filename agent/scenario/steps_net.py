"""Network fault steps: ``net.*`` on a side's own sockets, ``nat.*`` on the NAT.

Each step builds a :class:`~agent.net.spec.FaultSpec` and hands it to the call
(:class:`NetStepTarget`); the call layer (``agent/call/faults.py``) applies it
and puts ``fault_start``/``fault_end`` on the timeline with the fault's cause.
Every step takes an optional ``cause`` so a scenario can say which field cause
the fault stands for (``net.blackhole`` as ``firewall_eviction``, say).

============================  ==============================================
step                          what the far end sees
============================  ==============================================
``net.blackhole``             nothing, both ways or one way, for a duration
``net.loss``                  a share of datagrams missing (seeded)
``net.delay``/``net.jitter``  datagrams late, reordered by jitter (seeded)
``net.mtu``                   datagrams above N bytes missing (big DTLS flights)
``net.rebind``                the side's traffic from a new port; old port dead
``net.address_change``        traffic from another address; old one dead (VPN)
``net.path_change``           traffic from another address; old one alive
``nat.rebind``                the NAT forgets its mappings; new public ports
``nat.flush``                 the NAT/firewall forgets its state (eviction)
============================  ==============================================
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, Field, StringConstraints

from agent.errors import CallError
from agent.net.spec import FaultKind, FaultSpec
from agent.observe.model import Side
from agent.scenario.duration import Duration
from agent.scenario.fields import LoopbackAddress, PositiveDuration, Probability, Seed
from agent.scenario.steps import Step, StepParams, StepTarget, register

__all__ = ["NetStepTarget"]


class NetStepTarget(StepTarget, Protocol):
    """A live call that can inject network faults."""

    async def apply_fault(self, side: Side | None, fault: FaultSpec) -> None:
        """Start ``fault`` on ``side``'s network (``None``: the NAT's)."""
        ...


Cause = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
WireWay = Literal["both", "inbound", "outbound"]


def _net(target: StepTarget, step: str) -> NetStepTarget:
    if not hasattr(target, "apply_fault"):
        raise CallError(f"{step}: this call cannot inject network faults")
    return target  # type: ignore[return-value]


class CauseParams(StepParams):
    #: the field cause this fault stands for (default: the fault's own)
    cause: Cause | None = None


class TimedParams(CauseParams):
    #: how long the fault lasts (default: until the call ends)
    duration: PositiveDuration | None = None
    #: which way it acts, seen from the side
    direction: WireWay = "both"


class _FaultStep(Step):
    kind: FaultKind

    def spec(self, params: BaseModel) -> FaultSpec:
        assert isinstance(params, CauseParams)
        extra = params.model_dump(exclude={"cause"})
        return FaultSpec(
            kind=self.kind,
            cause=params.cause,
            duration_s=extra.pop("duration", None),
            direction=extra.pop("direction", "both"),
            loss_rate=extra.pop("rate", 0.0),
            delay_ms=extra.pop("delay", 0.0) * 1000,
            jitter_ms=extra.pop("jitter", 0.0) * 1000,
            max_bytes=extra.pop("max_bytes", 0),
            address=None if "address" not in extra else str(extra.pop("address")),
            seed=extra.pop("seed", None),
        )

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        if self.side == "required" and side is None:
            raise ValueError(f"{self.name} needs a side")
        await _net(target, self.name).apply_fault(side, self.spec(params))


@register
class NetBlackhole(_FaultStep):
    """Drop every datagram of ``side`` (both ways, or one way) for a while."""

    name = "net.blackhole"
    side = "required"
    kind = FaultKind.BLACKHOLE
    Params = TimedParams
    summary = "drop all of the side's traffic (both ways or one way) for a duration"


class LossParams(TimedParams):
    #: share of datagrams dropped, 0..1
    rate: Probability
    seed: Seed | None = None


@register
class NetLoss(_FaultStep):
    name = "net.loss"
    side = "required"
    kind = FaultKind.LOSS
    Params = LossParams
    summary = "drop a share of the side's datagrams at random (seeded)"


class DelayParams(TimedParams):
    #: added one-way delay per datagram
    delay: PositiveDuration
    seed: Seed | None = None


@register
class NetDelay(_FaultStep):
    name = "net.delay"
    side = "required"
    kind = FaultKind.DELAY
    Params = DelayParams
    summary = "delay the side's datagrams by a fixed time"


class JitterParams(TimedParams):
    #: each datagram gets a uniform extra delay in 0..jitter (reorders)
    jitter: PositiveDuration
    delay: Duration = 0.0
    seed: Seed | None = None


@register
class NetJitter(_FaultStep):
    name = "net.jitter"
    side = "required"
    kind = FaultKind.JITTER
    Params = JitterParams
    summary = "delay the side's datagrams by a random 0..jitter (seeded; reorders)"


class MtuParams(TimedParams):
    #: largest UDP payload that passes
    max_bytes: Annotated[int, Field(ge=28, le=65507)]


@register
class NetMtu(_FaultStep):
    name = "net.mtu"
    side = "required"
    kind = FaultKind.MTU
    Params = MtuParams
    summary = "drop the side's datagrams larger than max_bytes (path-MTU trouble)"


@register
class NetRebind(_FaultStep):
    name = "net.rebind"
    side = "required"
    kind = FaultKind.REBIND
    Params = CauseParams
    summary = "the side's traffic continues from a new source port; the old one dies"


class MoveParams(CauseParams):
    #: the side's new local address
    address: LoopbackAddress


@register
class NetAddressChange(_FaultStep):
    name = "net.address_change"
    side = "required"
    kind = FaultKind.ADDRESS_CHANGE
    Params = MoveParams
    summary = "the side moves to another local address; the old one dies (VPN)"


@register
class NetPathChange(_FaultStep):
    name = "net.path_change"
    side = "required"
    kind = FaultKind.PATH_CHANGE
    Params = MoveParams
    summary = "the side sends from another local address; the old one stays alive"


@register
class NatRebind(_FaultStep):
    name = "nat.rebind"
    side = "none"
    kind = FaultKind.NAT_REBIND
    Params = CauseParams
    summary = "the NAT drops its mappings; the next packets get new public ports"


@register
class NatFlush(_FaultStep):
    name = "nat.flush"
    side = "none"
    kind = FaultKind.NAT_FLUSH
    Params = CauseParams
    summary = (
        "the NAT forgets its state (eviction): inbound dropped until the inside sends"
    )
