"""The kernel network lab: real namespaces, nftables NAT and conntrack.

One lab per call (run ``<run>``, index ``<i>``; addresses from 198.18.0.0/15,
RFC 2544's benchmarking range, only ever inside the lab)::

      ca-<run>-<i>-in            ca-<run>-<i>-nat              ca-<run>-<i>-out
    +-----------------+      +-----------------------+      +-----------------+
    | peer behind NAT |      | nftables NAT +        |      | far end: agent  |
    |                 | lan  | conntrack, forwarding | wan  | peer, browser,  |
    | lan0 ===========|======|= lan0         wan0 ===|======|= wan0  SFU ...  |
    | 198.18.i.2/24   | veth | 198.18.i.1  198.19.i.1| veth | 198.19.i.2/24   |
    | default via .1  |      | (public address)      |      | default via .1  |
    +-----------------+      +-----------------------+      +-----------------+

Interfaces are ``lan0``/``wan0``, never ``veth*`` (libnice skips those); both
ends have a default route (Firefox gathers nothing without one); IPv6 is off
in the lab. Nothing touches the host's own namespace: veth pairs are created
inside the ``nat`` namespace with the peer end placed straight into its
neighbour, and every other command runs in a lab namespace.

Modules: :mod:`.topology` (names, addresses: data), :mod:`.rules` (RFC 4787
behaviour -> nftables text, refusals), :mod:`.shell` (commands in a namespace,
capability check, sockets opened in a namespace by a setns thread),
:mod:`.lab` (:class:`Lab`, an async context manager), :mod:`.faults` (kernel
fault primitives), :mod:`.conntrack` (parsing), :mod:`.clean` (what a killed
run left).

Faults, and the layer that can apply them here:

===================  ===========================================================
``nat.rebind``       :func:`faults.rebind`: conntrack entries of the mapping
                     deleted; APD mapping (``masquerade random``) picks a new
                     random port, EIM is pinned to a seeded new port (``snat``),
                     since port preservation would give the old one back
``nat.flush``        :func:`faults.flush_conntrack`: ``conntrack -F`` plus the
                     NAT's learned sets; inbound dropped until the inside sends
                     (then the same port again: port preservation)
``nat.timeout``      ``nf_conntrack_udp_timeout`` and ``_stream`` per namespace;
                     outbound-only refresh (REQ-6) by an ``alive`` set checked
                     in ``raw`` prerouting, before conntrack
``net.blackhole``    :func:`faults.blackhole`: ``drop`` at a link end's netdev
                     ingress, one way or both (lost on the wire)
``net.loss``         :func:`faults.loss`: ``numgen random mod 10000 < N drop``;
                     the kernel's PRNG: the rate is recorded, the choices are
                     not replayable from a seed
``net.mtu``          :func:`faults.set_mtu`: both ends of a link; a DF datagram
                     over it gets ICMP fragmentation-needed from the NAT, the
                     sender's kernel caches the path MTU and later sends of that
                     size fail locally with EMSGSIZE
``net.address_*``    :func:`faults.remove_address` / ``add_address``: the
                     address really goes (sends from it fail)
``net.path_change``  :func:`faults.replace_route` (``ip route replace``)
firewall overflow    :func:`faults.limit_flows`: ``ct state new ct count over N
                     drop`` (``nf_conntrack_max`` is EINVAL inside a namespace):
                     new flows dropped, established ones keep flowing
delay, jitter        NOT in the kernel here: no ``sch_netem`` module. They stay
                     in user space (agent/net/filters.py) even inside a lab.
                     (``tbf`` exists for a rate limit; not wrapped yet.)
===================  ===========================================================

Address-dependent mapping, and EIF/ADF filtering with APD mapping, cannot be
expressed with nftables: :func:`rules.nat_refusal` names them in one line.
"""

from __future__ import annotations

from agent.net.lab.clean import clean, lab_namespaces
from agent.net.lab.conntrack import ConntrackEntry
from agent.net.lab.lab import KernelFault, Lab
from agent.net.lab.rules import NatRuleset, nat_refusal, nat_ruleset
from agent.net.lab.shell import run_in, socket_in, unavailable_reason
from agent.net.lab.topology import LAB_PREFIX, Direction, LabTopology, Role

__all__ = [
    "LAB_PREFIX",
    "ConntrackEntry",
    "Direction",
    "KernelFault",
    "Lab",
    "LabTopology",
    "NatRuleset",
    "Role",
    "clean",
    "lab_namespaces",
    "nat_refusal",
    "nat_ruleset",
    "run_in",
    "socket_in",
    "unavailable_reason",
]
