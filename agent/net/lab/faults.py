"""Kernel fault primitives on a built :class:`~agent.net.lab.lab.Lab`.

Each returns a :class:`KernelFault` (layer ``kernel``) appended to
``lab.applied``; the ones that stay in force until removed (blackhole, loss,
flow limit, MTU, address, route) carry the commands that undo them, run by
:func:`clear`. Everything runs inside the lab's namespaces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.errors import NetworkLabError
from agent.net.lab import shell
from agent.net.lab.conntrack import ConntrackEntry, parse_conntrack, parse_deleted_count
from agent.net.lab.lab import KernelFault, Lab
from agent.net.lab.rules import (
    FLOW_LIMIT_TABLE,
    NAT_TABLE,
    drop_statement,
    flow_limit_rules,
    link_fault_rules,
    loss_statement,
    rebind_rule,
    state_sets,
    udp_timeout_sysctls,
)
from agent.net.lab.topology import Direction, Role
from agent.net.nat import Behavior

__all__ = [
    "add_address",
    "blackhole",
    "clear",
    "conntrack_entries",
    "flush_conntrack",
    "limit_flows",
    "loss",
    "path_mtu_blackhole",
    "rebind",
    "remove_address",
    "replace_route",
    "set_mtu",
    "set_udp_timeout",
    "source_nat",
]

logger = logging.getLogger(__name__)

#: Where a rebind under EIM moves a mapping (the IANA dynamic range).
_REBIND_PORTS = (49152, 65535)


def _record(lab: Lab, fault: KernelFault) -> KernelFault:
    lab.applied.append(fault)
    logger.info("lab %s: %s %s", lab.topology.run_id, fault.kind, fault.detail)
    return fault


async def clear(lab: Lab, fault: KernelFault) -> None:
    """Undo a fault still in force (no-op for one-shot faults)."""
    if not fault.active:
        return
    for namespace, argv in reversed(fault.undo):
        await shell.run_in(namespace, argv)
    fault.active = False


# -- NAT state -----------------------------------------------------------------


async def conntrack_entries(lab: Lab, protocol: str = "udp") -> list[ConntrackEntry]:
    """The NAT's conntrack table (one protocol)."""
    out = await lab.run_in(Role.NAT, ["conntrack", "-L", "-p", protocol])
    return parse_conntrack(out)


async def _conntrack_delete(lab: Lab, args: list[str]) -> int:
    argv = shell.netns_cmd(lab.namespace(Role.NAT), ["conntrack", "-D", *args])
    code, _, err = await shell.run(argv)
    deleted = parse_deleted_count(err)
    # conntrack exits 1 when nothing matched; that is not a failure here.
    if deleted is None and code != 0:
        raise NetworkLabError(
            f"lab command failed (exit {code}): {' '.join(argv)}: {err.strip()}"
        )
    return deleted or 0


@dataclass(frozen=True)
class _Mapping:
    """One conntrack entry seen as a NAT mapping of the inside peer."""

    inside_port: int
    public_port: int
    remote_ip: str


def _mappings(entries: list[ConntrackEntry], inside_ip: str) -> list[_Mapping]:
    found = []
    for e in entries:
        if e.original_src[0] == inside_ip:  # the inside sent first
            found.append(_Mapping(e.original_src[1], e.reply_dst[1], e.original_dst[0]))
        elif e.reply_src[0] == inside_ip:  # let in by EIF/ADF (DNATed)
            found.append(_Mapping(e.reply_src[1], e.original_dst[1], e.original_src[0]))
    return found


async def _forget(lab: Lab, mappings: list[_Mapping]) -> None:
    """Drop what the nftables sets learned about these mappings, so the old
    public port is really closed (not kept open by ``alive``/``mappings``)."""
    names = [name for name, _ in state_sets(lab.behavior)]
    for m in mappings:
        keys = {
            "alive": f"{m.public_port}",
            "mappings": f"{m.public_port}",
            "permits": f"{m.public_port} . {m.remote_ip}",
        }
        for name in names:
            element = f"{{ {keys[name]} }}"
            argv = ["nft", "delete", "element", "ip", NAT_TABLE, name, element]
            # Missing elements are fine: nft 1.0.6 has no "destroy element".
            await shell.run(shell.netns_cmd(lab.namespace(Role.NAT), argv))


