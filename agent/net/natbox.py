"""The user-space NAT on loopback, and the STUN server that sits outside it.

:class:`UserSpaceNat` is a :class:`~agent.stack.ice.SocketRoute` for the side
behind it: every datagram that side's ICE sockets send goes through the
:class:`~agent.net.nat.NatTable` (the RFC 4787 behaviour, pure data) and leaves
from one of the NAT's own UDP sockets on its public address — one real socket
per public port. What arrives at a public port is filtered by the table and
handed to the inside socket the mapping names, with the far end's source
address intact (a NAT rewrites the destination, not the source). The inside
sockets' own addresses receive nothing from outside: a private address is not
reachable. So the far end only ever sees the NAT's address.

A timer expires idle mappings (the mapping timeout happening by itself when
keepalives are too slow) and reports each, so the call layer can put it on the
timeline. :class:`StunResponder` answers Binding requests with the source
address it saw (RFC 8489 §7.3.1 XOR-MAPPED-ADDRESS): the inside learns its
server-reflexive candidate from it, through the NAT.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from aioice import stun

from agent.net.nat import NatBehavior, NatMapping, NatTable
from agent.net.routes import UdpEndpoint
from agent.stack.ice import Address, SideNet, SocketTap

__all__ = ["NatEvent", "StunResponder", "UserSpaceNat"]

logger = logging.getLogger(__name__)

#: Attempts to get a public port that was not just retired (a rebind must move).
_PORT_ATTEMPTS = 8

NatEvent = Callable[[str, NatMapping], None]


class UserSpaceNat:
    """A NAT in front of one side's sockets; see the module docstring."""

    def __init__(
        self,
        behavior: NatBehavior,
        public_ip: str,
        inside: SideNet,
        on_event: NatEvent | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.inside = inside
        self.table = NatTable(behavior, public_ip, self._allocate, self._release)
        self._endpoints: dict[int, UdpEndpoint] = {}
        self._retired: set[int] = set()
        self._on_event = on_event or (lambda kind, mapping: None)
        #: inbound datagrams refused: no mapping (port closed) or filtered
        self.dropped_inbound = 0
        self.closed = False
        tick = min(0.1, behavior.lifetime_s / 10)
        self._timer = self._loop.create_task(self._expire_every(tick))

    @property
    def public_ip(self) -> str:
        return self.table.public_ip

    # -- SocketRoute ----------------------------------------------------
    def send(self, tap: SocketTap, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        mapping = self.table.outbound(tap.local, addr, self._loop.time())
        if mapping.packets_out == 1:
            logger.info("NAT: new mapping %s -> %s", mapping.internal, mapping.public)
            self._on_event("mapping", mapping)
        endpoint = self._endpoints.get(mapping.public[1])
        if endpoint is not None:
            endpoint.sendto(data, addr)

    def direct_inbound(self, tap: SocketTap) -> bool:
        return False  # the inside's private address is not reachable

    # -- the public side --------------------------------------------------
    def _inbound(
        self, endpoint: UdpEndpoint, data: bytes, remote: Address, at: float
    ) -> None:
        mapping = self.table.inbound(endpoint.address, remote, self._loop.time())
        if mapping is None:
            self.dropped_inbound += 1
            return
        tap = self.inside.tap_at(mapping.internal)
        if tap is not None:
            tap.deliver(data, remote, at)

    def _allocate(self, preferred: int | None) -> int:
        if preferred is not None and preferred not in self._endpoints:
            try:
                return self._open(preferred)
            except OSError:
                pass  # taken meanwhile: any port will do
        # Hold the rejected sockets while asking again, so the kernel cannot
        # hand the same retired port back.
        rejected: list[int] = []
        try:
            for _ in range(_PORT_ATTEMPTS):
                port = self._open(0)
                if port not in self._retired:
                    return port
                rejected.append(port)
            return self._open(0)
        finally:
            for port in rejected:
                self._close_port(port)

    def _open(self, port: int) -> int:
        endpoint = UdpEndpoint(self.public_ip, self._inbound, port=port)
        self._endpoints[endpoint.address[1]] = endpoint
        return endpoint.address[1]

    def _release(self, port: int) -> None:
        self._retired.add(port)
        self._close_port(port)

    def _close_port(self, port: int) -> None:
        endpoint = self._endpoints.pop(port, None)
        if endpoint is not None:
            endpoint.close()

    async def _expire_every(self, tick: float) -> None:
        while not self.closed:
            await asyncio.sleep(tick)
            for mapping in self.table.expire(self._loop.time()):
                logger.info("NAT: mapping %s timed out", mapping.public)
                self._on_event("timeout", mapping)

    # -- faults -----------------------------------------------------------
    def rebind(self) -> list[NatMapping]:
        """Lose every mapping; the next packets leave from new public ports."""
        return self.table.drop()

    def flush(self) -> list[NatMapping]:
        """Forget all state (firewall eviction); ports come back if free."""
        return self.table.flush()

    def close(self) -> None:
        self.closed = True
        self._timer.cancel()
        for port in list(self._endpoints):
            self._close_port(port)


class StunResponder:
    """A STUN server on loopback that answers Binding requests (RFC 8489)."""

    def __init__(
        self, address: str, port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        self._endpoint = UdpEndpoint(address, self._datagram, port=port, sock=sock)
        self.address: Address = self._endpoint.address
        self.answered = 0

    def _datagram(
        self, endpoint: UdpEndpoint, data: bytes, remote: Address, at: float
    ) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if (
            request.message_method != stun.Method.BINDING
            or request.message_class != stun.Class.REQUEST
        ):
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = remote
        endpoint.sendto(bytes(response), remote)
        self.answered += 1

    def close(self) -> None:
        self._endpoint.close()
