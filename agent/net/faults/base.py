"""The fault base classes, the registry, and what a fault needs from a call.

A fault is a class with a name (the scenario step that starts it), a
``Params`` model, a default cause and one action. The three families differ
only in that action, so the bookkeeping (seed, event, timer, teardown) is
written once per family here and once for all in the :class:`FaultHost`
(:class:`~agent.net.network.CallNetwork`):

* :class:`FilterFault` — a datagram filter on one side's sockets, for a
  while or until the call ends (blackhole, loss, delay, MTU): ``build``
  returns the filter.
* :class:`RouteFault` — the side's traffic moves for good (rebind, address
  or path change): ``route`` returns the new :class:`~agent.net.routes.RelayRoute`.
  :class:`MoveFault` is one to a new local address (``address:``); in a kernel
  lab it adds a spare address of the side's subnet, and ``leave_in_lab``
  says what becomes of the old one.
* :class:`NatFault` — the call's user-space NAT loses state: ``act`` does it
  and returns the mappings that went; the fault lasts until the inside gets a
  new mapping.

The layer: any fault may also declare a **kernel action** — ``kernel``, an
async method beside its user-space one — for a call that runs in a kernel lab
(``--lab kernel``, :mod:`agent.net.lab`). It applies the fault with
nftables, conntrack, links or routes and returns a :class:`KernelAction`
(what it did, and how the fault ends), or None when the kernel cannot do it
there; the call's network (:class:`~agent.net.network.CallNetwork`) picks the
layer — kernel when the call is in a lab and the fault has a kernel action,
user space otherwise (delay and jitter always: no ``sch_netem`` here) — and
every fault event says which one applied it (``layer``).
"""

from __future__ import annotations

import abc
import asyncio
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from agent.errors import CallError
from agent.net.faults.params import CAUSE_PATTERN, Address, Cause, Seconds, Seed
from agent.net.filters import Direction
from agent.net.lab import Role
from agent.net.lab import faults as lab_faults
from agent.net.lab.lab import KernelFault
from agent.net.labnet import CallLab
from agent.net.nat import NatMapping
from agent.net.natbox import UserSpaceNat
from agent.net.routes import RelayRoute
from agent.observe.model import Side
from agent.stack.ice import DatagramFilter, SideNet

__all__ = [
    "FAULTS",
    "ActiveFault",
    "DirectedParams",
    "Fault",
    "FaultHost",
    "FaultParams",
    "FilterFault",
    "KernelAction",
    "LabMove",
    "MoveFault",
    "MoveParams",
    "NatFault",
    "RouteFault",
    "SeededParams",
    "TimedParams",
    "register",
]


# --- parameters -------------------------------------------------------------


class FaultParams(BaseModel):
    """Every fault's parameters: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the field cause this fault stands for (default: the fault's own)
    cause: Cause | None = None


class TimedParams(FaultParams):
    #: how long the fault lasts (default: until the call ends)
    duration: Seconds | None = None


class DirectedParams(TimedParams):
    #: which way it acts, seen from the side
    direction: Direction = Direction.BOTH


class SeededParams(DirectedParams):
    #: seeds the fault's random choices (default: derived from the call's seed)
    seed: Seed | None = None


class MoveParams(FaultParams):
    #: the side's new local address
    address: Address


# --- what a fault needs from the call -----------------------------------------


@dataclass(eq=False)
class ActiveFault:
    """A fault between its ``fault_start`` and ``fault_end`` events."""

    number: int
    kind: str
    side: Side
    cause: str
    started_ms: float
    filter: DatagramFilter | None = None
    timer: asyncio.TimerHandle | None = None
    #: NAT faults end when the inside gets a new mapping
    waits_for_mapping: bool = False
    #: who applied it: "user" (the agent's sockets) or "kernel" (the lab)
    layer: Literal["kernel", "user"] = "user"
    #: what the kernel did, undone when the fault ends (layer "kernel")
    kernel: list[KernelFault] = field(default_factory=list)


@dataclass
class KernelAction:
    """What a fault's kernel action did, and how the fault ends."""

    applied: list[KernelFault]
    #: the fault's parameters for its ``fault_start`` event
    detail: dict[str, Any]
    #: "timed": at ``duration`` (or the call's end), undone then;
    #: "mapping": when the inside side's ``watch_ports`` get a public port
    #: not in ``old_ports`` (a NAT fault); "instant": at once
    ends: Literal["timed", "mapping", "instant"] = "timed"
    duration: float | None = None
    watch_ports: list[int] = field(default_factory=list)
    old_ports: list[int] = field(default_factory=list)