async def rebind(
    lab: Lab, inside_port: int | None = None, *, new_port: int | None = None
) -> KernelFault:
    """A NAT rebinding: the mappings of the inside peer (one port, or all) are
    deleted from conntrack; the next outbound packet creates a new one.

    Under APD mapping (``masquerade random``) the kernel picks a new random
    port by itself. Under EIM, port preservation would hand the old port right
    back, so the endpoint is pinned to ``new_port`` (or one drawn from the
    lab's seeded RNG) with an ``snat`` rule: every destination then sees the
    new port, as an EIM NAT that lost its state would show.
    """
    eim = lab.behavior.mapping is Behavior.ENDPOINT_INDEPENDENT
    if new_port is not None and not eim:
        raise NetworkLabError(
            "rebind new_port applies to endpoint-independent mapping only: "
            "masquerade random picks the port"
        )
    inside_ip = lab.topology.inside_ip
    gone = [
        m
        for m in _mappings(await conntrack_entries(lab), inside_ip)
        if inside_port in (None, m.inside_port)
    ]
    old_ports = sorted({m.public_port for m in gone})
    pinned: dict[int, int] = {}
    if eim:
        endpoints = {m.inside_port for m in gone}
        if inside_port is not None:
            endpoints = {inside_port}
        taken = set(old_ports) | set(lab.pinned_ports.values())
        for port in sorted(endpoints):
            chosen = new_port if new_port is not None else _draw_port(lab, taken)
            taken.add(chosen)
            pinned[port] = chosen
        lab.pinned_ports.update(pinned)
        # Rewrite the whole chain in one transaction: a second rebind of the
        # same endpoint replaces its pin instead of shadowing it.
        text = f"flush chain ip {NAT_TABLE} rebinds\n" + "".join(
            rebind_rule((inside_ip, p), lab.topology.public_ip, n)
            for p, n in sorted(lab.pinned_ports.items())
        )
        await lab.nft(Role.NAT, text)
    orig = ["-p", "udp", "--orig-src", inside_ip]
    reply = ["-p", "udp", "--reply-src", inside_ip]
    if inside_port is not None:
        orig += ["--orig-port-src", str(inside_port)]
        reply += ["--reply-port-src", str(inside_port)]
    deleted = await _conntrack_delete(lab, orig) + await _conntrack_delete(lab, reply)
    await _forget(lab, gone)
    where = inside_ip if inside_port is None else f"{inside_ip}:{inside_port}"
    return _record(
        lab,
        KernelFault(
            "nat.rebind",
            {
                "inside": where,
                "old_public_ports": old_ports,
                "pinned_ports": {str(k): v for k, v in pinned.items()},
                "conntrack_deleted": deleted,
            },
            active=False,
        ),
    )


def _draw_port(lab: Lab, taken: set[int]) -> int:
    for _ in range(64):  # bounded: the range has 16384 ports, few are taken
        port = lab.rng.randint(*_REBIND_PORTS)
        if port not in taken:
            return port
    raise NetworkLabError("no free public port to rebind to")


async def flush_conntrack(lab: Lab) -> KernelFault:
    """Firewall state eviction: every conntrack entry (and what the nftables
    sets learned) is gone; inbound is dropped until the inside sends again."""
    count = len(await conntrack_entries(lab))
    await lab.run_in(Role.NAT, ["conntrack", "-F"])
    text = "".join(
        f"flush {kind} ip {NAT_TABLE} {name}\n"
        for name, kind in state_sets(lab.behavior)
    )
    if text:
        await lab.nft(Role.NAT, text)
    return _record(lab, KernelFault("nat.flush", {"udp_entries": count}, active=False))


async def limit_flows(lab: Lab, max_flows: int) -> KernelFault:
    """A state table of ``max_flows`` entries from now on (see
    :func:`~agent.net.lab.rules.flow_limit_rules`); replaces an earlier limit."""
    nat = lab.namespace(Role.NAT)
    await shell.run(
        shell.netns_cmd(nat, ["nft", "delete", "table", "ip", FLOW_LIMIT_TABLE])
    )
    await lab.nft(Role.NAT, flow_limit_rules(max_flows))
    lab.max_flows = max_flows
    undo = [(nat, ["nft", "delete", "table", "ip", FLOW_LIMIT_TABLE])]
    return _record(
        lab, KernelFault("firewall.flow_limit", {"max_flows": max_flows}, undo)
    )


