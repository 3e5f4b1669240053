"""Routes: where a side's datagrams really leave from once the network changed.

A :class:`~agent.stack.ice.SocketRoute` takes over a side's sockets (every ICE
generation's) without the ICE agent knowing, which is exactly the situation of
a host whose network moved under it:

* :class:`Rebind` — traffic continues from a new source *port* on the same
  address and the old port stops receiving: what a NAT rebinding looks like to
  the far end (RFC 4787 §4.3).
* :class:`AddressChange` — traffic moves to another local address and the old
  address is dead: a VPN reconnect that hands out a new tunnel address.
* :class:`PathChange` — traffic leaves from another local address while the old
  one stays alive: a route change (Wi-Fi to wired, a multi-homed host).

The far end sees checks and media from an address it never got in SDP: a
peer-reflexive candidate (RFC 8445 §7.3.1.3) and a triggered check back
(§7.3.1.4). Whether media follows is the far end's ICE agent's business.

Each route owns one real UDP socket per ICE socket it carries, created
synchronously (sending is synchronous in asyncio's datagram API) and read with
``loop.add_reader``. :class:`UdpEndpoint` is that socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from agent.stack.ice import Address, SocketTap
from agent.stack.icenet import SO_TIMESTAMPNS, TIMESPEC_SPACE, kernel_time

__all__ = ["AddressChange", "PathChange", "Rebind", "RelayRoute", "UdpEndpoint"]

logger = logging.getLogger(__name__)

#: Largest datagram read from a socket (UDP's own limit).
MAX_DATAGRAM = 65535
#: Datagrams read per readiness callback, so one busy socket cannot starve the loop.
READ_BURST = 64


class UdpEndpoint:
    """A non-blocking UDP socket bound now, read by the event loop."""

    def __init__(
        self,
        address: str,
        on_datagram: Callable[[UdpEndpoint, bytes, Address, float], None],
        *,
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        if sock is not None:
            # Already bound (a kernel lab opens it inside a namespace).
            self._sock = sock
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self._sock.setblocking(False)
                self._sock.bind((address, port))
            except OSError:
                self._sock.close()
                raise
        # Kernel receive times (see agent.stack.icenet): what a route hands to
        # an ICE socket arrived when the kernel says, not when a busy event
        # loop got round to it.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        host, bound_port = self._sock.getsockname()[:2]
        self.address: Address = (host, bound_port)
        self._on_datagram = on_datagram
        self.closed = False
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # a full socket buffer drops, as the kernel would
        except OSError as exc:
            logger.debug("%s: send to %s failed: %s", self.address, addr, exc)

    def _readable(self) -> None:
        for _ in range(READ_BURST):
            if self.closed:
                return
            try:
                data, ancillary, _flags, addr = self._sock.recvmsg(
                    MAX_DATAGRAM, TIMESPEC_SPACE
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable surfaces here on Linux
                logger.debug("%s: receive failed: %s", self.address, exc)
                continue
            at = kernel_time(ancillary)
            self._on_datagram(
                self, data, (addr[0], addr[1]), time.monotonic() if at is None else at
            )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class RelayRoute:
    """Sends each ICE socket's traffic from its own new UDP socket on
    ``address``; what that socket receives goes back to the ICE socket."""

    #: whether datagrams to the ICE socket's own address still arrive
    old_address_alive = False

    def __init__(self, address: str | None = None) -> None:
        #: None: the ICE socket's own address (a new port only)
        self.address = address
        self._endpoints: dict[int, tuple[SocketTap, UdpEndpoint]] = {}
        self.closed = False

    def endpoint(self, tap: SocketTap) -> UdpEndpoint:
        entry = self._endpoints.get(id(tap))
        if entry is None or entry[0] is not tap:
            address = self.address or tap.local[0]
            # In a kernel lab the relay socket is opened in the side's own
            # namespace, like its ICE sockets (user space inside the lab).
            factory = tap.connection.net.socket_factory
            sock = None if factory is None else factory(address)
            endpoint = UdpEndpoint(address, self._inbound, sock=sock)
            entry = self._endpoints[id(tap)] = (tap, endpoint)
            logger.info("%s: %s now sends from %s", self, tap.local, endpoint.address)
        return entry[1]

    def _inbound(
        self, endpoint: UdpEndpoint, data: bytes, addr: Address, at: float
    ) -> None:
        for tap, owned in self._endpoints.values():
            if owned is endpoint:
                if tap.closed:
                    endpoint.close()
                else:
                    tap.deliver(data, addr, at)
                return

    def send(self, tap: SocketTap, data: bytes, addr: Address) -> None:
        if not self.closed:
            self.endpoint(tap).sendto(data, addr)

    def direct_inbound(self, tap: SocketTap) -> bool:
        return self.old_address_alive

    def new_addresses(self) -> list[Address]:
        return [endpoint.address for _, endpoint in self._endpoints.values()]

    def close(self) -> None:
        self.closed = True
        for _, endpoint in self._endpoints.values():
            endpoint.close()
        self._endpoints.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address or 'same address'})"


class Rebind(RelayRoute):
    """New source port on the same address; the old port is dead."""


class AddressChange(RelayRoute):
    """Another local address; the old address is dead (a VPN reconnect)."""


class PathChange(RelayRoute):
    """Another local address for sending; the old one still receives."""

    old_address_alive = True
