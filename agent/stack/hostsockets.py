"""Host candidates on sockets a :class:`~agent.stack.icenet.SideNet`'s
``socket_factory`` opens (a kernel lab namespace, see ``agent/net/lab``).

aioice binds its host sockets itself, in this process's own network
namespace, where a lab address (198.18.x.y) does not exist. A side placed in
a lab instead gets sockets opened inside its namespace; the event loop then
reads and writes them like any other, and everything after the bind (taps,
srflx, checks) is the normal path.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aioice import Candidate
from aioice.ice import StunProtocol

__all__ = ["host_candidates", "host_foundation", "host_priority"]


def host_priority(component: int) -> int:
    """RFC 8445 §5.1.2.1: type preference 126 (host), local preference
    65535 (one address per side), then the component."""
    return (126 << 24) | (65535 << 8) | (256 - component)


def host_foundation(address: str) -> str:
    """RFC 8445 §5.1.1.3: equal for candidates of one type, base and
    transport; any string of ice-chars up to 32."""
    return hashlib.sha256(f"host|udp|{address}".encode()).hexdigest()[:32]


async def host_candidates(connection: Any, component: int) -> list[Candidate]:
    """One host candidate per address of ``connection`` (an
    ``AgentIceConnection``), on sockets from its side's factory."""
    factory = connection.net.socket_factory
    assert factory is not None
    loop = asyncio.get_running_loop()
    found: list[Candidate] = []
    for address in connection.host_addresses:
        # Off the loop: a lab factory starts and joins a setns thread, which
        # under load takes long enough to stall every call's media.
        sock = await asyncio.to_thread(factory, address)
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(connection), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=host_foundation(host),
            component=component,
            transport="udp",
            priority=host_priority(component),
            host=host,
            port=port,
            type="host",
        )
        connection._protocols.append(protocol)
        found.append(protocol.local_candidate)
    return found
