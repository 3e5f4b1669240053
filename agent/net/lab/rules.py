"""RFC 4787 NAT behaviour as nftables rules text, and the lab's fault rules.

Pure functions: text in, text out, unit-tested without root. What the kernel
does with each (verified live in tests/net/lab):

Mapping (RFC 4787 §4.1), in the ``nat`` namespace's postrouting:

* endpoint-independent — ``masquerade persistent``. Linux conntrack NAT keeps
  the inside source port when it is free on the public address (port
  preservation), so every destination sees the same public port; one peer
  per lab never collides. ``persistent`` pairs the public address (REQ-2) for
  NATs with a pool; with one address it only states the intent.
* address-and-port-dependent — ``masquerade random``: the ``random`` flag
  skips port preservation, so every new flow (5-tuple) gets a random port.
* address-dependent — refused: conntrack maps per flow, and nftables has no
  "same port for this destination address, any port" allocator.

Filtering (§5), in forward (``policy drop``):

* address-and-port-dependent — ``ct state established,related accept`` only:
  conntrack matches the exact remote endpoint.
* endpoint-independent / address-dependent (with EIM only) — what the NAT
  learned on the way out is kept in dynamic nftables maps keyed by the public
  port (``ct reply proto-dst``): inbound to that port is DNATed back to the
  inside endpoint, from anyone (EIF) or from remote addresses the inside has
  sent to (ADF, a ``port . address`` set).
* with APD mapping, EIF/ADF are refused: ports are per flow, an inbound packet
  from a new remote has no mapping to join.

Lifetime and refresh (§4.3): ``nf_conntrack_udp_timeout`` and ``_stream`` are
set per namespace to the lifetime. Conntrack refreshes an entry on packets in
both directions; for REQ-6's outbound-only refresh (the default) an ``alive``
set of public ports, refreshed only by outbound packets, drops inbound UDP in
``raw`` prerouting — before conntrack, so dropped packets do not refresh the
entry either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.errors import NetworkLabError
from agent.net.lab.topology import LabTopology
from agent.net.nat import Behavior, NatBehavior, Refresh

__all__ = [
    "FLOW_LIMIT_TABLE",
    "NAT_TABLE",
    "NatRuleset",
    "drop_statement",
    "flow_limit_rules",
    "link_fault_rules",
    "loss_statement",
    "nat_refusal",
    "nat_ruleset",
    "rebind_rule",
    "state_sets",
    "udp_timeout_sysctls",
]

NAT_TABLE = "calab"
FLOW_LIMIT_TABLE = "calab_limit"
_EIM = Behavior.ENDPOINT_INDEPENDENT
_ADM = Behavior.ADDRESS_DEPENDENT
_APDM = Behavior.ADDRESS_AND_PORT_DEPENDENT


@dataclass(frozen=True)
class NatRuleset:
    """What the ``nat`` namespace gets for one behaviour."""

    behavior: NatBehavior
    #: ``nft -f`` input; creates table ``ip calab``
    nft: str
    #: sysctl name -> value, set inside the ``nat`` namespace
    sysctls: tuple[tuple[str, str], ...]
    #: where the kernel's behaviour differs from the user-space model, for the report
    notes: tuple[str, ...]


def nat_refusal(behavior: NatBehavior) -> str | None:
    """One line naming why nftables cannot express ``behavior``, or None.
    ``check`` calls this before any lab is built."""
    if behavior.mapping is _ADM:
        return (
            "kernel lab cannot express address-dependent mapping: conntrack NAT maps "
            "per flow (use endpoint_independent or address_and_port_dependent)"
        )
    if behavior.mapping is _APDM and behavior.filtering is not _APDM:
        return (
            f"kernel lab cannot express {behavior.filtering.value} filtering with "
            "address_and_port_dependent mapping: ports are per flow, so an inbound "
            "packet from a new remote has no mapping to join"
        )
    if behavior.lifetime_s < 1:
        return (
            f"kernel lab cannot express a {behavior.lifetime_s:g} s mapping lifetime: "
            "conntrack UDP timeouts are whole seconds, at least 1"
        )
    return None


def state_sets(behavior: NatBehavior) -> tuple[tuple[str, str], ...]:
    """``(name, "set"|"map")`` of the dynamic state :func:`nat_ruleset`
    keeps for ``behavior`` besides conntrack (flushed with it)."""
    found: list[tuple[str, str]] = []
    if behavior.refresh is Refresh.OUTBOUND:
        found.append(("alive", "set"))
    if behavior.filtering is not _APDM:
        found.append(("mappings", "map"))
    if behavior.filtering is _ADM:
        found.append(("permits", "set"))
    return tuple(found)


def udp_timeout_sysctls(lifetime_s: float) -> tuple[tuple[str, str], ...]:
    """Both UDP timeouts: ``_stream`` applies once a flow has seen replies and
    lived 2 s, which is every call's media flow."""
    seconds = str(max(1, math.ceil(lifetime_s)))
    return (
        ("net.netfilter.nf_conntrack_udp_timeout", seconds),
        ("net.netfilter.nf_conntrack_udp_timeout_stream", seconds),
    )


