"""A NAT as RFC 4787 data: mapping, filtering, lifetime and refresh. No I/O.

Theory of operation
-------------------
RFC 4787 describes a UDP NAT by a few independent behaviours, so this module
models a NAT as those behaviours (:class:`NatBehavior`) applied by one table
(:class:`NatTable`), not as branching code per "cone type":

* **Mapping** (§4.1): which outbound packets share a public port. The mapping
  key is the internal endpoint plus nothing (endpoint-independent, EIM), the
  destination address (address-dependent, ADM), or the destination address and
  port (address-and-port-dependent, APDM — a "symmetric" NAT).
* **Filtering** (§5): which inbound packets a mapping lets in: from anyone
  (EIF), from addresses the inside has sent to (ADF), or from exact endpoints
  the inside has sent to (APDF).
* **Lifetime and refresh** (§4.3): a mapping idle for ``lifetime_s`` expires;
  outbound packets refresh it (REQ-6), inbound ones only if ``refresh`` is
  ``both``. An expired mapping's port is closed; the next outbound packet
  opens a new one — a new public port the far end has never seen.

Ports come from an allocator (the asyncio shell binds real sockets; tests use a
counter), so the table stays pure and table-driven tests can cover every
combination. ``drop`` (a NAT rebinding: mappings lost, new ports next time) and
``flush`` (firewall state eviction: state lost, ports preserved if free) are the
two ways state disappears besides the timer. The names follow pion's vnet in
spirit: ``mapping_behavior``, ``filtering_behavior``, ``mapping_lifetime``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "NAT_TYPES",
    "Behavior",
    "NatBehavior",
    "NatMapping",
    "NatTable",
    "NatType",
    "Refresh",
]

Address = tuple[str, int]


class Behavior(enum.StrEnum):
    """RFC 4787's three degrees, used for both mapping (§4.1) and filtering (§5)."""

    ENDPOINT_INDEPENDENT = "endpoint_independent"
    ADDRESS_DEPENDENT = "address_dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address_and_port_dependent"

    def key(self, remote: Address) -> tuple[str, int] | tuple[str] | tuple[()]:
        """The part of the remote endpoint this behaviour distinguishes."""
        if self is Behavior.ENDPOINT_INDEPENDENT:
            return ()
        if self is Behavior.ADDRESS_DEPENDENT:
            return (remote[0],)
        return remote


class Refresh(enum.StrEnum):
    """Which traffic keeps a mapping alive (RFC 4787 §4.3, REQ-6)."""

    OUTBOUND = "outbound"
    BOTH = "both"


@dataclass(frozen=True)
class NatBehavior:
    """What the table applies: the settings of
    :class:`~agent.net.network.NatConfig` (where the defaults live) with the
    ``type`` shorthand resolved. No defaults here, so there is one source."""

    mapping: Behavior
    filtering: Behavior
    #: idle time after which a UDP mapping expires (RFC 4787 REQ-5 asks >= 120 s;
    #: many home routers use 30 s, some carrier NATs less)
    lifetime_s: float
    refresh: Refresh


#: The classic names, as behaviour data (RFC 4787 §3 explains why "cone" is
#: too coarse; they are kept because field reports use them).
NatType = Literal["full_cone", "restricted_cone", "port_restricted_cone", "symmetric"]
NAT_TYPES: dict[NatType, tuple[Behavior, Behavior]] = {
    "full_cone": (Behavior.ENDPOINT_INDEPENDENT, Behavior.ENDPOINT_INDEPENDENT),
    "restricted_cone": (Behavior.ENDPOINT_INDEPENDENT, Behavior.ADDRESS_DEPENDENT),
    # What most home routers do, and what RFC 4787 recommends for mapping.
    "port_restricted_cone": (
        Behavior.ENDPOINT_INDEPENDENT,
        Behavior.ADDRESS_AND_PORT_DEPENDENT,
    ),
    "symmetric": (
        Behavior.ADDRESS_AND_PORT_DEPENDENT,
        Behavior.ADDRESS_AND_PORT_DEPENDENT,
    ),
}