class FaultHost(Protocol):
    """The network under one call, as a fault sees it."""

    def side_net(self, side: Side | None, kind: str) -> SideNet:
        """The network of ``side``; CallError if the agent does not play it."""
        ...

    def nat_box(self, kind: str) -> tuple[UserSpaceNat, Side]:
        """The call's NAT and the side behind it; CallError if there is none."""
        ...

    def fault_seed(self, requested: int | None) -> int:
        """``requested``, or a seed derived from the call's and the fault's number."""
        ...

    def fault_started(
        self,
        kind: str,
        side: Side,
        cause: str,
        *,
        layer: Literal["kernel", "user"] = "user",
        at_ms: float | None = None,
        **detail: Any,
    ) -> ActiveFault:
        """Put ``fault_start`` on the timeline (at ``at_ms``, default now);
        the fault is active until ended."""
        ...

    def fault_ended(
        self, fault: ActiveFault, reason: str | None = None, **detail: Any
    ) -> None:
        """Remove the fault's filter and put ``fault_end`` on the timeline."""
        ...

    def end_after(self, fault: ActiveFault, seconds: float) -> None:
        """End ``fault`` ``seconds`` from now."""
        ...

    def adopt_route(self, route: RelayRoute) -> None:
        """Own ``route``'s sockets: they close when the call does."""
        ...


# --- faults -------------------------------------------------------------------

P = TypeVar("P", bound=FaultParams)
TimedP = TypeVar("TimedP", bound=TimedParams)


class Fault(abc.ABC, Generic[P]):
    """One kind of network fault. Subclass a family, then :func:`register`."""

    #: the scenario step that starts it: ``net.<x>`` on a side, ``nat.<x>`` on the NAT
    name: ClassVar[str]
    #: the fault's parameters, declared once (the step's schema derives from it)
    Params: ClassVar[type[FaultParams]] = FaultParams
    #: the field cause it stands for unless the step says ``cause:``
    default_cause: ClassVar[str]
    #: one line: what the far end sees (``callagent steps``, the README table)
    summary: ClassVar[str]
    #: what it acts on: one side's sockets, or the call's NAT
    acts_on: ClassVar[Literal["side", "nat"]] = "side"
    #: it moves the side's traffic (refused for a side behind the NAT)
    moves_side: ClassVar[bool] = False
    #: the ``fault`` the events name: ``net.loss`` -> ``loss``,
    #: ``nat.rebind`` -> ``nat_rebind`` (set by :func:`register`)
    kind: ClassVar[str]

    def cause(self, params: P) -> str:
        return params.cause or self.default_cause

    @abc.abstractmethod
    def start(self, host: FaultHost, side: Side | None, params: P) -> None:
        """Start the fault on ``host``; events and teardown go through it."""

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: P
    ) -> KernelAction | None:
        """Apply the fault in the call's kernel lab; None (the default): the
        kernel cannot, user space applies it inside the lab."""
        return None

    @classmethod
    def has_kernel_action(cls) -> bool:
        return cls.kernel is not Fault.kernel


class FilterFault(Fault[TimedP]):
    """A datagram filter on one side for ``duration`` (or until the call ends)."""

    @abc.abstractmethod
    def build(self, params: TimedP, rng: random.Random) -> DatagramFilter:
        """The filter; every random choice from ``rng`` (seeded, recorded)."""

    def detail(self, params: TimedP) -> dict[str, Any]:
        """The fault's own parameters for its ``fault_start`` event."""
        return {}

    def start(self, host: FaultHost, side: Side | None, params: TimedP) -> None:
        net = host.side_net(side, self.kind)
        assert side is not None  # side_net refuses None
        requested = params.seed if isinstance(params, SeededParams) else None
        seed = host.fault_seed(requested)
        impairment = self.build(params, random.Random(seed))
        detail: dict[str, Any] = {}
        if isinstance(params, DirectedParams):
            detail["direction"] = str(params.direction)
        detail.update(self.detail(params))
        if isinstance(params, SeededParams):
            detail["seed"] = seed
        if params.duration is not None:
            detail["duration_ms"] = round(params.duration * 1000, 1)
        fault = host.fault_started(self.kind, side, self.cause(params), **detail)
        fault.filter = impairment
        net.filters.append(impairment)
        if params.duration is not None:
            host.end_after(fault, params.duration)


class RouteFault(Fault[P]):
    """The side's traffic moves, at once and for good (an instant fault)."""

    moves_side = True

    @abc.abstractmethod
    def route(self, params: P) -> RelayRoute:
        """Where the side's datagrams leave from now."""

    def start(self, host: FaultHost, side: Side | None, params: P) -> None:
        net = host.side_net(side, self.kind)
        assert side is not None  # side_net refuses None
        if isinstance(net.route, UserSpaceNat):
            raise CallError(
                f"the {side} is behind the NAT; use nat.rebind / nat.flush for it"
            )
        route = self.route(params)
        old = net.route
        previous = [tap.local for tap in net.live_taps()]
        net.route = route
        host.adopt_route(route)
        if isinstance(old, RelayRoute):
            old.close()  # a second move kills the first one's sockets too
        for tap in net.live_taps():
            route.endpoint(tap)  # bind now, so the event names the new address
        fault = host.fault_started(
            self.kind,
            side,
            self.cause(params),
            old=[f"{host_}:{port}" for host_, port in previous],
            new=[f"{host_}:{port}" for host_, port in route.new_addresses()],
            old_address_alive=route.old_address_alive,
        )
        host.fault_ended(fault, instant=True)