async def set_udp_timeout(lab: Lab, seconds: float) -> KernelFault:
    """The NAT's conntrack UDP timeouts (both). The ``alive`` set keeps the
    lifetime the lab was built with: this is the firewall's timeout knob."""
    settings = udp_timeout_sysctls(seconds)
    await lab.sysctl(Role.NAT, settings)
    return _record(
        lab, KernelFault("nat.udp_timeout", {"seconds": settings[0][1]}, active=False)
    )


# -- links, addresses, routes ----------------------------------------------------


async def _link_fault(
    lab: Lab,
    kind: str,
    link_name: str,
    direction: Direction,
    statement: str,
    detail: dict[str, object],
) -> KernelFault:
    link = lab.topology.link(link_name)
    fault = KernelFault(
        kind, {"link": link.name, "direction": direction.value, **detail}
    )
    try:
        for end in link.receiving_ends(direction):
            table = lab.next_fault_name(kind.split(".")[-1])
            await lab.nft(end.role, link_fault_rules(table, end.ifname, statement))
            fault.undo.append(
                (lab.namespace(end.role), ["nft", "delete", "table", "netdev", table])
            )
    except BaseException:
        await clear(lab, fault)
        raise
    return _record(lab, fault)


async def blackhole(
    lab: Lab, link: str = "wan", direction: Direction = Direction.BOTH
) -> KernelFault:
    """Every packet on ``link`` (one way or both) is lost on the wire."""
    return await _link_fault(
        lab, "net.blackhole", link, direction, drop_statement(), {}
    )


async def loss(
    lab: Lab, percent: float, link: str = "wan", direction: Direction = Direction.BOTH
) -> KernelFault:
    """Random loss at ``percent`` on ``link``: the kernel PRNG picks, so the
    rate is recorded, not a replayable sequence (``seeded: false``)."""
    return await _link_fault(
        lab,
        "net.loss",
        link,
        direction,
        loss_statement(percent),
        {"percent": percent, "seeded": False},
    )


async def _mtu(lab: Lab, role: Role, ifname: str) -> int:
    out = await lab.ip(role, ["-o", "link", "show", "dev", ifname])
    fields = out.split()
    return int(fields[fields.index("mtu") + 1])


async def set_mtu(lab: Lab, mtu: int, link: str = "wan") -> KernelFault:
    """Both ends of ``link`` get ``mtu``: a DF packet larger than it, routed
    by the NAT, is answered with ICMP fragmentation-needed (RFC 1191)."""
    spec = lab.topology.link(link)
    fault = KernelFault("net.mtu", {"link": spec.name, "mtu": mtu})
    for end in (spec.inner, spec.outer):
        old = await _mtu(lab, end.role, end.ifname)
        await lab.ip(end.role, ["link", "set", "dev", end.ifname, "mtu", str(mtu)])
        fault.undo.append(
            (
                lab.namespace(end.role),
                ["ip", "link", "set", "dev", end.ifname, "mtu", str(old)],
            )
        )
    return _record(lab, fault)


async def path_mtu_blackhole(lab: Lab, mtu: int, link: str = "wan") -> KernelFault:
    """A path-MTU black hole (RFC 2923 §2.1): the router's end of ``link``
    gets ``mtu`` and the router's ICMP fragmentation-needed is dropped. A DF
    datagram too big for it, either way, vanishes without a word; the
    senders' kernels never learn a smaller path MTU.

    With the ICMP delivered instead (:func:`set_mtu` alone), Linux's default
    for UDP (``IP_PMTUDISC_WANT``) caches the path MTU from it and fragments
    the next big datagrams itself: only the first one is lost, and the
    application is told nothing (no ``IP_RECVERR`` in aioice, so no
    EMSGSIZE reaches the stack)."""
    spec = lab.topology.link(link)
    end = spec.inner if spec.inner.role is Role.NAT else spec.outer
    old = await _mtu(lab, Role.NAT, end.ifname)
    table = lab.next_fault_name("pmtu")
    fault = KernelFault(
        "net.mtu", {"link": spec.name, "mtu": mtu, "icmp_frag_needed": "dropped"}
    )
    nat = lab.namespace(Role.NAT)
    await lab.nft(
        Role.NAT,
        f"table ip {table} {{\n"
        "  chain out {\n"
        "    type filter hook output priority filter; policy accept;\n"
        "    icmp type destination-unreachable icmp code frag-needed drop\n"
        "  }\n}\n",
    )
    fault.undo.append((nat, ["nft", "delete", "table", "ip", table]))
    await lab.ip(Role.NAT, ["link", "set", "dev", end.ifname, "mtu", str(mtu)])
    fault.undo.append((nat, ["ip", "link", "set", "dev", end.ifname, "mtu", str(old)]))
    return _record(lab, fault)


