"""Network faults on a live call: the call-side half of ``net.*``/``nat.*`` steps.

:class:`CallNetwork` gives each side the call plays one
:class:`~agent.stack.ice.SideNet` — shared by every ICE generation of that side,
so a fault also catches the sockets an ICE restart opens — and, when the
scenario says so, puts one side behind a :class:`~agent.net.natbox.UserSpaceNat`
with a STUN responder outside it. :class:`NetFaults` is the mixin that gives a
call the :class:`~agent.scenario.steps_net.NetStepTarget` methods.

Every fault is on the timeline: a ``fault_start`` event when it begins and a
``fault_end`` when it is over, both with ``initiator: network`` and the fault's
``cause``; the correlation (:mod:`agent.observe.correlate`) then gives that
cause to the states, gaps, pair changes and restarts the fault produced. The
NAT's own mapping timeouts are faults too (cause ``nat_timeout``): they start
when a mapping expires and end when the inside gets a new mapping.

Every random choice (loss, jitter) uses a ``random.Random`` seeded from the
call's seed and the fault's number, recorded in the fault's event.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import CallError
from agent.net.filters import Blackhole, DelayFilter, Direction, Loss, MtuLimit
from agent.net.nat import NAT_TYPES, Behavior, NatBehavior, NatMapping, Refresh
from agent.net.natbox import StunResponder, UserSpaceNat
from agent.net.routes import AddressChange, PathChange, Rebind, RelayRoute
from agent.net.spec import FaultKind, FaultSpec
from agent.observe.events import (
    FaultDetail,
    FaultEndDetail,
    FaultEndEvent,
    FaultStartEvent,
)
from agent.observe.model import Initiator, Side
from agent.observe.observer import PeerObserver
from agent.stack.ice import DatagramFilter, SideNet
from agent.stack.peer import Peer

__all__ = ["CallNetwork", "NatConfig", "NetFaults", "NetworkConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NatConfig:
    """One side behind a user-space NAT (RFC 4787 behaviour as data)."""

    side: Side = Side.CALLER
    type: str = "port_restricted_cone"
    #: override the type's mapping / filtering behaviour
    mapping: Behavior | None = None
    filtering: Behavior | None = None
    udp_timeout_s: float = 30.0
    refresh: Refresh = Refresh.OUTBOUND
    public_address: str = "127.0.0.3"
    stun_address: str = "127.0.0.4"

    def behavior(self) -> NatBehavior:
        mapping, filtering = NAT_TYPES[self.type]
        return NatBehavior(
            mapping=self.mapping or mapping,
            filtering=self.filtering or filtering,
            lifetime_s=self.udp_timeout_s,
            refresh=self.refresh,
        )


@dataclass(frozen=True)
class NetworkConfig:
    nat: NatConfig | None = None


@dataclass
class ActiveFault:
    number: int
    kind: str
    side: Side
    cause: str
    started_ms: float
    filter: DatagramFilter | None = None
    timer: asyncio.TimerHandle | None = None
    #: NAT faults end when the inside gets a new mapping
    waits_for_mapping: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


class CallNetwork:
    """The network under one call's agent sides; see the module docstring."""

    def __init__(
        self,
        config: NetworkConfig,
        peers: dict[Side, Peer],
        observers: dict[Side, PeerObserver],
        seed: int,
        local_side: Side,
        clock_ms: Callable[[], float],
    ) -> None:
        self.config = config
        self._clock_ms = clock_ms
        self._peers = peers
        self._observers = observers
        self._seed = seed
        self._local_side = local_side
        # Each peer passes its side's network to every generation it makes.
        self.sides: dict[Side, SideNet] = {
            side: peer.config.net for side, peer in peers.items()
        }
        self.nat: UserSpaceNat | None = None
        self.stun: StunResponder | None = None
        self._faults: dict[int, ActiveFault] = {}
        self._numbers = 0
        self._routes: list[RelayRoute] = []

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Build the NAT and its STUN server (before the first gathering)."""
        nat = self.config.nat
        if nat is None or self.nat is not None or nat.side not in self.sides:
            return
        try:
            self.stun = StunResponder(nat.stun_address)
            inside = self.sides[nat.side]
            self.nat = UserSpaceNat(
                nat.behavior(), nat.public_address, inside, self._nat_event
            )
        except OSError as exc:
            self.close()
            raise CallError(f"cannot build the NAT on loopback: {exc}") from exc
        inside.route = self.nat
        inside.stun_server = self.stun.address

    def close(self) -> None:
        for fault in list(self._faults.values()):
            self._end(fault, reason="call ended")
        for route in self._routes:
            route.close()
        if self.nat is not None:
            self.nat.close()
        if self.stun is not None:
            self.stun.close()

    # -- recording ------------------------------------------------------------
    def _observer(self, side: Side) -> PeerObserver:
        return self._observers.get(side) or self._observers[self._local_side]

    def _begin(self, kind: str, side: Side, cause: str, **detail: Any) -> ActiveFault:
        self._numbers += 1
        observer = self._observer(side)
        fault = ActiveFault(
            self._numbers,
            kind,
            side,
            cause,
            self._clock_ms(),
            detail=dict(detail),
        )
        self._faults[fault.number] = fault
        observer.add(
            FaultStartEvent(
                t_ms=fault.started_ms,
                side=observer.side,
                initiator=Initiator.NETWORK,
                cause=cause,
                detail=FaultDetail(
                    fault=kind, fault_id=fault.number, target=str(side), params=detail
                ),
            )
        )
        logger.info("fault %d (%s, %s) on the %s", fault.number, kind, cause, side)
        return fault

    def _end(
        self, fault: ActiveFault, reason: str | None = None, **detail: Any
    ) -> None:
        if self._faults.pop(fault.number, None) is None:
            return
        if fault.timer is not None:
            fault.timer.cancel()
        if fault.filter is not None:
            filters = self.sides[fault.side].filters
            if fault.filter in filters:
                filters.remove(fault.filter)
        observer = self._observer(fault.side)
        # What a filter did while it lasted (the counters it has).
        counted = {} if fault.filter is None else vars(fault.filter)
        observer.add(
            FaultEndEvent(
                t_ms=self._clock_ms(),
                side=observer.side,
                initiator=Initiator.NETWORK,
                cause=fault.cause,
                detail=FaultEndDetail(
                    fault=fault.kind,
                    fault_id=fault.number,
                    target=str(fault.side),
                    duration_ms=round(self._clock_ms() - fault.started_ms, 1),
                    ended_by=reason,
                    dropped=counted.get("dropped"),
                    delayed=counted.get("delayed"),
                    largest_dropped=counted.get("largest_dropped"),
                    params=detail,
                ),
            )
        )

    # -- faults on a side's own sockets -------------------------------------
    def apply(self, side: Side | None, spec: FaultSpec) -> None:
        kind = spec.kind
        if kind in (FaultKind.NAT_REBIND, FaultKind.NAT_FLUSH):
            self._nat_fault(spec)
            return
        if side is None or side not in self.sides:
            raise CallError(f"{kind}: the agent does not play the {side} in this call")
        cause = spec.effective_cause
        if kind in (FaultKind.REBIND, FaultKind.ADDRESS_CHANGE, FaultKind.PATH_CHANGE):
            self._move(side, spec, cause)
            return
        seed = spec.seed if spec.seed is not None else self._fault_seed()
        rng = random.Random(seed)
        direction = Direction(spec.direction)
        impairment: DatagramFilter
        params: dict[str, Any] = {"direction": str(direction)}
        if kind is FaultKind.BLACKHOLE:
            impairment = Blackhole(direction)
        elif kind is FaultKind.LOSS:
            impairment = Loss(spec.loss_rate, rng, direction)
            params.update(loss_rate=spec.loss_rate, seed=seed)
        elif kind in (FaultKind.DELAY, FaultKind.JITTER):
            impairment = DelayFilter(
                spec.delay_ms / 1000, spec.jitter_ms / 1000, rng, direction
            )
            params.update(delay_ms=spec.delay_ms, jitter_ms=spec.jitter_ms, seed=seed)
        elif kind is FaultKind.MTU:
            impairment = MtuLimit(spec.max_bytes, direction)
            params.update(max_bytes=spec.max_bytes)
        else:  # pragma: no cover - FaultKind is closed
            raise CallError(f"unknown fault {kind}")
        if spec.duration_s is not None:
            params["duration_ms"] = round(spec.duration_s * 1000, 1)
        fault = self._begin(str(kind), side, cause, **params)
        fault.filter = impairment
        self.sides[side].filters.append(impairment)
        if spec.duration_s is not None:
            fault.timer = asyncio.get_running_loop().call_later(
                spec.duration_s, self._end, fault
            )

    def _fault_seed(self) -> int:
        return random.Random(f"{self._seed}:fault:{self._numbers + 1}").randrange(
            1 << 31
        )

    def _move(self, side: Side, spec: FaultSpec, cause: str) -> None:
        net = self.sides[side]
        if isinstance(net.route, UserSpaceNat):
            raise CallError(
                f"the {side} is behind the NAT; use nat.rebind / nat.flush for it"
            )
        route: RelayRoute
        if spec.kind is FaultKind.REBIND:
            route = Rebind()
        elif spec.kind is FaultKind.ADDRESS_CHANGE:
            route = AddressChange(spec.address)
        else:
            route = PathChange(spec.address)
        old = net.route
        previous = [t.local for t in net.live_taps()]
        net.route = route
        self._routes.append(route)
        if isinstance(old, RelayRoute):
            old.close()  # a second move kills the first one's sockets too
        for tap in net.live_taps():
            route.endpoint(tap)  # bind now, so the event names the new address
        fault = self._begin(
            str(spec.kind),
            side,
            cause,
            old=[f"{h}:{p}" for h, p in previous],
            new=[f"{h}:{p}" for h, p in route.new_addresses()],
            old_address_alive=route.old_address_alive,
        )
        self._end(fault, instant=True)

    # -- the NAT --------------------------------------------------------------
    def _nat_fault(self, spec: FaultSpec) -> None:
        nat, config = self.nat, self.config.nat
        if nat is None or config is None:
            raise CallError(f"{spec.kind}: this call has no NAT (network.nat)")
        side = config.side
        if spec.kind is FaultKind.NAT_REBIND:
            gone = nat.rebind()
        else:
            gone = nat.flush()
        fault = self._begin(
            str(spec.kind),
            side,
            spec.effective_cause,
            mappings=[_describe(m) for m in gone],
        )
        fault.waits_for_mapping = True

    def _nat_event(self, what: str, mapping: NatMapping) -> None:
        config = self.config.nat
        assert config is not None
        if what == "timeout":
            fault = self._begin(
                "nat_timeout",
                config.side,
                "nat_timeout",
                mappings=[_describe(mapping)],
                udp_timeout_ms=round(config.udp_timeout_s * 1000, 1),
            )
            fault.waits_for_mapping = True
        elif what == "mapping":
            for fault in list(self._faults.values()):
                if fault.waits_for_mapping:
                    self._end(fault, new_mapping=_describe(mapping))


def _describe(mapping: NatMapping) -> str:
    inside, public = mapping.internal, mapping.public
    return f"{inside[0]}:{inside[1]} -> {public[0]}:{public[1]}"


class NetFaults:
    """Mixin for :class:`~agent.call.calls.Call`: the ``NetStepTarget`` methods.

    The call sets :attr:`network` in its constructor and calls
    ``network.start()`` before signalling and ``network.close()`` on teardown.
    """

    network: CallNetwork

    async def apply_fault(self, side: Side | None, fault: FaultSpec) -> None:
        """Start ``fault`` on ``side`` (``None`` for NAT faults)."""
        self.network.apply(side, fault)
        await asyncio.sleep(0)
