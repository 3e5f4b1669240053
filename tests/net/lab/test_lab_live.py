"""The kernel lab against the real kernel: namespaces, nftables NAT, conntrack.

Sockets are opened inside the lab's namespaces by a thread that setns(2)s
(agent.net.lab.shell.socket_in) and then driven by this test's own event
loop, so each test awaits datagrams instead of polling child processes.
"Nothing arrives" is asserted by waiting a bounded time (the only way to see
an absence); everything else awaits the event it expects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.errors import NetworkLabError
from agent.net.lab import faults
from agent.net.lab.lab import Lab
from agent.net.lab.shell import list_namespaces, run_checked
from agent.net.lab.topology import Direction, Role
from agent.net.nat import NAT_TYPES, NatBehavior, NatType, Refresh
from agent.net.network import NatConfig

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("root_lab")]

Address = tuple[str, int]
#: how long "nothing arrives" is watched for: veth delivery is sub-millisecond
QUIET_S = 0.4
SERVER_PORT = 5000
#: <linux/in.h>; Python 3.11's socket module does not export them
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2


def nat_type(name: NatType, **kwargs: Any) -> NatBehavior:
    mapping, filtering = NAT_TYPES[name]
    default = NatConfig().behavior()
    return dataclasses.replace(default, mapping=mapping, filtering=filtering, **kwargs)


class Udp(asyncio.DatagramProtocol):
    """A UDP endpoint in one namespace, driven by the test's loop."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is not a DatagramTransport subclass in 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.address = transport.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.queue.put_nowait((data, addr))

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def receive(self, timeout: float = 2.0) -> tuple[bytes, Address]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def quiet(self, within: float = QUIET_S) -> bool:
        """True when nothing arrives within ``within`` seconds."""
        try:
            await self.receive(within)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def endpoints() -> AsyncIterator[list[Udp]]:
    opened: list[Udp] = []
    yield opened
    for endpoint in opened:
        endpoint.close()
    await asyncio.sleep(0)  # transports close their sockets on the next tick


async def udp(
    lab: Lab, role: Role, opened: list[Udp], port: int = 0, address: str | None = None
) -> Udp:
    loop = asyncio.get_running_loop()
    sock = lab.socket(role, port=port, address=address)
    _, proto = await loop.create_datagram_endpoint(Udp, sock=sock)
    opened.append(proto)
    return proto


async def exchange(inside: Udp, outside: Udp, server: Address) -> Address:
    """Inside sends, outside answers to the source it saw: that source."""
    inside.send(b"ping", server)
    data, seen = await outside.receive()
    assert data == b"ping"
    outside.send(b"pong", seen)
    data, back = await inside.receive()
    assert (data, back) == (b"pong", server)
    return seen


async def test_udp_through_nat_arrives_from_the_public_address(
    endpoints: list[Udp],
) -> None:
    async with Lab(nat_type("port_restricted_cone"), run_id="t0live") as lab:
        topo = lab.topology
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (topo.outside_ip, SERVER_PORT)
        seen = await exchange(inside, outside, server)
        # EIM through Linux port preservation: the inside port survives NAT.
        assert seen == (topo.public_ip, 40000)
        (entry,) = await faults.conntrack_entries(lab)
        assert entry.original_src == (topo.inside_ip, 40000)
        assert entry.public == seen and entry.replied
        # The private address is not reachable from outside (filtering).
        outside.send(b"direct", (topo.inside_ip, 40000))
        # APDF: another port of the same far host is filtered too.
        other = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT + 1)
        other.send(b"other port", seen)
        assert await inside.quiet()
    assert not lab.is_up


async def test_symmetric_rebind_gives_a_new_random_port(endpoints: list[Udp]) -> None:
    async with Lab(nat_type("symmetric"), run_id="t1live") as lab:
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        before = await exchange(inside, outside, server)
        assert before[1] != 40000, "masquerade random must not preserve the port"
        fault = await faults.rebind(lab, 40000)
        assert fault.detail["conntrack_deleted"] == 1
        assert fault.detail["old_public_ports"] == [before[1]]
        after = await exchange(inside, outside, server)
        print(f"symmetric rebind: public port {before[1]} -> {after[1]}")
        assert after[0] == before[0] and after[1] != before[1]
        # The old mapping is closed: the far end's packets to it are lost.
        outside.send(b"to the old port", before)
        assert await inside.quiet()


