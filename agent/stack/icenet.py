"""A side's network as the ICE sockets see it: filters, routes, socket taps.

``agent/net`` builds impairments (:class:`DatagramFilter`) and routes
(:class:`SocketRoute`: a rebind, an address change, a NAT) and installs them on a
:class:`SideNet`; every socket an ICE generation binds is wrapped in a
:class:`SocketTap` that applies them to each datagram, both ways, before the ICE
agent (:class:`agent.stack.ice.AgentIceConnection`) sees it. Nothing here touches
aioice beyond the socket's own ``datagram_received``/``sendto``/``connection_lost``.

Time from the kernel
--------------------
asyncio's datagram transport reads with ``recvfrom`` when the event loop gets
round to it, so a loop that stalls 300 ms hands 15 packets of 20 ms audio to
the receiver at the same instant: a 300 ms gap that the network never made.
:meth:`SocketTap.read_kernel_time` turns on ``SO_TIMESTAMPNS`` and reads the
socket itself with ``recvmsg`` (the kernel's receive time in the ancillary
data), so each datagram carries the time it reached the host. That time goes
along with the datagram: an (S)RTP datagram (first byte 128..191, RFC 7983)
takes the media path (:meth:`TapOwner.media_received`) past aioice's STUN
parser and queues, straight to SRTP and the RTP receiver, with its kernel time
as an argument (no per-packet lookup table). A datagram an inbound impairment
delays arrives when the emulated network delivers it: kernel time plus the
delay.

An SRTP packet sent to a socket that is already closed (a retired ICE
generation) raises ``ConnectionError`` up to the RTP sender, as "no pair"
does: it never reached the wire, so it is not counted as sent (nor lost).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class WireDirection(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


Address = tuple[str, int]

logger = logging.getLogger(__name__)

#: Linux ``SO_TIMESTAMPNS`` (== ``SCM_TIMESTAMPNS``); Python 3.11's socket
#: module does not export it (asm-generic/socket.h: 35).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
#: ancillary buffer for one ``recvmsg`` with ``SO_TIMESTAMPNS``
TIMESPEC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
#: datagrams read per readiness callback, so one busy socket cannot starve
#: the loop (asyncio's transport reads one)
_READS_PER_WAKEUP = 64
#: a datagram that waited less than this for the read was read on time: the
#: socket most likely holds no other, so the read that would say so (a failed
#: ``recvmsg`` and its exception, ~3.4 µs on the 2-core host, as dear as the
#: read itself) is left to the next readiness callback, which comes at once
#: if another is there (level-triggered); a reader behind reads on
_ON_TIME_S = 0.005


def rtp_key(data: bytes) -> tuple[int, int] | None:
    """(SSRC, sequence number) of an (S)RTP datagram, None for anything else.

    RFC 7983 §7: first byte 128..191 is RTP/RTCP; RFC 5761 §4: payload types
    64..95 (with the marker bit cleared) are RTCP.
    """
    if len(data) < 12 or not 128 <= data[0] <= 191 or 64 <= (data[1] & 0x7F) <= 95:
        return None
    return int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")


def kernel_time(
    ancillary: list[tuple[int, int, bytes]], offset: float | None = None
) -> float | None:
    """The ``SCM_TIMESTAMPNS`` of one ``recvmsg``, on ``time.monotonic``.

    The kernel stamps CLOCK_REALTIME; it is moved to the monotonic clock by
    the offset between the two (``offset``, else read now: a clock step
    between the datagram and the read is the only error, rare and small).
    """
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            if len(payload) < _TIMESPEC.size:
                return None
            sec, nsec = _TIMESPEC.unpack_from(payload)
            if offset is None:
                offset = time.time() - time.monotonic()
            return float(sec + nsec * 1e-9 - offset)
    return None


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


class FilteredTransport:
    """A datagram transport whose ``sendto`` goes through the side's network;
    everything else is the wrapped transport's (for loops, like uvloop, whose
    transports do not let ``sendto`` be replaced)."""

    def __init__(self, transport: Any, sendto: Callable[..., None]) -> None:
        self._wrapped = transport
        self.sendto = sendto

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


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
        #: arrival time (time.monotonic) of the last DTLS datagram: when a
        #: handshake completes, that of the flight that completed it
        self.last_dtls_arrival: float | None = None

    def dtls_arrival_ms(self, now_ms: float) -> float:
        """The last DTLS datagram's kernel arrival on a clock reading
        ``now_ms`` now (``now_ms`` when not known)."""
        at = self.last_dtls_arrival
        return now_ms if at is None else now_ms - max(0.0, time.monotonic() - at) * 1e3

    def live_taps(self) -> list[SocketTap]:
        self.taps = [t for t in self.taps if not t.closed]
        return list(self.taps)

    def tap_at(self, local: Address) -> SocketTap | None:
        """The live socket bound to ``local``, if any."""
        return next((t for t in self.live_taps() if t.local == local), None)


class TapOwner(Protocol):
    """The ICE agent behind a socket tap (an ``AgentIceConnection``)."""

    net: SideNet
    #: the connection's own impairments (the side's are ``net.filters``)
    filters: list[DatagramFilter]

    def verdict(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> float | None: ...

    def note_received(
        self, protocol: Any, addr: Address, data: bytes, at: float
    ) -> None: ...

    def media_received(
        self, protocol: Any, addr: Address, data: bytes, at: float
    ) -> bool:
        """An (S)RTP datagram from ``addr`` on ``protocol``'s socket that
        reached the host at ``at`` (monotonic s), noted as received too
        (:meth:`note_received`); False when the ICE agent's ordinary path must
        take it (and nothing was done)."""
        ...


class SocketTap:
    """One ICE socket as ``agent/net`` sees it: its own address, its raw send,
    and the way into the ICE agent for what arrives (after the side's filters).
    """

    def __init__(self, connection: TapOwner, protocol: Any) -> None:
        self.connection = connection
        self._protocol = protocol
        self._receive = protocol.datagram_received
        transport = protocol.transport
        #: the loop's own transport under any wrapper (uvloop, see ice.py)
        self._transport = getattr(transport, "_wrapped", transport)
        self._send = self._transport.sendto
        #: our own duplicate of the socket (kernel receive times), also the
        #: media path's direct send; None until :meth:`read_kernel_time`
        self._sock: socket.socket | None = None
        sockname = protocol.transport.get_extra_info("sockname")
        #: the C readiness callback reading the socket (its ``fast`` and
        #: ``ordinary`` counts), if any (:mod:`agent.stack.fastroute`)
        self.fast_reader: Any = None
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
        if self.closed:
            if rtp_key(data) is not None:
                # Tell the RTP sender: this packet never reached the wire.
                raise ConnectionError("socket closed")
            return
        connection = self.connection
        delay = connection.verdict(WireDirection.OUTBOUND, data, addr)
        if delay is None:
            return
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._route_out, data, addr)
        elif connection.net.route is None:
            self._send(data, addr)  # checked open above: the common case
        else:
            self._route_out(data, addr)

    def send_media(self, data: bytes, addr: Address) -> None:
        """:meth:`outbound` for an SRTP datagram, the media path's hot case
        (no impairment, no route, socket open) in one step: straight to the
        socket, as asyncio's transport does when its buffer is empty."""
        connection = self.connection
        sock = self._sock
        if (
            sock is None
            or connection.filters
            or connection.net.filters
            or connection.net.route is not None
            or self._transport.is_closing()
            or self._transport.get_write_buffer_size()
        ):
            self.outbound(data, addr)
            return
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._send(data, addr)  # the transport queues it
        except OSError as exc:
            # As asyncio's transport does: reported, not raised to the sender.
            self._protocol.error_received(exc)

    def _route_out(self, data: bytes, addr: Address) -> None:
        route = self.connection.net.route
        if route is None:
            self.send_direct(data, addr)
        elif not self.closed:
            route.send(self, data, addr)

    def deliver(
        self,
        data: bytes,
        addr: Address,
        at: float | None = None,
        from_socket: bool = False,
    ) -> None:
        """A datagram from ``addr`` reached this host at ``at`` (monotonic
        seconds; now if unknown): impair it, then hand it to the ICE agent.
        ``from_socket``: read from the socket itself, which the side's route
        may claim first (a NAT or a move hands it back here when it passes)."""
        connection = self.connection
        net = connection.net
        if from_socket and net.route is not None and not net.route.direct_inbound(self):
            return
        if self._transport.is_closing():
            return
        if at is None:
            at = time.monotonic()
        if connection.filters or net.filters:
            delay = connection.verdict(WireDirection.INBOUND, data, addr)
            if delay is None:
                return
            if delay > 0:
                asyncio.get_running_loop().call_later(
                    delay, self._hand_in, data, addr, at + delay
                )
                return
        self._take(data, addr, at)

    def _hand_in(self, data: bytes, addr: Address, at: float) -> None:
        if not self.closed:
            self._take(data, addr, at)

    def _take(self, data: bytes, addr: Address, at: float) -> None:
        connection = self.connection
        # RFC 7983 §7: 128..191 is RTP/RTCP. The media path skips aioice's
        # STUN parse and two queue hand-offs, and keeps the kernel time.
        if (
            data
            and 128 <= data[0] < 192
            and connection.media_received(self._protocol, addr, data, at)
        ):
            return
        connection.note_received(self._protocol, addr, data, at)
        if data and 19 < data[0] < 64:  # DTLS (RFC 7983 §7)
            connection.net.last_dtls_arrival = at
        self._receive(data, addr)

    def read_kernel_time(
        self,
        native_reader: Callable[[SocketTap, socket.socket], Callable[[], None] | None]
        | None = None,
    ) -> bool:
        """Read this socket with ``recvmsg`` and ``SO_TIMESTAMPNS`` instead of
        asyncio's ``recvfrom``, delivering each datagram with its kernel
        receive time. False (asyncio keeps reading) where the platform has no
        such timestamps. ``native_reader``: reads the socket the same way in
        C, if it can (``agent/stack/fastroute.py``), and returns how to stop."""
        raw = self._transport.get_extra_info("socket")
        if raw is None or not hasattr(self._transport, "pause_reading"):
            # uvloop's UDP transport cannot pause its own reads, and two
            # readers of one socket would split its datagrams between them.
            logger.info("no kernel receive timestamps on this event loop")
            return False
        try:
            # A dup of the fd (asyncio's TransportSocket has no recvmsg), read
            # by our own reader while the transport's is paused; closed with
            # the transport (connection_lost), so the port is freed.
            sock: socket.socket = raw.dup()
        except OSError as exc:
            logger.info("no kernel receive timestamps: %s", exc)
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
        except OSError as exc:
            logger.info("no kernel receive timestamps: %s", exc)
            sock.close()
            return False
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        deliver = self.deliver

        def readable() -> None:
            # One realtime-to-monotonic offset per wake-up (microseconds apart).
            woke = time.monotonic()
            offset = time.time() - woke
            for _ in range(_READS_PER_WAKEUP):
                try:
                    data, ancillary, _flags, addr = sock.recvmsg(65536, TIMESPEC_SPACE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    # As asyncio's transport does: an ICMP error on UDP.
                    self._protocol.error_received(exc)
                    return
                at = kernel_time(ancillary, offset)
                if at is None:
                    at = time.monotonic()  # after ``woke``: ends the wake-up
                deliver(data, (addr[0], addr[1]), at, True)
                if woke - at < _ON_TIME_S:
                    return

        lost = self._protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._sock = None
            stop()
            sock.close()
            lost(exc)

        self._transport.pause_reading()
        native = None if native_reader is None else native_reader(self, sock)
        if native is None:
            loop.add_reader(fd, readable)
        stop = native or (lambda: loop.remove_reader(fd))
        self._sock = sock
        self._protocol.connection_lost = connection_lost
        return True