def nat_ruleset(behavior: NatBehavior, topology: LabTopology) -> NatRuleset:
    """The nftables ruleset for ``behavior``; raises :class:`NetworkLabError`
    (the :func:`nat_refusal` line) when the kernel cannot express it."""
    reason = nat_refusal(behavior)
    if reason is not None:
        raise NetworkLabError(reason)
    lan = f'"{topology.lan.outer.ifname}"'
    wan = f'"{topology.wan.inner.ifname}"'
    lifetime_ms = max(1000, math.ceil(behavior.lifetime_s) * 1000)
    mapping_stmt = (
        "masquerade persistent" if behavior.mapping is _EIM else "masquerade random"
    )
    inbound_dnat = behavior.filtering is not _APDM  # EIF or ADF (EIM only)
    outbound_refresh = behavior.refresh is Refresh.OUTBOUND
    notes: list[str] = []

    sets: list[str] = []
    raw: list[str] = []
    dnat: list[str] = []
    learn: list[str] = []
    if outbound_refresh:
        sets.append(
            "  set alive {\n    type inet_service; flags dynamic, timeout;\n"
            f"    timeout {lifetime_ms}ms;\n  }}"
        )
        # RFC 4787 REQ-6: only outbound refreshes; drop before conntrack so an
        # inbound packet cannot keep the conntrack entry alive either.
        raw.append(f"    iifname {wan} udp dport != @alive drop")
        learn.append(
            f"    oifname {wan} meta l4proto udp update @alive {{ ct reply proto-dst }}"
        )
        notes.append(
            "an expired mapping closes to inbound at once, but the kernel may reuse "
            "its conntrack entry (same port) if the inside sends within another "
            "lifetime"
        )
    if inbound_dnat:
        sets.append(
            "  map mappings {\n"
            "    type inet_service : ipv4_addr . inet_service;\n"
            "    flags dynamic, timeout;\n"
            f"    timeout {lifetime_ms}ms;\n  }}"
        )
        learn.append(
            f"    oifname {wan} meta l4proto udp update @mappings "
            "{ ct reply proto-dst : ct original ip saddr . ct original proto-src }"
        )
        if behavior.filtering is _ADM:
            sets.append(
                "  set permits {\n"
                "    type inet_service . ipv4_addr; flags dynamic, timeout;\n"
                f"    timeout {lifetime_ms}ms;\n  }}"
            )
            learn.append(
                f"    oifname {wan} meta l4proto udp update @permits "
                "{ ct reply proto-dst . ct original ip daddr }"
            )
            dnat.append(
                f"    iifname {wan} ct state new udp dport . ip saddr @permits "
                "dnat ip to udp dport map @mappings"
            )
        else:
            dnat.append(
                f"    iifname {wan} ct state new dnat ip to udp dport map @mappings"
            )
        if not outbound_refresh:
            notes.append("inbound packets do not refresh EIF/ADF permissions")

    blocks = [*sets]
    if raw:
        blocks.append(
            _chain("raw_prerouting", "filter hook prerouting priority raw", raw)
        )
    if dnat:
        blocks.append(
            _chain("prerouting_nat", "nat hook prerouting priority dstnat", dnat)
        )
    blocks.append("  chain rebinds {\n  }")
    blocks.append(
        _chain(
            "postrouting_nat",
            "nat hook postrouting priority srcnat",
            [f"    oifname {wan} jump rebinds", f"    oifname {wan} {mapping_stmt}"],
        )
    )
    if learn:
        # After srcnat: the conntrack reply tuple now holds the public port.
        blocks.append(
            _chain(
                "postrouting_learn",
                "filter hook postrouting priority srcnat + 10",
                learn,
            )
        )
    forward = [
        "    ct state established,related accept",
        f"    iifname {lan} oifname {wan} accept",
    ]
    if inbound_dnat:
        forward.append(f"    iifname {wan} oifname {lan} ct status dnat accept")
    blocks.append(
        _chain("forward_filter", "filter hook forward priority filter", forward, "drop")
    )
    # A home NAT is silent toward the outside: no ICMP port-unreachable for a
    # closed port (the far end must not learn "refused" from the NAT itself).
    blocks.append(
        _chain(
            "input_filter",
            "filter hook input priority filter",
            [
                f"    iifname {wan} ct state established,related accept",
                f"    iifname {wan} drop",
            ],
        )
    )
    text = f"table ip {NAT_TABLE} {{\n" + "\n".join(blocks) + "\n}\n"
    return NatRuleset(
        behavior=behavior,
        nft=text,
        sysctls=udp_timeout_sysctls(behavior.lifetime_s),
        notes=tuple(notes),
    )