async def test_eim_rebind_pins_a_seeded_port(endpoints: list[Udp]) -> None:
    seed = 1234
    expected = random.Random(seed).randint(49152, 65535)
    async with Lab(nat_type("port_restricted_cone"), run_id="t2live", seed=seed) as lab:
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        assert (await exchange(inside, outside, server))[1] == 40000
        fault = await faults.rebind(lab)
        assert fault.detail["pinned_ports"] == {"40000": expected}
        after = await exchange(inside, outside, server)
        print(f"EIM rebind: public port 40000 -> {after[1]}")
        assert after == (lab.topology.public_ip, expected)
        # EIM: a second destination sees the same new port.
        second = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT + 1)
        assert await exchange(inside, second, (lab.topology.outside_ip, 5001)) == after
        outside.send(b"to the old port", (lab.topology.public_ip, 40000))
        assert await inside.quiet()


async def test_flush_drops_inbound_until_the_inside_sends(endpoints: list[Udp]) -> None:
    async with Lab(nat_type("port_restricted_cone"), run_id="t3live") as lab:
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        seen = await exchange(inside, outside, server)
        fault = await faults.flush_conntrack(lab)
        assert fault.detail["udp_entries"] == 1
        assert await faults.conntrack_entries(lab) == []
        outside.send(b"evicted", seen)
        assert await inside.quiet()
        # The inside speaks again: new state, same port (port preservation).
        assert await exchange(inside, outside, server) == seen


async def test_flow_limit_drops_new_flows_and_keeps_existing(
    endpoints: list[Udp],
) -> None:
    limit = 3
    async with Lab(nat_type("symmetric"), run_id="t4live", max_flows=limit) as lab:
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        insides = [await udp(lab, Role.INSIDE, endpoints) for _ in range(limit + 1)]
        mapped = [await exchange(inside, outside, server) for inside in insides[:limit]]
        insides[limit].send(b"one flow too many", server)
        assert await outside.quiet()
        assert len(await faults.conntrack_entries(lab)) == limit
        # Established flows keep flowing, both ways.
        for inside, public in zip(insides[:limit], mapped, strict=True):
            assert await exchange(inside, outside, server) == public
        # A bigger table lets the waiting flow in.
        await faults.limit_flows(lab, limit + 1)
        await exchange(insides[limit], outside, server)


async def test_udp_timeout_expires_the_mapping(endpoints: list[Udp]) -> None:
    behavior = nat_type("port_restricted_cone", lifetime_s=30, refresh=Refresh.BOTH)
    async with Lab(behavior, run_id="t5live") as lab:
        name = "net.netfilter.nf_conntrack_udp_timeout_stream"
        assert (await lab.run_in(Role.NAT, ["sysctl", "-n", name])).strip() == "30"
        await faults.set_udp_timeout(lab, 1)
        assert (await lab.run_in(Role.NAT, ["sysctl", "-n", name])).strip() == "1"
        # The host's own value is untouched: the sysctl is per namespace.
        host = Path("/proc/sys/net/netfilter/nf_conntrack_udp_timeout")
        assert (await asyncio.to_thread(host.read_text)).strip() != "1"
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        seen = await exchange(inside, outside, server)
        loop = asyncio.get_running_loop()
        start = loop.time()
        # No event to await in the kernel's table: poll it, bounded (5 s);
        # conntrack's GC reaps expired entries at least every second.
        for _ in range(50):
            if not await faults.conntrack_entries(lab):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("a 1 s UDP mapping was still in conntrack after 5 s")
        print(f"1 s conntrack timeout: entry gone after {loop.time() - start:.1f} s")
        outside.send(b"too late", seen)
        assert await inside.quiet()


async def test_inbound_does_not_refresh_an_outbound_refresh_mapping(
    endpoints: list[Udp],
) -> None:
    """RFC 4787 REQ-6: with refresh=outbound, the far end's packets cannot
    keep the mapping open, though conntrack alone would let them."""
    behavior = nat_type("port_restricted_cone", lifetime_s=1.0)
    async with Lab(behavior, run_id="t6live") as lab:
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        seen = await exchange(inside, outside, server)
        loop = asyncio.get_running_loop()
        start, last = loop.time(), 0.0
        for _ in range(40):  # 4 s of inbound every 100 ms
            outside.send(b"keepalive from outside", seen)
            await asyncio.sleep(0.1)
            while not inside.queue.empty():
                inside.queue.get_nowait()
                last = loop.time() - start
        print(f"outbound-refresh lifetime 1 s: inbound stopped after {last:.2f} s")
        # Conntrack alone would have let all 4 s through (inbound refreshes it).
        assert 0.5 < last < 2.5
        assert await exchange(inside, outside, server) == seen


