"""The network under one call: each side's sockets, the NAT, the live faults.

:class:`CallNetwork` holds the :class:`~agent.stack.ice.SideNet` of each side
the agent plays — shared by every ICE generation of that side, so a fault
also catches the sockets an ICE restart opens — and, when :class:`NatConfig`
says so, puts one side behind a :class:`~agent.net.natbox.UserSpaceNat` with a
STUN responder outside it. :meth:`CallNetwork.apply` starts a fault by looking
its name up in :data:`~agent.net.faults.FAULTS`; the fault's own module says
what it does (see :mod:`agent.net.faults`).

Every fault is on the timeline: a ``fault_start`` event when it begins and a
``fault_end`` when it is over, both with ``initiator: network`` and the fault's
``cause`` — written by :meth:`CallNetwork.fault_started` and
:meth:`CallNetwork.fault_ended`, the only two places that record them. The
correlation (:mod:`agent.observe.correlate`) then gives that cause to the
states, gaps, pair changes and restarts the fault produced. The NAT's own
mapping timeouts are faults too (cause ``nat_timeout``): they start when a
mapping expires and end when the inside gets a new mapping.

Every random choice (loss, jitter) uses a ``random.Random`` seeded from the
call's seed and the fault's number, recorded in the fault's event.

In a kernel lab (:class:`~agent.net.labnet.CallLab`, ``--lab kernel``) the
sides' sockets live in the lab's namespaces, the NAT is the lab's nftables
NAT (no user-space NAT is built), the STUN server sits in the outside
namespace, and :meth:`CallNetwork.apply_fault` picks the layer per fault:
the fault's kernel action when it has one, its user-space one otherwise
(delay, jitter). The events say which (``layer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent.errors import CallError
from agent.net.faults import FAULTS
from agent.net.faults.base import ActiveFault, Fault, FaultParams, KernelAction
from agent.net.faults.params import Address, Seconds
from agent.net.lab import faults as lab_faults
from agent.net.labnet import CallLab
from agent.net.nat import NAT_TYPES, Behavior, NatBehavior, NatMapping, NatType, Refresh
from agent.net.natbox import StunResponder, UserSpaceNat
from agent.net.routes import RelayRoute
from agent.observe.events import (
    FaultDetail,
    FaultEndDetail,
    FaultEndEvent,
    FaultStartEvent,
)
from agent.observe.model import Initiator, Side
from agent.observe.observer import PeerObserver
from agent.stack.ice import SideNet

__all__ = ["CallNetwork", "NatConfig"]

logger = logging.getLogger(__name__)

#: How often a kernel NAT fault looks at conntrack for the new mapping, and
#: for how long at most (then it ends as "no new mapping").
MAPPING_POLL_S = 0.2
MAPPING_WATCH_S = 60.0
#: How often the kernel NAT's mappings are looked at for timeouts.
TIMEOUT_POLL_S = 0.5


class NatConfig(BaseModel):
    """One side behind a user-space NAT, as RFC 4787 behaviour.

    Declared once: it is the scenario file's ``network.nat`` section and what
    the call builds its NAT from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the side behind the NAT; the other side only ever sees the NAT's address
    side: Side = Side.CALLER
    type: NatType = "port_restricted_cone"
    #: override the type's mapping behaviour (RFC 4787 §4.1)
    mapping: Behavior | None = None
    #: override the type's filtering behaviour (RFC 4787 §5)
    filtering: Behavior | None = None
    #: an idle UDP mapping expires after this long (RFC 4787 §4.3)
    udp_timeout: Seconds = 30.0
    #: which traffic refreshes a mapping (REQ-6: outbound always)
    refresh: Refresh = Refresh.OUTBOUND
    #: the NAT's public address (the far end sees only this)
    public_address: Address = IPv4Address("127.0.0.3")
    #: the STUN server outside the NAT, for the server-reflexive candidate
    stun_address: Address = IPv4Address("127.0.0.4")

    def behavior(self) -> NatBehavior:
        mapping, filtering = NAT_TYPES[self.type]
        return NatBehavior(
            mapping=self.mapping or mapping,
            filtering=self.filtering or filtering,
            lifetime_s=self.udp_timeout,
            refresh=self.refresh,
        )


