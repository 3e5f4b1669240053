"""Building and tearing down one lab: three namespaces, two veth links, NAT.

:class:`Lab` is an async context manager. Building is a dozen short commands
run with ``asyncio.create_subprocess_exec``, so the event loop keeps running
calls while a lab comes up (no thread needed). Teardown runs in ``finally``
whatever happened, and also when building fails half way.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from agent.errors import NetworkLabError
from agent.net.lab import shell
from agent.net.lab.clean import remove_namespace
from agent.net.lab.rules import NatRuleset, flow_limit_rules, nat_ruleset
from agent.net.lab.topology import LabTopology, Role, new_run_id
from agent.net.nat import NAT_TYPES, NatBehavior, Refresh

__all__ = ["KernelFault", "Lab"]

logger = logging.getLogger(__name__)

#: IPv4 only: no link-local IPv6 candidates, no DAD delays on fresh links.
_COMMON_SYSCTLS = (
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
    # Removing an interface's primary address must not take the secondaries
    # with it (net.address_change removes the old address, keeps the new).
    ("net.ipv4.conf.all.promote_secondaries", "1"),
)


#: NatConfig's defaults (a port-restricted cone, 30 s, outbound refresh),
#: for a lab built without a scenario; agent.net.network cannot be imported
#: here (it builds labs), so tests/net/lab/test_lab_plan.py checks they agree.
DEFAULT_BEHAVIOR = NatBehavior(
    *NAT_TYPES["port_restricted_cone"], lifetime_s=30.0, refresh=Refresh.OUTBOUND
)


@dataclass
class KernelFault:
    """A fault the kernel applied, as the report records it (layer "kernel"),
    with the commands that undo it while it is active."""

    kind: str
    detail: dict[str, object]
    undo: list[tuple[str, list[str]]] = field(default_factory=list)
    active: bool = True
    layer: str = "kernel"


class Lab:
    """inside --lan-- nat --wan-- outside, built on enter, removed on exit."""

    def __init__(
        self,
        behavior: NatBehavior | None = None,
        *,
        run_id: str | None = None,
        index: int = 0,
        max_flows: int | None = None,
        seed: int = 0,
        nat: bool = True,
    ) -> None:
        self.behavior = behavior or DEFAULT_BEHAVIOR
        self.topology = LabTopology(run_id or new_run_id(), index)
        #: False: the middle namespace only routes (a call with no NAT)
        self.nat = nat
        #: the NAT rules for the behaviour (raises now if nftables cannot say it)
        self.ruleset: NatRuleset = (
            nat_ruleset(self.behavior, self.topology)
            if nat
            else NatRuleset(
                self.behavior, "", (), ("no NAT: the middle namespace only routes",)
            )
        )
        if max_flows is not None:
            flow_limit_rules(max_flows)  # refuse a bad limit before building
        self.max_flows = max_flows
        #: picks rebind ports under EIM; recorded so a run can be replayed
        self.seed = seed
        self.rng = random.Random(seed)
        #: every kernel fault applied, in order (for the report)
        self.applied: list[KernelFault] = []
        #: inside port -> public port, for endpoints a rebind moved (EIM)
        self.pinned_ports: dict[int, int] = {}
        self._created: list[str] = []
        self._fault_serial = 0
        self._spare_host = 9

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Lab:
        await self.build()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.teardown()

    async def build(self) -> None:
        reason = shell.unavailable_reason()
        if reason is not None:
            raise NetworkLabError(reason)
        try:
            await self._build()
        except BaseException:
            await self.teardown()
            raise

    async def _build(self) -> None:
        topo = self.topology
        for role in Role:
            name = topo.namespace(role)
            await shell.run_checked(["ip", "netns", "add", name])
            self._created.append(name)
        # veth pairs are born inside the nat namespace with the peer end placed
        # straight into its neighbour: no interface ever exists on the host.
        for link in topo.links:
            near, far = (
                (link.outer, link.inner)
                if link.outer.role is Role.NAT
                else (link.inner, link.outer)
            )
            await self.ip(
                Role.NAT,
                [
                    "link", "add", near.ifname, "type", "veth",
                    "peer", "name", far.ifname, "netns", topo.namespace(far.role),
                ],
            )  # fmt: skip
        for role in Role:
            lines = ["link set lo up"]
            for link in topo.links:
                for end in (link.inner, link.outer):
                    if end.role is role:
                        lines.append(f"addr add {end.cidr} dev {end.ifname}")
                        lines.append(f"link set {end.ifname} up")
            gateway = topo.default_routes.get(role)
            if gateway is not None:
                lines.append(f"route add default via {gateway}")
            if role is Role.OUTSIDE and self.nat:
                # The internet does not route private addresses: a far end's
                # checks to the inside's host candidate die here, as they
                # would at its own edge, instead of reaching the NAT (and its
                # state table) as new flows.
                lines.append(f"route add unreachable {topo.lan.subnet}")
            await shell.run_checked(
                ["ip", "-n", topo.namespace(role), "-batch", "-"],
                input="\n".join(lines) + "\n",
            )
            sysctls = list(_COMMON_SYSCTLS)
            if role is Role.NAT:
                sysctls += [("net.ipv4.ip_forward", "1"), *self.ruleset.sysctls]
            await self.sysctl(role, sysctls)
        if self.ruleset.nft:
            await self.nft(Role.NAT, self.ruleset.nft)
        if self.max_flows is not None:
            await self.nft(Role.NAT, flow_limit_rules(self.max_flows))
        logger.info("lab %s up: %s", topo.run_id, ", ".join(self._created))

    async def teardown(self) -> None:
        """Remove this lab's namespaces (and end processes still inside them,
        which a lab-hosted far end may have left). Never raises: it runs in
        ``finally``; failures are logged."""
        for name in reversed(self._created):
            try:
                await remove_namespace(name)
            except NetworkLabError as exc:
                logger.warning("lab teardown: %s", exc)
        self._created.clear()

    @property
    def is_up(self) -> bool:
        return len(self._created) == len(Role)

    # -- commands in the lab -------------------------------------------------

    def namespace(self, role: Role) -> str:
        return self.topology.namespace(role)

    async def run_in(
        self, role: Role, argv: Sequence[str], *, input: str | None = None
    ) -> str:
        """Run ``argv`` in the ``role`` namespace (see :func:`shell.run_in`)."""
        return await shell.run_in(self.namespace(role), argv, input=input)

    async def ip(self, role: Role, args: Sequence[str]) -> str:
        # ``ip -n`` does the setns itself: same effect as ``ip netns exec``,
        # without remounting /sys for each call.
        return await shell.run_checked(["ip", "-n", self.namespace(role), *args])

    async def nft(self, role: Role, text: str) -> str:
        return await self.run_in(role, ["nft", "-f", "-"], input=text)

    async def sysctl(self, role: Role, settings: Sequence[tuple[str, str]]) -> None:
        await self.run_in(
            role, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings)]
        )

    def socket(
        self,
        role: Role,
        kind: socket.SocketKind = socket.SOCK_DGRAM,
        port: int = 0,
        address: str | None = None,
    ) -> socket.socket:
        """A socket bound inside ``role``'s namespace (its lab address unless
        ``address`` is given), for the caller's own event loop."""
        if address is None:
            address = {
                Role.INSIDE: self.topology.inside_ip,
                Role.NAT: self.topology.public_ip,
                Role.OUTSIDE: self.topology.outside_ip,
            }[role]
        return shell.socket_in(self.namespace(role), kind, (address, port))

    def spare_address(self, role: Role) -> tuple[str, str]:
        """A new address for ``role``'s end (``(address, ifname)``), in its
        link's /24 and never handed out before in this lab (a side that moves:
        ``net.address_change``, ``net.path_change``)."""
        self._spare_host += 1
        if self._spare_host > 250:
            raise NetworkLabError("no spare address left in the lab's /24")
        link = self.topology.lan if role is Role.INSIDE else self.topology.wan
        end = link.inner if link.inner.role is role else link.outer
        prefix = end.address.rsplit(".", 1)[0]
        return f"{prefix}.{self._spare_host}", end.ifname

    def next_fault_name(self, kind: str) -> str:
        self._fault_serial += 1
        return f"cafault_{kind}_{self._fault_serial}"

    def describe(self) -> dict[str, object]:
        """The lab for the report: topology, NAT rules in force, faults."""
        return {
            **self.topology.describe(),
            "behavior": {
                "mapping": self.behavior.mapping.value,
                "filtering": self.behavior.filtering.value,
                "lifetime_s": self.behavior.lifetime_s,
                "refresh": self.behavior.refresh.value,
            },
            "nat_rules": self.ruleset.nft,
            "flow_limit": self.max_flows,
            "notes": list(self.ruleset.notes),
            "seed": self.seed,
            "faults": [
                {"kind": f.kind, "layer": f.layer, "active": f.active, **f.detail}
                for f in self.applied
            ],
        }