async def test_full_cone_lets_any_remote_in_restricted_cone_only_known_hosts(
    endpoints: list[Udp],
) -> None:
    cases: tuple[tuple[NatType, bool], ...] = (
        ("full_cone", True),
        ("restricted_cone", False),
    )
    for name, stranger_gets_in in cases:
        async with Lab(nat_type(name), run_id="t7live") as lab:
            topo = lab.topology
            inside = await udp(lab, Role.INSIDE, endpoints, 40000)
            outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
            seen = await exchange(inside, outside, (topo.outside_ip, SERVER_PORT))
            # Same host, other port: allowed by both EIF and ADF.
            other_port = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT + 1)
            other_port.send(b"same host", seen)
            assert await inside.receive() == (
                b"same host",
                (topo.outside_ip, SERVER_PORT + 1),
            )
            # Another host: only EIF lets it in.
            stranger_ip = topo.outside_ip.rsplit(".", 1)[0] + ".9"
            await faults.add_address(lab, Role.OUTSIDE, f"{stranger_ip}/24", "wan0")
            stranger = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT, stranger_ip)
            stranger.send(b"stranger", seen)
            assert (not await inside.quiet()) is stranger_gets_in, name


async def test_blackhole_one_way_and_loss_rate(endpoints: list[Udp]) -> None:
    async with Lab(nat_type("port_restricted_cone"), run_id="t8live") as lab:
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        seen = await exchange(inside, outside, server)
        hole = await faults.blackhole(lab, "wan", Direction.INBOUND)
        inside.send(b"out still works", server)
        assert (await outside.receive())[0] == b"out still works"
        outside.send(b"in is lost", seen)
        assert await inside.quiet()
        await faults.clear(lab, hole)
        assert await exchange(inside, outside, server) == seen

        lossy = await faults.loss(lab, 30, "wan", Direction.OUTBOUND)
        sent = 400
        for i in range(sent):
            inside.send(b"%d" % i, server)
            if i % 50 == 49:
                await asyncio.sleep(0.01)  # stay below socket buffers
        await outside.quiet(0.3)  # drain: the last datagrams are in flight
        got = 0
        while not outside.queue.empty():
            outside.queue.get_nowait()
            got += 1
        await faults.clear(lab, lossy)
        print(f"loss 30 %: {sent - got}/{sent} lost")
        # 30 % of 400 = 120 expected, sd ~9: 5.5 sd either way
        assert 70 <= sent - got <= 170
        assert [f.kind for f in lab.applied] == ["net.blackhole", "net.loss"]
        assert not any(f.active for f in lab.applied)
        described = json.loads(json.dumps(lab.describe()))
        assert [f["layer"] for f in described["faults"]] == ["kernel", "kernel"]
        assert described["public_ip"] == lab.topology.public_ip
        assert "masquerade persistent" in described["nat_rules"]


async def test_mtu_drops_a_df_datagram_and_the_sender_learns_it(
    endpoints: list[Udp],
) -> None:
    async with Lab(nat_type("port_restricted_cone"), run_id="t9live") as lab:
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (lab.topology.outside_ip, SERVER_PORT)
        sock = lab.socket(Role.INSIDE, port=40000)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            await faults.set_mtu(lab, 1280, "wan")
            big = b"x" * 1400
            sock.sendto(
                big, server
            )  # leaves the inside (lan MTU 1500), dies at the NAT
            assert await outside.quiet()
            # ICMP fragmentation-needed came back: the kernel caches PMTU 1280
            # for the destination and refuses the next big send locally.
            with pytest.raises(OSError) as refused:
                sock.sendto(big, server)
            assert refused.value.errno == errno.EMSGSIZE
            sock.sendto(b"y" * 1200, server)
            assert len((await outside.receive())[0]) == 1200
            # A default UDP socket (IP_PMTUDISC_WANT, what aioice opens) loses
            # the first big datagram too, then fragments to the cached PMTU.
            default = lab.socket(Role.INSIDE, port=40001)
            try:
                default.sendto(big, (lab.topology.outside_ip, SERVER_PORT))
                data, _ = await outside.receive()
                assert len(data) == 1400, "the PMTU is cached per destination"
            finally:
                default.close()
        finally:
            sock.close()