async def remove_address(lab: Lab, role: Role, cidr: str, ifname: str) -> KernelFault:
    """The address really disappears: sends from a socket bound to it fail
    (EADDRNOTAVAIL/EINVAL) and packets to it are not delivered. The kernel
    drops the routes through that subnet with it (the default route too);
    the undo puts the address and those routes back."""
    before = await _routes(lab, role)
    await lab.ip(role, ["addr", "del", cidr, "dev", ifname])
    vanished = [r for r in before if r not in await _routes(lab, role)]
    ns = lab.namespace(role)
    # Undo runs last-first: the address, then the routes that need it
    # ("proto kernel" routes come back with the address by themselves).
    undo = [
        (ns, ["ip", "route", "replace", *r.split()])
        for r in vanished
        if "proto kernel" not in r
    ]
    undo.append((ns, ["ip", "addr", "add", cidr, "dev", ifname]))
    return _record(
        lab,
        KernelFault(
            "net.address_remove",
            {"namespace": role.value, "address": cidr, "routes_lost": vanished},
            undo,
        ),
    )


async def _routes(lab: Lab, role: Role) -> list[str]:
    out = await lab.ip(role, ["route", "show"])
    return [line.strip() for line in out.splitlines() if line.strip()]


async def add_address(lab: Lab, role: Role, cidr: str, ifname: str) -> KernelFault:
    await lab.ip(role, ["addr", "add", cidr, "dev", ifname])
    undo = [(lab.namespace(role), ["ip", "addr", "del", cidr, "dev", ifname])]
    return _record(
        lab,
        KernelFault(
            "net.address_add", {"namespace": role.value, "address": cidr}, undo
        ),
    )


async def source_nat(lab: Lab, role: Role, old: str, new: str) -> KernelFault:
    """Packets from ``old`` leave ``role``'s namespace from ``new``, and what
    comes back to ``new`` reaches ``old``'s sockets: a route change with a new
    preferred source, for sockets bound to ``old``. ``old`` still receives.

    Stateless (``notrack`` + payload rewrite at raw priority, checksums fixed
    by nft), on purpose: with conntrack NAT, a far end still sending to
    ``old`` would clash with the rewritten flow's reply tuple and conntrack
    would rewrite *its* source port — a port change no route change makes."""
    table = lab.next_fault_name("path")
    await lab.nft(
        role,
        f"table ip {table} {{\n"
        "  chain out {\n"
        "    type filter hook output priority raw; policy accept;\n"
        f"    ip saddr {old} notrack ip saddr set {new}\n"
        "  }\n"
        "  chain in {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        f"    ip daddr {new} notrack ip daddr set {old}\n"
        "  }\n}\n",
    )
    undo = [(lab.namespace(role), ["nft", "delete", "table", "ip", table])]
    return _record(
        lab,
        KernelFault(
            "net.source_nat",
            {"namespace": role.value, "from": old, "to": new, "stateless": True},
            undo,
        ),
    )


async def replace_route(
    lab: Lab, role: Role, route: list[str], destination: str = "default"
) -> KernelFault:
    """``ip route replace <destination> <route...>`` (e.g. ``["via", gw]``,
    ``["dev", "lan0"]``; ``destination="blackhole"``-style types go in
    ``route``: ``["blackhole"]`` is rewritten as ``blackhole <destination>``).
    The undo restores the route that was there, or removes the new one."""
    before = (await lab.ip(role, ["route", "show", "exact", destination])).strip()
    if route[:1] in (["blackhole"], ["unreachable"], ["prohibit"]):
        argv = ["route", "replace", route[0], destination, *route[1:]]
    else:
        argv = ["route", "replace", destination, *route]
    await lab.ip(role, argv)
    ns = lab.namespace(role)
    if before:
        undo = [(ns, ["ip", "route", "replace", *before.splitlines()[0].split()])]
    else:
        undo = [(ns, ["ip", "route", "del", *argv[2:]])]
    return _record(
        lab,
        KernelFault(
            "net.path_change",
            {
                "namespace": role.value,
                "route": " ".join(argv[2:]),
                "was": before or None,
            },
            undo,
        ),
    )
