"""The media path of an ICE connection: SRTP in and out without aioice's
per-packet machinery.

aioice hands every received datagram to its STUN parser (an exception per
media packet), then to an ``asyncio.Queue`` that a task drains into another
queue (the mux) that the DTLS transport's task drains: two task wake-ups and
two queue operations per packet, and the kernel receive time lost on the way.
Sending is three nested coroutines for one ``sendto``. :class:`IceMediaPath`
gives :class:`~agent.stack.ice.AgentIceConnection` a direct path for (S)RTP,
RFC 7983 §7's first byte 128..191: :meth:`~IceMediaPath.media_received` hands
the datagram and its arrival time straight to the attached sink (the DTLS-SRTP
transport, through :class:`~agent.stack.icemux.IceMux`), and
:meth:`~IceMediaPath.send_media` sends on the selected pair at once. The
liveness stamp and the side's network (filters, routes:
:mod:`agent.stack.icenet`) still see every datagram; DTLS and STUN keep
aioice's path, and with it the wire tap (which watches the DTLS records: SRTP
is the RTP receiver's to count).

Media that arrives before the mux attaches the generation (an ICE restart the
far end finished first) is held, bounded, and handed on with its original
arrival times on attach, as aioice's queue held it before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.stack.icenet import Address, SocketTap

#: takes one (S)RTP datagram and its arrival (``time.monotonic`` seconds, the
#: kernel's receive time when known)
MediaSink = Callable[[bytes, float], None]

#: media held while no sink is attached
MAX_HELD_MEDIA = 512


class IceMediaPath:
    """Mixed into :class:`~agent.stack.ice.AgentIceConnection` (see module)."""

    _nominated: dict[int, Any]
    _received_on: dict[tuple[int, Address], float]
    ice_controlling: bool

    def note_received(
        self, protocol: Any, addr: Address, data: bytes, at: float
    ) -> None: ...

    last_received: float | None

    def init_media_path(self, enabled: bool) -> None:
        #: False: a bare ICE connection (no DTLS-SRTP above it) whose every
        #: datagram takes aioice's ordinary path to ``recv``
        self._media_path = enabled
        #: where SRTP goes (the DTLS-SRTP transport, via the mux), if attached
        self._media_sink: MediaSink | None = None
        self._held_media: list[tuple[bytes, float]] = []
        #: each socket's tap, by the aioice protocol that owns the socket
        self._media_taps: dict[Any, SocketTap] = {}

    def add_media_tap(self, protocol: Any, tap: SocketTap) -> None:
        """Send media on ``protocol``'s socket through ``tap`` directly."""
        self._media_taps[protocol] = tap

    def set_media_sink(self, sink: MediaSink | None) -> None:
        """Hand SRTP to ``sink`` from now on (None: hold it, bounded), first
        what arrived before, in order, with its arrival times."""
        self._media_sink = sink
        if sink is not None:
            held, self._held_media = self._held_media, []
            for data, at in held:
                sink(data, at)

    def media_received(
        self, protocol: Any, addr: Address, data: bytes, at: float
    ) -> bool:
        """One (S)RTP datagram from ``addr`` on ``protocol``'s socket, arrived
        at ``at``; False when this connection has no media path (aioice's path
        takes it). Noted as received, as ``note_received`` does, with the
        check of the selected pair inline: this runs for every packet."""
        if not self._media_path:
            return False
        self._received_on[(protocol.id, addr)] = at
        if not self.ice_controlling:
            chosen = self._nominated.get(1)
            if (
                not chosen
                or chosen.protocol is not protocol
                or chosen.remote_addr != addr
            ):
                self.note_received(protocol, addr, data, at)  # a far end moved?
        # The kernel's arrival time, on the loop's (monotonic) clock.
        self.last_received = at
        sink = self._media_sink
        if sink is not None:
            sink(data, at)
        elif len(self._held_media) < MAX_HELD_MEDIA:
            self._held_media.append((data, at))
        return True

    def send_media(self, data: bytes) -> None:
        """Send an SRTP datagram on the selected pair now (aioice's ``sendto``
        without its coroutines); ``ConnectionError`` when there is none."""
        pair = self._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        tap = self._media_taps.get(pair.protocol)
        if tap is None:
            pair.protocol.transport.sendto(data, pair.remote_addr)
        else:
            tap.send_media(data, pair.remote_addr)