@dataclass
class NatMapping:
    internal: Address
    public: Address
    #: the destination part that selected this mapping (see ``Behavior.key``)
    key: tuple[object, ...]
    last_refresh: float
    created: float
    #: filtering keys of the remotes the inside has sent to
    permissions: set[tuple[object, ...]] = field(default_factory=set)
    #: packets sent out through it (1 right after it was created)
    packets_out: int = 0

    @property
    def label(self) -> str:
        """``inside -> public`` as events show it."""
        inside, public = self.internal, self.public
        return f"{inside[0]}:{inside[1]} -> {public[0]}:{public[1]}"


class NatTable:
    """The NAT's state: mappings by internal endpoint and destination key."""

    def __init__(
        self,
        behavior: NatBehavior,
        public_ip: str,
        allocate_port: Callable[[int | None], int],
        release_port: Callable[[int], None] | None = None,
    ) -> None:
        """``allocate_port(preferred)`` returns a free public port (``preferred``
        if it can); ``release_port`` is told when a port closes."""
        self.behavior = behavior
        self.public_ip = public_ip
        self._allocate = allocate_port
        self._release = release_port or (lambda port: None)
        self._by_key: dict[tuple[Address, tuple[object, ...]], NatMapping] = {}
        self._by_public: dict[Address, NatMapping] = {}
        #: public port a flushed mapping had, reused if free (port preservation)
        self._remembered: dict[tuple[Address, tuple[object, ...]], int] = {}

    @property
    def mappings(self) -> list[NatMapping]:
        return list(self._by_key.values())

    def _expired(self, mapping: NatMapping, now: float) -> bool:
        return now - mapping.last_refresh >= self.behavior.lifetime_s

    def outbound(self, internal: Address, remote: Address, now: float) -> NatMapping:
        """A packet from ``internal`` to ``remote``: the mapping it leaves by
        (created if needed), refreshed, with ``remote`` now let back in."""
        key = (internal, tuple(self.behavior.mapping.key(remote)))
        mapping = self._by_key.get(key)
        if mapping is not None and self._expired(mapping, now):
            self._remove(mapping)
            mapping = None
        if mapping is None:
            port = self._allocate(self._remembered.pop(key, None))
            mapping = NatMapping(
                internal=internal,
                public=(self.public_ip, port),
                key=key[1],
                last_refresh=now,
                created=now,
            )
            self._by_key[key] = mapping
            self._by_public[mapping.public] = mapping
        mapping.last_refresh = now
        mapping.packets_out += 1
        mapping.permissions.add(tuple(self.behavior.filtering.key(remote)))
        return mapping

    def inbound(
        self, public: Address, remote: Address, now: float
    ) -> NatMapping | None:
        """A packet from ``remote`` to ``public``: the mapping that lets it in,
        or None (no such mapping: the port is closed; or filtered)."""
        mapping = self._by_public.get(public)
        if mapping is None or self._expired(mapping, now):
            return None
        if tuple(self.behavior.filtering.key(remote)) not in mapping.permissions:
            return None
        if self.behavior.refresh is Refresh.BOTH:
            mapping.last_refresh = now
        return mapping

    def expire(self, now: float) -> list[NatMapping]:
        """Remove and return the mappings whose lifetime ran out."""
        gone = [m for m in self._by_key.values() if self._expired(m, now)]
        for mapping in gone:
            self._remove(mapping)
        return gone

    def drop(self, internal_ip: str | None = None) -> list[NatMapping]:
        """A NAT rebinding: the mappings (of one inside host, or all) are lost
        and the next packets get new public ports."""
        gone = [
            m
            for m in self._by_key.values()
            if internal_ip is None or m.internal[0] == internal_ip
        ]
        for mapping in gone:
            self._remove(mapping)
        return gone

    def flush(self) -> list[NatMapping]:
        """Firewall state eviction: every mapping and permission is forgotten;
        a mapping re-created later gets its old port back if it is still free
        (port preservation, as Linux conntrack NAT does)."""
        gone = self.mappings
        for mapping in gone:
            self._remembered[(mapping.internal, mapping.key)] = mapping.public[1]
            self._remove(mapping)
        return gone

    def _remove(self, mapping: NatMapping) -> None:
        self._by_key.pop((mapping.internal, mapping.key), None)
        self._by_public.pop(mapping.public, None)
        if not any(m.public == mapping.public for m in self._by_key.values()):
            self._release(mapping.public[1])