async def test_address_removal_and_route_change(endpoints: list[Udp]) -> None:
    async with Lab(nat_type("port_restricted_cone"), run_id="t10live") as lab:
        topo = lab.topology
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        server = (topo.outside_ip, SERVER_PORT)
        sock = lab.socket(Role.INSIDE, port=40000)
        try:
            route = await faults.replace_route(lab, Role.INSIDE, ["unreachable"])
            with pytest.raises(OSError) as unreachable:
                sock.sendto(b"no route", server)
            assert unreachable.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
            await faults.clear(lab, route)
            sock.sendto(b"route back", server)
            assert (await outside.receive())[0] == b"route back"

            gone = await faults.remove_address(
                lab, Role.INSIDE, topo.lan.inner.cidr, "lan0"
            )
            with pytest.raises(OSError):
                sock.sendto(b"from a dead address", server)
            assert await outside.quiet()
            await faults.clear(lab, gone)
            # The default route went with the address; the undo restores it.
            routes_lost = gone.detail["routes_lost"]
            assert isinstance(routes_lost, list)
            assert any(route.startswith("default") for route in routes_lost)
            sock.sendto(b"address back", server)
            assert (await outside.receive())[0] == b"address back"
        finally:
            sock.close()


async def test_failed_command_is_one_line_naming_it() -> None:
    async with Lab(run_id="t11live") as lab:
        with pytest.raises(NetworkLabError) as failed:
            await lab.run_in(
                Role.NAT, ["nft", "add", "rule", "ip", "nosuch", "x", "drop"]
            )
        message = str(failed.value)
        assert "\n" not in message
        assert "nft add rule ip nosuch x drop" in message and "exit 1" in message


async def test_build_failure_tears_down_only_what_it_built() -> None:
    with pytest.raises(NetworkLabError, match="flow limit"):
        Lab(run_id="t12live", max_flows=0)  # refused before anything exists
    lab = Lab(run_id="t12live")
    squatter = lab.namespace(Role.OUTSIDE)  # built third: the build fails there
    await run_checked(["ip", "netns", "add", squatter])
    try:
        with pytest.raises(NetworkLabError, match="ip netns add"):
            await lab.build()
        assert not lab.is_up
        present = await list_namespaces()
        assert squatter in present  # not ours to remove
        assert lab.namespace(Role.INSIDE) not in present
        assert lab.namespace(Role.NAT) not in present
    finally:
        await run_checked(["ip", "netns", "del", squatter])


async def test_two_labs_coexist_apart(endpoints: list[Udp]) -> None:
    first, second = Lab(run_id="t13live", index=0), Lab(run_id="t13live", index=1)
    try:
        await asyncio.gather(first.build(), second.build())
        for lab in (first, second):
            inside = await udp(lab, Role.INSIDE, endpoints, 40000)
            outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
            server = (lab.topology.outside_ip, SERVER_PORT)
            assert await exchange(inside, outside, server) == (
                lab.topology.public_ip,
                40000,
            )
            (entry,) = await faults.conntrack_entries(lab)
            assert entry.original_src[0] == lab.topology.inside_ip
        # No path between labs: the first lab's inside cannot reach the second.
        stray = await udp(first, Role.INSIDE, endpoints, 40001)
        stray.send(b"wrong lab", (second.topology.outside_ip, SERVER_PORT))
        assert await outside.quiet()
    finally:
        await asyncio.gather(first.teardown(), second.teardown())


async def test_full_cone_rebind_closes_the_old_port_to_everyone(
    endpoints: list[Udp],
) -> None:
    seed = 5
    expected = random.Random(seed).randint(49152, 65535)
    async with Lab(nat_type("full_cone"), run_id="t14live", seed=seed) as lab:
        topo = lab.topology
        inside = await udp(lab, Role.INSIDE, endpoints, 40000)
        outside = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT)
        stranger_ip = topo.outside_ip.rsplit(".", 1)[0] + ".9"
        await faults.add_address(lab, Role.OUTSIDE, f"{stranger_ip}/24", "wan0")
        stranger = await udp(lab, Role.OUTSIDE, endpoints, SERVER_PORT, stranger_ip)
        server = (topo.outside_ip, SERVER_PORT)
        seen = await exchange(inside, outside, server)
        # EIF: the stranger gets in, and the answer leaves from the same mapping.
        assert await exchange(stranger, inside, seen) == (stranger_ip, SERVER_PORT)
        fault = await faults.rebind(lab)
        assert fault.detail["conntrack_deleted"] == 2  # the inside's and the stranger's
        stranger.send(b"to the old port", seen)
        assert await inside.quiet()
        after = await exchange(inside, outside, server)
        assert after == (topo.public_ip, expected)
        stranger.send(b"to the new port", after)
        assert await inside.receive() == (
            b"to the new port",
            (stranger_ip, SERVER_PORT),
        )
