"""A call placed in a kernel lab: which side is in which namespace, its
sockets opened there, the STUN server outside the NAT, and what the kernel
fault actions of :mod:`agent.net.faults` need to know about the call.

Placement: the side behind the scenario's NAT is in the ``inside``
namespace, the other side in ``outside``. With no NAT in the scenario the
caller is ``inside`` and the middle namespace only routes (a plain path of
two links). Each side's host sockets are opened in its namespace by
:func:`~agent.net.lab.shell.socket_in` (a short-lived thread that
``setns``\\ es, opens and binds, then exits); the call's one event loop reads
and writes them like any other socket.

A lab belongs to one call (built in the call's ``connect``, removed in its
``close``), or is shared by every call of a scenario (``network.shared``:
the runner builds it once, each call only places its sides in it). Calls
sharing a lab share its addresses: each side binds its own ports, so every
call is its own set of flows through the one NAT and its one state table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field

from agent.net.filters import Direction as SideDirection
from agent.net.lab import ConntrackEntry, Direction, Lab, Role, socket_in
from agent.net.lab import faults as lab_faults
from agent.net.lab.lab import KernelFault
from agent.net.lab.rules import NAT_TABLE
from agent.net.nat import Refresh
from agent.observe.model import Side
from agent.stack.icenet import Address, SideNet, SocketFactory

__all__ = ["CallLab"]

logger = logging.getLogger(__name__)


@dataclass
class CallLab:
    """One call's place in a :class:`~agent.net.lab.Lab`."""

    lab: Lab
    #: the side in the ``inside`` namespace (behind the NAT, if any)
    inside: Side
    #: this call builds the lab and removes it (False: a shared lab)
    owned: bool = True
    #: calls placed in this lab (the report's ``shared_by``)
    shared_by: int = 1
    #: the kernel faults this call applied (a shared lab has everyone's)
    applied: list[KernelFault] = field(default_factory=list)
    #: a side's new address after it moved (its next sockets bind there)
    moved: dict[Side, str] = field(default_factory=dict)
    _undo: set[asyncio.Task[None]] = field(default_factory=set)

    # -- placement -----------------------------------------------------------
    def role(self, side: Side) -> Role:
        return Role.INSIDE if side == self.inside else Role.OUTSIDE

    def address(self, side: Side) -> str:
        if side in self.moved:
            return self.moved[side]
        topo = self.lab.topology
        return topo.inside_ip if side == self.inside else topo.outside_ip

    def link(self, side: Side) -> str:
        """The side's own link: the one its packets cross first."""
        return "lan" if side == self.inside else "wan"

    def far_link(self, side: Side) -> str:
        """The link past the router, seen from ``side``."""
        return "wan" if side == self.inside else "lan"

    def direction(self, side: Side, direction: SideDirection) -> Direction:
        """A direction seen from ``side`` as the lab says it (INBOUND is
        toward the inside namespace)."""
        if direction is SideDirection.BOTH:
            return Direction.BOTH
        toward_side = direction is SideDirection.INBOUND
        if side == self.inside:
            return Direction.INBOUND if toward_side else Direction.OUTBOUND
        return Direction.OUTBOUND if toward_side else Direction.INBOUND

    def socket_factory(self, side: Side) -> SocketFactory:
        namespace = self.lab.namespace(self.role(side))

        def open_socket(address: str) -> socket.socket:
            # After a move the side gathers on its new address (a host
            # gathers on the addresses it has now, not those it started with).
            address = self.moved.get(side, address)
            return socket_in(namespace, socket.SOCK_DGRAM, (address, 0))

        return open_socket

    def place(self, sides: dict[Side, SideNet]) -> None:
        for side, net in sides.items():
            net.socket_factory = self.socket_factory(side)

    @staticmethod
    def ports(net: SideNet) -> list[int]:
        return sorted({tap.local[1] for tap in net.live_taps()})

    def stun_socket(self) -> socket.socket:
        """A socket for the STUN server, in the outside namespace (beyond the
        NAT), on the outside address."""
        return self.lab.socket(Role.OUTSIDE)

    # -- lifecycle -----------------------------------------------------------
    async def build(self) -> None:
        if self.owned and not self.lab.is_up:
            await self.lab.build()

    def record(self, fault: KernelFault) -> KernelFault:
        self.applied.append(fault)
        return fault

    def undo_later(self, fault: KernelFault) -> None:
        """Undo a kernel fault still in force (from a sync fault end)."""
        if not fault.active:
            return

        async def undo() -> None:
            try:
                await lab_faults.clear(self.lab, fault)
            except Exception as exc:  # logged: the call's end must not fail on it
                logger.warning("lab: undoing %s failed: %s", fault.kind, exc)

        task = asyncio.get_running_loop().create_task(undo())
        self._undo.add(task)
        task.add_done_callback(self._undo.discard)

    async def close(self) -> None:
        """Finish the undos under way, then remove the lab if it is ours."""
        if self._undo:
            await asyncio.gather(*list(self._undo), return_exceptions=True)
        if self.owned:
            await self.lab.teardown()

    def mapping_of(
        self, entries: list[ConntrackEntry], ports: list[int]
    ) -> list[Address]:
        """Public endpoints the NAT now maps ``ports`` of the inside side to."""
        inside_ip = self.lab.topology.inside_ip
        found: list[Address] = []
        for entry in entries:
            if entry.original_src[0] == inside_ip and entry.original_src[1] in ports:
                found.append(entry.reply_dst)
        return found

    def placement(self) -> dict[str, str]:
        """Agent side -> namespace role, for the report."""
        return {
            str(side): self.role(side).name.lower()
            for side in (Side.CALLER, Side.CALLEE)
        }

    async def open_mappings(self, ports: list[int]) -> dict[int, float]:
        """The inside side's public ports (of its sockets ``ports``) still
        open to inbound, with the seconds each has left (0 when the kernel
        does not say). Outbound-only refresh (REQ-6): the NAT's
        ``alive`` set decides; otherwise the conntrack entry itself."""
        lab = self.lab
        entries = await lab_faults.conntrack_entries(lab)
        public = {port for _, port in self.mapping_of(entries, ports)}
        if lab.behavior.refresh is not Refresh.OUTBOUND:
            return {
                e.reply_dst[1]: float(e.timeout_s)
                for e in entries
                if e.reply_dst[1] in public
            }
        out = await lab.run_in(
            Role.NAT, ["nft", "-j", "list", "set", "ip", NAT_TABLE, "alive"]
        )
        alive: dict[int, float] = {}
        for item in json.loads(out).get("nftables", []):
            for element in item.get("set", {}).get("elem", []):
                value = (
                    element.get("elem", element)
                    if isinstance(element, dict)
                    else element
                )
                if isinstance(value, dict):
                    port, left = value.get("val"), value.get("expires", 0)
                else:
                    port, left = value, 0
                if isinstance(port, int) and port in public:
                    alive[port] = float(left)
        return alive
