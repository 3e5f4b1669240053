"""The ICE transport aiortc's DTLS layer sees, across ICE generations.

Every live generation's :class:`~agent.stack.ice.AgentIceConnection` is pumped
into one queue (DTLS; SRTP goes straight to :attr:`IceMux.on_media`, with its
kernel arrival time, from every attached generation); sends go to the
generation chosen by :meth:`IceMux.use`, the newest one with a selected pair
(make-before-break, RFC 8445 §9 restarts as generations; see
:mod:`agent.stack.ice`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.stack.ice import AgentIceConnection


class IceMux:
    """What aiortc's DTLS transport sees as its ICE transport, across generations.

    ``RTCDtlsTransport`` uses only ``role``, ``_recv()`` and ``_send()`` of its ICE
    transport. Every live generation's connection is pumped into one queue;
    sends go to the generation chosen by :meth:`use`.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._sending: AgentIceConnection | None = None
        self._pumps: dict[AgentIceConnection, asyncio.Task[None]] = {}
        self._closed = False
        #: the DTLS-SRTP transport's handler of (SRTP datagram, arrival)
        self._on_media: Callable[[bytes, float], None] | None = None

    @property
    def role(self) -> str:
        if self._sending is not None and self._sending.ice_controlling:
            return "controlling"
        return "controlled"

    @property
    def on_media(self) -> Callable[[bytes, float], None] | None:
        """Where SRTP goes, with its arrival time: each attached generation
        hands it there directly (no hop through the mux per packet)."""
        return self._on_media

    @on_media.setter
    def on_media(self, sink: Callable[[bytes, float], None] | None) -> None:
        self._on_media = sink
        for connection in self._pumps:
            connection.set_media_sink(sink or self._media)

    @property
    def sending(self) -> AgentIceConnection | None:
        return self._sending

    def attach(self, connection: AgentIceConnection) -> None:
        """Receive from ``connection`` (call once it has a selected pair)."""
        if connection not in self._pumps and not self._closed:
            self._pumps[connection] = asyncio.create_task(self._pump(connection))
            connection.set_media_sink(self._on_media or self._media)

    def use(self, connection: AgentIceConnection) -> None:
        """Send on ``connection`` from now on."""
        self.attach(connection)
        self._sending = connection

    def detach(self, connection: AgentIceConnection) -> None:
        task = self._pumps.pop(connection, None)
        if task is not None:
            task.cancel()
            connection.set_media_sink(None)

    def _media(self, data: bytes, at: float) -> None:
        pass  # no one takes SRTP yet: dropped, as before DTLS is up

    async def _pump(self, connection: AgentIceConnection) -> None:
        try:
            while True:
                self._queue.put_nowait(await connection.recv())
        except ConnectionError:
            # This generation is gone; the transport lives while another does.
            if connection is self._sending:
                self._queue.put_nowait(None)

    async def _recv(self) -> bytes:
        data = await self._queue.get()
        if data is None:
            raise ConnectionError("ICE transport closed")
        return data

    async def _send(self, data: bytes) -> None:
        if self._sending is None:
            raise ConnectionError("no ICE generation connected")
        await self._sending.send(data)

    def send_media(self, data: bytes) -> None:
        """Send SRTP now on the sending generation (no coroutine)."""
        if self._sending is None:
            raise ConnectionError("no ICE generation connected")
        self._sending.send_media(data)

    def close(self) -> None:
        self._closed = True
        for connection, task in self._pumps.items():
            task.cancel()
            connection.set_media_sink(None)
        self._pumps.clear()
        self._queue.put_nowait(None)