class CallNetwork:
    """The network under one call's agent sides; see the module docstring.

    Implements :class:`~agent.net.faults.base.FaultHost`.
    """

    def __init__(
        self,
        nat: NatConfig | None,
        sides: Mapping[Side, SideNet],
        observers: Mapping[Side, PeerObserver],
        seed: int,
        local_side: Side,
        clock_ms: Callable[[], float],
        lab: CallLab | None = None,
    ) -> None:
        #: the call's place in a kernel lab (None: user space only)
        self.lab = lab
        self._watches: set[asyncio.Task[None]] = set()
        #: bumped around every kernel fault action: a timeout poll that
        #: overlapped one saw the fault's doing, not an expiry
        self._kernel_epoch = 0
        self._kernel_busy = 0
        self.nat_config = nat
        self.sides = dict(sides)
        self._observers = observers
        self._seed = seed
        self._local_side = local_side
        self._clock_ms = clock_ms
        self.nat: UserSpaceNat | None = None
        self.stun: StunResponder | None = None
        self._faults: dict[int, ActiveFault] = {}
        self._numbers = 0
        self._routes: list[RelayRoute] = []

    # -- lifecycle ----------------------------------------------------------
    async def start_lab(self) -> None:
        """In a kernel lab: build it (a lab of the call's own), open every
        side's sockets in its namespace, and, with a NAT, a STUN server in
        the outside namespace for the inside side's srflx candidate."""
        lab = self.lab
        if lab is None:
            return
        await lab.build()
        lab.place(self.sides)
        config = self.nat_config
        if config is not None and config.side in self.sides and self.stun is None:
            self.stun = StunResponder("", sock=lab.stun_socket())
            self.sides[config.side].stun_server = self.stun.address
            if lab.owned:
                # A shared lab's calls would poll one table 40 times over.
                task = asyncio.get_running_loop().create_task(
                    self._watch_timeouts(config)
                )
                self._watches.add(task)
                task.add_done_callback(self._watches.discard)

    async def _watch_timeouts(self, config: NatConfig) -> None:
        """The kernel NAT's own mapping timeouts, as faults (cause
        ``nat_timeout``) like the user-space NAT reports them: one starts when
        every mapping of the inside side's sockets has closed (REQ-6: no
        outbound packet within the lifetime), and ends when one is open again.
        Polled, so the start is placed where the last look said it would
        expire; NAT faults a step started are left to their own ending."""
        lab = self.lab
        assert lab is not None
        net = self.sides[config.side]
        was_open: dict[int, float] = {}
        seen_at = 0.0
        timeout: ActiveFault | None = None
        while True:
            await asyncio.sleep(TIMEOUT_POLL_S)
            ports = lab.ports(net)
            epoch = self._kernel_epoch
            try:
                now_open = await lab.open_mappings(ports) if ports else {}
            except Exception as exc:  # a failed look: look again
                logger.debug("lab: mapping poll failed: %s", exc)
                continue
            if (
                not ports
                or self._kernel_busy
                or epoch != self._kernel_epoch
                or any(
                    f.waits_for_mapping and f.kind != "nat_timeout"
                    for f in self._faults.values()
                )
            ):
                was_open = {}  # a step's NAT fault is at work: not an expiry
                continue
            now = self._clock_ms()
            if timeout is None and was_open and not now_open:
                expiry = seen_at + 1000 * max(was_open.values())
                timeout = self.fault_started(
                    "nat_timeout",
                    config.side,
                    "nat_timeout",
                    layer="kernel",
                    at_ms=min(now, max(seen_at, expiry)),
                    mappings=[
                        f"{lab.lab.topology.public_ip}:{p}" for p in sorted(was_open)
                    ],
                    udp_timeout_ms=round(config.udp_timeout * 1000, 1),
                )
                timeout.waits_for_mapping = True
            elif timeout is not None and now_open:
                self.fault_ended(
                    timeout,
                    new_mapping=[
                        f"{lab.lab.topology.public_ip}:{p}" for p in sorted(now_open)
                    ],
                )
                timeout = None
            if timeout is not None and timeout.number not in self._faults:
                timeout = None  # ended by the call's end
            was_open, seen_at = now_open, now

    def start(self) -> None:
        """Build the NAT and its STUN server (before the first gathering)."""
        config = self.nat_config
        if self.lab is not None:
            return  # the lab's kernel NAT (start_lab)
        if config is None or self.nat is not None or config.side not in self.sides:
            return
        inside = self.sides[config.side]
        try:
            self.stun = StunResponder(str(config.stun_address))
            self.nat = UserSpaceNat(
                config.behavior(), str(config.public_address), inside, self._nat_event
            )
        except OSError as exc:
            self.close()
            raise CallError(f"cannot build the NAT on loopback: {exc}") from exc
        inside.route = self.nat
        inside.stun_server = self.stun.address

    async def aclose(self) -> None:
        """:meth:`close`, then undo the kernel faults still in force and
        remove the lab if it is the call's own."""
        for task in list(self._watches):
            task.cancel()
        self.close()
        if self.lab is not None:
            await self.lab.close()

    def close(self) -> None:
        for task in list(self._watches):
            task.cancel()
        for fault in list(self._faults.values()):
            self.fault_ended(fault, reason="call ended")
        for route in self._routes:
            route.close()
        if self.nat is not None:
            self.nat.close()
        if self.stun is not None:
            self.stun.close()

    # -- starting a fault -----------------------------------------------------
    def apply(self, side: Side | None, name: str, params: FaultParams) -> None:
        """Start the fault registered as ``name`` on ``side`` (None: the NAT)."""
        fault = FAULTS.get(name)
        if fault is None:
            raise CallError(f"unknown network fault {name!r}")
        if not isinstance(params, fault.Params):
            raise TypeError(
                f"{name} takes {fault.Params.__name__}, got {type(params).__name__}"
            )
        fault().start(self, side, params)

    async def apply_fault(
        self, side: Side | None, name: str, params: FaultParams
    ) -> Literal["kernel", "user"]:
        """Start fault ``name`` in the layer that can apply it: the kernel in
        a lab when the fault has a kernel action, user space otherwise."""
        fault_class = FAULTS.get(name)
        if (
            self.lab is None
            or fault_class is None
            or not fault_class.has_kernel_action()
        ):
            self.apply(side, name, params)
            return "user"
        if not isinstance(params, fault_class.Params):
            raise TypeError(f"{name} takes {fault_class.Params.__name__}")
        fault = fault_class()
        # The kernel acts during the commands (conntrack, nft: tens to
        # hundreds of ms): the fault starts when they start.
        began_ms = self._clock_ms()
        self._kernel_busy += 1
        try:
            action = await fault.kernel(self, self.lab, side, params)
        finally:
            self._kernel_busy -= 1
            self._kernel_epoch += 1
        if action is None:
            self.apply(side, name, params)
            return "user"
        self._kernel_started(fault, side, params, action, began_ms)
        return "kernel"

    def _kernel_started(
        self,
        fault: Fault[Any],
        side: Side | None,
        params: FaultParams,
        action: KernelAction,
        began_ms: float,
    ) -> None:
        lab = self.lab
        assert lab is not None
        for applied in action.applied:
            lab.record(applied)
        target = side if side is not None else lab.inside
        detail = dict(action.detail)
        if action.duration is not None:
            detail["duration_ms"] = round(action.duration * 1000, 1)
        active = self.fault_started(
            fault.kind,
            target,
            fault.cause(params),
            layer="kernel",
            at_ms=began_ms,
            **detail,
        )
        if action.ends == "instant":
            # For good: the side moved (nothing is undone when it "ends").
            self.fault_ended(active, instant=True)
        active.kernel = list(action.applied)
        if action.ends == "mapping":
            active.waits_for_mapping = True
            task = asyncio.get_running_loop().create_task(
                self._watch_mapping(active, action.watch_ports, action.old_ports)
            )
            self._watches.add(task)
            task.add_done_callback(self._watches.discard)
        elif action.duration is not None:
            self.end_after(active, action.duration)

    async def _watch_mapping(
        self, fault: ActiveFault, ports: list[int], old: list[int]
    ) -> None:
        """End a kernel NAT fault when conntrack shows the inside's sockets
        mapped to a public port again (a new one, after a rebind)."""
        lab = self.lab
        assert lab is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAPPING_WATCH_S
        while loop.time() < deadline:
            await asyncio.sleep(MAPPING_POLL_S)
            with contextlib.suppress(Exception):  # a failed read: try again
                entries = await lab_faults.conntrack_entries(lab.lab)
                fresh = [
                    endpoint
                    for endpoint in lab.mapping_of(entries, ports)
                    if endpoint[1] not in old
                ]
                if fresh:
                    self.fault_ended(
                        fault,
                        new_mapping=[f"{host}:{port}" for host, port in fresh],
                    )
                    return
        self.fault_ended(fault, reason="no new mapping")

    # -- FaultHost --------------------------------------------------------------
    def side_net(self, side: Side | None, kind: str) -> SideNet:
        if side is None or side not in self.sides:
            raise CallError(f"{kind}: the agent does not play the {side} in this call")
        return self.sides[side]

    def nat_box(self, kind: str) -> tuple[UserSpaceNat, Side]:
        if self.nat is None or self.nat_config is None:
            raise CallError(f"{kind}: this call has no NAT (network.nat)")
        return self.nat, self.nat_config.side

    def fault_seed(self, requested: int | None) -> int:
        if requested is not None:
            return requested
        # The number the next fault gets: stable for a given call seed.
        number = self._numbers + 1
        return random.Random(f"{self._seed}:fault:{number}").randrange(1 << 31)

    def end_after(self, fault: ActiveFault, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fault.timer = loop.call_later(seconds, self.fault_ended, fault)

    def adopt_route(self, route: RelayRoute) -> None:
        self._routes.append(route)

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
        self._numbers += 1
        started = self._clock_ms() if at_ms is None else at_ms
        fault = ActiveFault(self._numbers, kind, side, cause, started)
        fault.layer = layer
        self._faults[fault.number] = fault
        observer = self._observer(side)
        observer.add(
            FaultStartEvent(
                t_ms=fault.started_ms,
                side=observer.side,
                initiator=Initiator.NETWORK,
                cause=cause,
                detail=FaultDetail(
                    fault=kind,
                    fault_id=fault.number,
                    target=str(side),
                    layer=layer,
                    params=detail,
                ),
            )
        )
        logger.info("fault %d (%s, %s) on the %s", fault.number, kind, cause, side)
        return fault

    def fault_ended(
        self, fault: ActiveFault, reason: str | None = None, **detail: Any
    ) -> None:
        if self._faults.pop(fault.number, None) is None:
            return
        if fault.timer is not None:
            fault.timer.cancel()
        if self.lab is not None:
            for applied in fault.kernel:
                self.lab.undo_later(applied)
        if fault.filter is not None:
            filters = self.sides[fault.side].filters
            if fault.filter in filters:
                filters.remove(fault.filter)
        # What a filter did while it lasted (the counters it has).
        counted = {} if fault.filter is None else vars(fault.filter)
        observer = self._observer(fault.side)
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
                    layer=fault.layer,
                    duration_ms=round(self._clock_ms() - fault.started_ms, 1),
                    ended_by=reason,
                    dropped=counted.get("dropped"),
                    delayed=counted.get("delayed"),
                    largest_dropped=counted.get("largest_dropped"),
                    params=detail,
                ),
            )
        )

    # -- the NAT's own events -------------------------------------------------
    def _observer(self, side: Side) -> PeerObserver:
        return self._observers.get(side) or self._observers[self._local_side]

    def _nat_event(self, what: str, mapping: NatMapping) -> None:
        config = self.nat_config
        assert config is not None
        if what == "timeout":
            fault = self.fault_started(
                "nat_timeout",
                config.side,
                "nat_timeout",
                mappings=[mapping.label],
                udp_timeout_ms=round(config.udp_timeout * 1000, 1),
            )
            fault.waits_for_mapping = True
        elif what == "mapping":
            for fault in list(self._faults.values()):
                if fault.waits_for_mapping:
                    self.fault_ended(fault, new_mapping=mapping.label)