def _chain(name: str, hook: str, rules: list[str], policy: str = "accept") -> str:
    body = "\n".join(rules)
    return f"  chain {name} {{\n    type {hook}; policy {policy};\n{body}\n  }}"


def rebind_rule(inside: tuple[str, int], public_ip: str, new_port: int) -> str:
    """Pin one inside endpoint to a new public port (a rebind under EIM, where
    port preservation would otherwise hand the old port straight back)."""
    ip, port = inside
    return (
        f"add rule ip {NAT_TABLE} rebinds ip saddr {ip} udp sport {port} "
        f"snat ip to {public_ip}:{new_port}\n"
    )


def flow_limit_rules(max_flows: int) -> str:
    """A state table of ``max_flows`` entries: new flows beyond it are dropped
    (their conntrack entry is never confirmed), established ones keep flowing —
    what a full firewall table does. ``nf_conntrack_max`` cannot be set inside a
    namespace here (EINVAL), so nftables' ``ct count`` (connlimit) counts
    instead; it counts flows seen since the rule was loaded."""
    if max_flows < 1:
        raise NetworkLabError(f"flow limit must be at least 1, got {max_flows}")
    return (
        f"table ip {FLOW_LIMIT_TABLE} {{\n"
        "  chain forward_limit {\n"
        "    type filter hook forward priority filter - 1; policy accept;\n"
        f"    ct state new ct count over {max_flows} drop\n"
        "  }\n}\n"
    )


def drop_statement() -> str:
    return "drop"


def loss_statement(percent: float) -> str:
    """Random loss at ``percent`` (0.01 % steps). ``numgen random`` is the
    kernel's PRNG: the rate is recorded, the individual choices are not
    reproducible from a seed. ARP is spared so the rate is the one asked."""
    if not 0 <= percent <= 100:
        raise NetworkLabError(f"loss must be 0-100 %, got {percent:g}")
    basis_points = round(percent * 100)
    return f"meta protocol ip numgen random mod 10000 < {basis_points} drop"


def link_fault_rules(table: str, ifname: str, statement: str) -> str:
    """A netdev table dropping at ``ifname``'s ingress: the packet was sent
    (the sender's conntrack saw it) and is lost on the wire."""
    return (
        f"table netdev {table} {{\n"
        "  chain ingress {\n"
        f'    type filter hook ingress device "{ifname}" priority filter;\n'
        "    policy accept;\n"
        f"    {statement}\n"
        "  }\n}\n"
    )
