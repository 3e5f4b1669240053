"""ICE on top of aioice 0.13, with what a test agent needs and aioice lacks.

aioice's ``Connection`` gathers host candidates from every interface *except*
127.0.0.1 and offers no way to see the wire or the selected pair. For a test
agent both are wrong: calls must run on addresses we choose on purpose (loopback
by default; nothing here may depend on the machine's other interfaces), and the
observer must see every datagram (the DTLS wire tap) and every change of the
selected pair (``selected_pair_changes``).

:class:`AgentIceConnection` subclasses ``aioice.Connection``:

* ``gather_candidates`` binds exactly the given host addresses (RFC 8445 §5.1.1.1
  host candidates; no STUN/TURN unless configured).
* ``sendto``/``data_received`` pass every non-STUN datagram to a tap callback
  before the normal path (the wire tap of DESIGN.md).
* ``check_complete`` reports a change of the nominated pair.
* ``query_consent`` is replaced by RFC 7675 consent freshness with a configurable
  interval that *reports* expiry (aioice silently closes the connection after
  ~30 s, which aiortc then shows as ``closed``, not ``failed``), and every
  datagram received stamps ``last_received`` for ``disconnected`` detection.

ICE restarts (RFC 8445 §9) are generations: each generation is a fresh
:class:`AgentIceConnection` — new ufrag/pwd, new sockets, its own checks and
consent — so the credentials of each generation are validated by its own agent,
correctly by construction. :class:`IceMux` stands where aiortc's DTLS transport
expects its ICE transport: it receives from every live generation and sends on the
newest generation that has a selected pair. Media therefore keeps flowing on the
old generation until the new one is selected (make-before-break), and the DTLS
association rides across the restart untouched, as in browsers.

Private aioice names used here are listed in :mod:`agent.stack.pins` and pinned by
a test, so an upgrade fails loudly in one place.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aioice
from aioice import stun
from aioice.ice import CandidatePair
from aiortc import RTCIceGatherer

logger = logging.getLogger(__name__)


class WireDirection(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


@dataclass(frozen=True)
class SelectedPair:
    """The pair media flows on: local and remote transport addresses."""

    local: tuple[str, int]
    remote: tuple[str, int]
    local_type: str
    remote_type: str

    def describe(self) -> str:
        return (
            f"{self.local[0]}:{self.local[1]} ({self.local_type}) -> "
            f"{self.remote[0]}:{self.remote[1]} ({self.remote_type})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "local": f"{self.local[0]}:{self.local[1]}",
            "remote": f"{self.remote[0]}:{self.remote[1]}",
            "local_type": self.local_type,
            "remote_type": self.remote_type,
        }


WireTap = Callable[[WireDirection, bytes], None]


class DatagramFilter(Protocol):
    """An impairment on this agent's own sockets (``agent/net`` builds them).

    ``admit`` sees every datagram — STUN included — in each direction, with the
    far end's address, and says whether it passes. Filters compose in order.
    """

    def admit(
        self, direction: WireDirection, data: bytes, addr: tuple[str, int]
    ) -> bool: ...


PairListener = Callable[[SelectedPair], None]

#: RFC 7675 §5.1: consent expires 30 s after the last authenticated response.
CONSENT_EXPIRY_S = 30.0
#: RFC 7675 §5.1: checks every 5 s on average, randomised 0.8..1.2.
CONSENT_INTERVAL_S = 5.0


def _describe_pair(pair: CandidatePair) -> SelectedPair:
    return SelectedPair(
        local=pair.local_addr,
        remote=pair.remote_addr,
        local_type=pair.local_candidate.type,
        remote_type=pair.remote_candidate.type,
    )


class AgentIceConnection(aioice.Connection):
    """An aioice connection bound to chosen host addresses, with taps."""

    def __init__(
        self,
        *,
        host_addresses: list[str],
        consent_interval_s: float = CONSENT_INTERVAL_S,
        consent_expiry_s: float = CONSENT_EXPIRY_S,
        rng: random.Random | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("use_ipv6", False)
        super().__init__(**kwargs)
        self.host_addresses = list(host_addresses)
        self.wire_tap: WireTap | None = None
        self.pair_listener: PairListener | None = None
        self._last_selected: SelectedPair | None = None
        self.consent_interval_s = consent_interval_s
        self.consent_expiry_s = consent_expiry_s
        self._rng = rng or random.Random()
        #: loop time of the last datagram (STUN or data) from the far end
        self.last_received: float | None = None
        #: set once consent has expired (RFC 7675 §5.1)
        self.consent_expired = asyncio.Event()
        self.consent_failures = 0
        #: impairments applied to every socket of this connection, in order
        self.filters: list[DatagramFilter] = []

    @property
    def tie_breaker(self) -> int:
        return int(self._tie_breaker)

    @tie_breaker.setter
    def tie_breaker(self, value: int) -> None:
        # Keep one tie-breaker across generations, so a role conflict after a
        # restart resolves the same way as before it (RFC 8445 §7.3.1.1).
        self._tie_breaker = value

    def _stamp(self) -> None:
        self.last_received = asyncio.get_running_loop().time()

    # -- gathering -------------------------------------------------------
    async def gather_candidates(self) -> None:
        """Gather host candidates on the chosen addresses only."""
        if self._local_candidates_start:
            return
        self._local_candidates_start = True
        for component in sorted(self._components):
            self._local_candidates += await self.get_component_candidates(
                component=component, addresses=self.host_addresses
            )
        for protocol in self._protocols:
            self._filter_socket(protocol)
        self._local_candidates_end = True

    def _admit(self, direction: WireDirection, data: bytes, addr: Any) -> bool:
        return all(f.admit(direction, data, (addr[0], addr[1])) for f in self.filters)

    def _filter_socket(self, protocol: Any) -> None:
        """Route one socket's traffic, both ways, through :attr:`filters`."""
        receive = protocol.datagram_received
        transport = protocol.transport
        send = transport.sendto

        def datagram_received(data: bytes, addr: Any) -> None:
            if not self.filters or self._admit(WireDirection.INBOUND, data, addr):
                receive(data, addr)

        def sendto(data: bytes, addr: Any = None) -> None:
            if not self.filters or self._admit(WireDirection.OUTBOUND, data, addr):
                send(data, addr)

        protocol.datagram_received = datagram_received
        transport.sendto = sendto

    # -- wire tap --------------------------------------------------------
    async def sendto(self, data: bytes, component: int) -> None:
        if self.wire_tap is not None:
            self.wire_tap(WireDirection.OUTBOUND, data)
        await super().sendto(data, component)

    def data_received(self, data: bytes, component: int) -> None:
        self._stamp()
        if self.wire_tap is not None:
            self.wire_tap(WireDirection.INBOUND, data)
        super().data_received(data, component)

    def request_received(self, message: stun.Message, addr: Any, protocol: Any) -> None:
        # A far end's check or consent request is a sign of life too.
        self._stamp()
        super().request_received(message, addr, protocol)

    # -- consent freshness (RFC 7675) ------------------------------------
    async def query_consent(self) -> None:
        """Consent checks on the selected pair; expiry is reported, not a close."""
        assert self.remote_password is not None
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            # RFC 7675 §5.1: randomise the interval to 0.8..1.2 of its value.
            await asyncio.sleep(
                self.consent_interval_s * (0.8 + 0.4 * self._rng.random())
            )
            for pair in list(self._nominated.values()):
                request = self.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=self.remote_password.encode("utf8"),
                        retransmissions=0,
                    )
                except stun.TransactionError:
                    self.consent_failures += 1
                else:
                    last_ok = loop.time()
                    self._stamp()
            if loop.time() - last_ok >= self.consent_expiry_s:
                logger.info("%s: consent expired", self)
                self.consent_expired.set()
                return

    # -- selected pair ---------------------------------------------------
    def check_complete(self, pair: CandidatePair) -> None:
        super().check_complete(pair)
        self._notify_selected()

    def _notify_selected(self) -> None:
        pair = self._nominated.get(1)
        if pair is None:
            return
        selected = _describe_pair(pair)
        if selected != self._last_selected:
            self._last_selected = selected
            if self.pair_listener is not None:
                self.pair_listener(selected)

    @property
    def selected_pair(self) -> SelectedPair | None:
        pair = self._nominated.get(1)
        return None if pair is None else _describe_pair(pair)


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

    @property
    def role(self) -> str:
        if self._sending is not None and self._sending.ice_controlling:
            return "controlling"
        return "controlled"

    @property
    def sending(self) -> AgentIceConnection | None:
        return self._sending

    def attach(self, connection: AgentIceConnection) -> None:
        """Receive from ``connection`` (call once it has a selected pair)."""
        if connection not in self._pumps and not self._closed:
            self._pumps[connection] = asyncio.create_task(self._pump(connection))

    def use(self, connection: AgentIceConnection) -> None:
        """Send on ``connection`` from now on."""
        self.attach(connection)
        self._sending = connection

    def detach(self, connection: AgentIceConnection) -> None:
        task = self._pumps.pop(connection, None)
        if task is not None:
            task.cancel()

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

    def close(self) -> None:
        self._closed = True
        for task in self._pumps.values():
            task.cancel()
        self._pumps.clear()
        self._queue.put_nowait(None)


class AgentIceGatherer(RTCIceGatherer):
    """An ``RTCIceGatherer`` whose connection is an :class:`AgentIceConnection`.

    ``iceServers`` is always explicit: aiortc's default is a public STUN server,
    which this agent must never contact by accident.
    """

    def __init__(
        self,
        *,
        host_addresses: list[str],
        consent_interval_s: float = CONSENT_INTERVAL_S,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(iceServers=[])
        self.connection = AgentIceConnection(
            host_addresses=host_addresses,
            ice_controlling=False,
            consent_interval_s=consent_interval_s,
            rng=rng,
        )
        # RTCIceTransport takes the gatherer's connection for send/recv.
        self._connection = self.connection