@dataclass(frozen=True)
class LabMove:
    """A side's move in its kernel lab: ``new``, a spare address of its
    subnet, is on ``ifname`` beside ``old``."""

    side: Side
    role: Role
    old: str
    new: str
    ifname: str
    #: the side's sockets' ports
    ports: tuple[int, ...]


class MoveFault(RouteFault[MoveParams]):
    """The side moves to another local address (``address:`` in user space,
    a spare address of its subnet in a kernel lab); the subclass says what
    becomes of the old one."""

    Params = MoveParams
    #: the user-space route: sends from ``address``
    Route: ClassVar[type[RelayRoute]]

    def route(self, params: MoveParams) -> RelayRoute:
        return self.Route(str(params.address))

    @abc.abstractmethod
    async def leave_in_lab(
        self, lab: CallLab, move: LabMove
    ) -> tuple[list[KernelFault], list[str]]:
        """With ``move.new`` added: move the side's packets to it. Returns what
        the kernel did and the ``fault_start`` event's ``new`` addresses."""

    async def kernel(
        self, host: FaultHost, lab: CallLab, side: Side | None, params: MoveParams
    ) -> KernelAction:
        # The file's loopback address means nothing in the lab: the side gets
        # a spare address of its own subnet.
        assert side is not None
        role = lab.role(side)
        old = lab.address(side)
        ports = lab.ports(host.side_net(side, self.kind))
        new, ifname = lab.lab.spare_address(role)
        applied = [await lab_faults.add_address(lab.lab, role, f"{new}/24", ifname)]
        move = LabMove(side, role, old, new, ifname, tuple(ports))
        moved, new_addresses = await self.leave_in_lab(lab, move)
        return KernelAction(
            [*applied, *moved],
            {
                "old": [f"{old}:{port}" for port in ports],
                "new": new_addresses,
                "old_address_alive": self.Route.old_address_alive,
                "requested": str(params.address),
            },
            ends="instant",
        )


class NatFault(Fault[P]):
    """The call's NAT loses state; over when the inside gets a new mapping."""

    acts_on = "nat"

    @abc.abstractmethod
    def act(self, nat: UserSpaceNat) -> list[NatMapping]:
        """Change the NAT; return the mappings that are gone."""

    def start(self, host: FaultHost, side: Side | None, params: P) -> None:
        nat, inside = host.nat_box(self.kind)
        gone = self.act(nat)
        fault = host.fault_started(
            self.kind,
            inside,
            self.cause(params),
            mappings=[mapping.label for mapping in gone],
        )
        fault.waits_for_mapping = True


# --- the registry -------------------------------------------------------------

#: Every registered fault by step name. Read-only outside :func:`register`.
FAULTS: dict[str, type[Fault[Any]]] = {}

_NAME = re.compile(r"(net|nat)\.[a-z][a-z0-9_]*")
FaultClass = TypeVar("FaultClass", bound=type[Fault[Any]])


def register(cls: FaultClass) -> FaultClass:
    """Class decorator: add ``cls`` to :data:`FAULTS` under ``cls.name``.

    The checks are for the fault's author (import-time ``TypeError``), so a
    half-declared fault never reaches a scenario.
    """
    where = f"{cls.__module__}.{cls.__qualname__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TypeError(f"{where}.name must be 'net.<x>' or 'nat.<x>', got {name!r}")
    if (cls.acts_on == "nat") != name.startswith("nat."):
        raise TypeError(f"{where}: nat.* faults act on the NAT, net.* on a side")
    summary = getattr(cls, "summary", None)
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
        raise TypeError(f"{where}.summary must be one non-empty line")
    cause = getattr(cls, "default_cause", None)
    if not isinstance(cause, str) or not re.fullmatch(CAUSE_PATTERN, cause):
        raise TypeError(f"{where}.default_cause must be a cause name like 'mtu'")
    params = cls.Params
    if not (isinstance(params, type) and issubclass(params, FaultParams)):
        raise TypeError(f"{where}.Params must subclass FaultParams")
    if issubclass(cls, FilterFault) and not issubclass(params, TimedParams):
        raise TypeError(f"{where}.Params must subclass TimedParams (a filter lasts)")
    if name in FAULTS:
        other = FAULTS[name]
        raise ValueError(
            f"fault {name!r} is already registered by "
            f"{other.__module__}.{other.__qualname__}"
        )
    prefix, _, rest = name.partition(".")
    cls.kind = rest if prefix == "net" else f"{prefix}_{rest}"
    FAULTS[name] = cls
    return cls
