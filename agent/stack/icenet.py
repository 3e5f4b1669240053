"""A side's network as the ICE sockets see it: filters, routes, socket taps.

``agent/net`` builds impairments (:class:`DatagramFilter`) and routes
(:class:`SocketRoute`: a rebind, an address change, a NAT) and installs them on a
:class:`SideNet`; every socket an ICE generation binds is wrapped in a
:class:`SocketTap` that applies them to each datagram, both ways, before the ICE
agent (:class:`agent.stack.ice.AgentIceConnection`) sees it. Nothing here touches
aioice beyond the socket's own ``datagram_received``/``sendto``.
"""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class WireDirection(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


Address = tuple[str, int]

#: Opens the UDP socket of a host candidate on ``address`` (port 0, bound,
#: non-blocking). The kernel lab (``agent/net/lab``) opens it inside a
#: network namespace from a setns thread; the call's event loop then owns it.
SocketFactory = Callable[[str], socket.socket]


@dataclass(frozen=True)
class Delay:
    """A filter's verdict: the datagram passes, this many seconds late."""

    seconds: float


class DatagramFilter(Protocol):
    """An impairment on this agent's own sockets (``agent/net`` builds them).

    ``admit`` sees every datagram — STUN included — in each direction, with the
    far end's address, and says whether it passes: ``True``, ``False`` (dropped)
    or a :class:`Delay`. Filters compose in order; delays add up.
    """

    def admit(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> bool | Delay: ...


class SocketRoute(Protocol):
    """Where a side's datagrams really leave from and arrive at.

    Without a route a socket sends from, and receives on, its own address. A
    route (``agent/net``: a rebind, an address change, a path change, a NAT)
    takes over: :meth:`send` puts an outbound datagram on the wire its own way
    and hands what comes back to :meth:`SocketTap.deliver`; :meth:`direct_inbound`
    says whether datagrams reaching the socket's own address still count (a dead
    old port or an unreachable private address says no).
    """

    def send(self, tap: SocketTap, data: bytes, addr: Address) -> None: ...

    def direct_inbound(self, tap: SocketTap) -> bool: ...


class SideNet:
    """One side's network, shared by every ICE generation of that side.

    A fault applies to a *side*, not to one generation: a blackhole or a NAT
    must also catch the sockets an ICE restart opens. :class:`AgentIceConnection`
    registers each socket here (:attr:`taps`) and consults :attr:`filters` and
    :attr:`route` on every datagram, so changes apply at once to live sockets.
    ``stun_server`` is where a host learns its server-reflexive address (the NAT
    lab's responder). ``socket_factory`` (None: bind in this process's own
    namespace) opens each host socket, for a side placed in a kernel lab.
    """

    def __init__(self) -> None:
        self.filters: list[DatagramFilter] = []
        self.route: SocketRoute | None = None
        self.stun_server: Address | None = None
        self.taps: list[SocketTap] = []
        self.socket_factory: SocketFactory | None = None

    def live_taps(self) -> list[SocketTap]:
        self.taps = [t for t in self.taps if not t.closed]
        return list(self.taps)

    def tap_at(self, local: Address) -> SocketTap | None:
        """The live socket bound to ``local``, if any."""
        return next((t for t in self.live_taps() if t.local == local), None)


class TapOwner(Protocol):
    """The ICE agent behind a socket tap (an ``AgentIceConnection``)."""

    net: SideNet

    def verdict(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> float | None: ...

    def note_received(self, protocol: Any, addr: Address, data: bytes) -> None: ...


class SocketTap:
    """One ICE socket as ``agent/net`` sees it: its own address, its raw send,
    and the way into the ICE agent for what arrives (after the side's filters).
    """

    def __init__(self, connection: TapOwner, protocol: Any) -> None:
        self.connection = connection
        self._protocol = protocol
        self._receive = protocol.datagram_received
        self._transport = protocol.transport
        self._send = protocol.transport.sendto
        sockname = protocol.transport.get_extra_info("sockname")
        #: the address the socket is bound to (the host candidate)
        self.local: Address = (sockname[0], sockname[1])

    @property
    def closed(self) -> bool:
        return bool(self._transport.is_closing())

    def send_direct(self, data: bytes, addr: Address) -> None:
        """Send from the socket's own address, past every impairment."""
        if not self.closed:
            self._send(data, addr)

    def outbound(self, data: bytes, addr: Address) -> None:
        delay = self.connection.verdict(WireDirection.OUTBOUND, data, addr)
        if delay is None:
            return
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._route_out, data, addr)
        else:
            self._route_out(data, addr)

    def _route_out(self, data: bytes, addr: Address) -> None:
        route = self.connection.net.route
        if route is None:
            self.send_direct(data, addr)
        elif not self.closed:
            route.send(self, data, addr)

    def deliver(self, data: bytes, addr: Address) -> None:
        """A datagram from ``addr`` reached this host: impair it, then hand it
        to the ICE agent."""
        if self.closed:
            return
        delay = self.connection.verdict(WireDirection.INBOUND, data, addr)
        if delay is None:
            return
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._hand_in, data, addr)
        else:
            self._hand_in(data, addr)

    def _hand_in(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        self.connection.note_received(self._protocol, addr, data)
        self._receive(data, addr)
