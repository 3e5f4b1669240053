"""One lab's topology as pure data: namespace names, links, addresses. No I/O.

Names carry a fixed prefix and the run id (``ca-<run>-<index>-<role>``) so that
``clean`` can find what a SIGKILLed run left behind and touch nothing else.
Addresses are a deterministic function of the lab index, so up to
:data:`MAX_LABS` labs coexist on one host with distinct addresses (a report or
a tcpdump names one lab unambiguously). They come from 198.18.0.0/15, the
range RFC 2544 reserves for benchmarking labs, and live only inside the lab's
own namespaces: nothing is ever routed from the host.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass

from agent.errors import NetworkLabError

__all__ = [
    "LAB_PREFIX",
    "MAX_LABS",
    "Direction",
    "LabTopology",
    "Link",
    "LinkEnd",
    "Role",
    "new_run_id",
    "parse_namespace_name",
    "validate_run_id",
]

#: Every lab namespace name starts with this; nothing else is ever cleaned.
LAB_PREFIX = "ca-"
#: One /24 per link per lab: 198.18.<index>.0/24 (LAN) and 198.19.<index>.0/24
#: (WAN) — RFC 2544 §C.2.2 benchmarking addresses.
MAX_LABS = 256
_RUN_ID = re.compile(r"[a-z0-9]{1,16}")
_NAME = re.compile(
    rf"{re.escape(LAB_PREFIX)}(?P<run>[a-z0-9]{{1,16}})-(?P<index>\d{{1,3}})"
    r"-(?P<role>in|nat|out)"
)


class Role(enum.StrEnum):
    """A namespace's part in the call; the value is the name suffix."""

    INSIDE = "in"  # the peer behind the NAT
    NAT = "nat"  # the router: nftables NAT + conntrack
    OUTSIDE = "out"  # the far end (any process: agent peer, browser, SFU)


class Direction(enum.StrEnum):
    """Which way a link fault acts. INBOUND is toward the inside peer."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"


@dataclass(frozen=True)
class LinkEnd:
    role: Role
    ifname: str
    address: str  # dotted quad, no prefix length
    prefix_len: int

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix_len}"


@dataclass(frozen=True)
class Link:
    """A veth pair. ``inner`` is the end nearer the inside peer."""

    name: str  # "lan" or "wan"
    inner: LinkEnd
    outer: LinkEnd
    subnet: str

    def receiving_ends(self, direction: Direction) -> tuple[LinkEnd, ...]:
        """The ends whose ingress sees traffic going ``direction``: a fault
        dropping there loses packets on the wire, after the sender's stack
        (and its conntrack) has handled them, as a broken cable would."""
        if direction is Direction.INBOUND:
            return (self.inner,)
        if direction is Direction.OUTBOUND:
            return (self.outer,)
        return (self.inner, self.outer)


def new_run_id() -> str:
    return secrets.token_hex(4)


def validate_run_id(run_id: str) -> str:
    # No "-" in a run id: "ca-ab-" must never be a prefix of another run's names.
    if not _RUN_ID.fullmatch(run_id):
        raise NetworkLabError(
            f"lab run id {run_id!r} must be 1-16 characters of a-z and 0-9"
        )
    return run_id


def parse_namespace_name(name: str) -> tuple[str, int, Role] | None:
    """``(run_id, index, role)`` of a lab namespace name, or None if the name
    is not one of ours (then ``clean`` must leave it alone)."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    index = int(match["index"])
    if index >= MAX_LABS or str(index) != match["index"]:
        return None
    return match["run"], index, Role(match["role"])


@dataclass(frozen=True)
class LabTopology:
    """inside --lan-- nat --wan-- outside, for lab ``index`` of run ``run_id``."""

    run_id: str
    index: int

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        if not 0 <= self.index < MAX_LABS:
            raise NetworkLabError(
                f"lab index {self.index} out of range 0-{MAX_LABS - 1}"
            )

    def namespace(self, role: Role) -> str:
        return f"{LAB_PREFIX}{self.run_id}-{self.index}-{role.value}"

    @property
    def namespaces(self) -> dict[Role, str]:
        return {role: self.namespace(role) for role in Role}

    @property
    def lan(self) -> Link:
        # "lan0"/"wan0", never "veth*": libnice (Janus, GStreamer) skips veth*.
        return Link(
            name="lan",
            inner=LinkEnd(Role.INSIDE, "lan0", f"198.18.{self.index}.2", 24),
            outer=LinkEnd(Role.NAT, "lan0", f"198.18.{self.index}.1", 24),
            subnet=f"198.18.{self.index}.0/24",
        )

    @property
    def wan(self) -> Link:
        return Link(
            name="wan",
            inner=LinkEnd(Role.NAT, "wan0", f"198.19.{self.index}.1", 24),
            outer=LinkEnd(Role.OUTSIDE, "wan0", f"198.19.{self.index}.2", 24),
            subnet=f"198.19.{self.index}.0/24",
        )

    @property
    def links(self) -> tuple[Link, Link]:
        return (self.lan, self.wan)

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise NetworkLabError(f"no lab link named {name!r} (lan, wan)")

    @property
    def inside_ip(self) -> str:
        return self.lan.inner.address

    @property
    def public_ip(self) -> str:
        """The NAT's outside address: what the far end sees as the source."""
        return self.wan.inner.address

    @property
    def outside_ip(self) -> str:
        return self.wan.outer.address

    @property
    def default_routes(self) -> dict[Role, str]:
        """Gateway per namespace. Both ends get a default route: browsers
        (Firefox) gather no host candidate without one."""
        return {
            Role.INSIDE: self.lan.outer.address,
            Role.OUTSIDE: self.wan.inner.address,
        }

    def describe(self) -> dict[str, object]:
        """For the report: namespaces and addresses, JSON-ready."""
        return {
            "run_id": self.run_id,
            "index": self.index,
            "namespaces": {
                role.name.lower(): ns for role, ns in self.namespaces.items()
            },
            "links": [
                {
                    "name": link.name,
                    "subnet": link.subnet,
                    "ends": [
                        {
                            "namespace": self.namespace(end.role),
                            "ifname": end.ifname,
                            "address": end.cidr,
                        }
                        for end in (link.inner, link.outer)
                    ],
                }
                for link in self.links
            ],
            "public_ip": self.public_ip,
        }
