"""The lab's pure parts, without root: names, addresses, nft rules, parsing."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import pytest

from agent.errors import NetworkLabError
from agent.net.lab import shell
from agent.net.lab.conntrack import parse_conntrack, parse_deleted_count
from agent.net.lab.rules import (
    flow_limit_rules,
    link_fault_rules,
    loss_statement,
    nat_refusal,
    nat_ruleset,
    rebind_rule,
    state_sets,
    udp_timeout_sysctls,
)
from agent.net.lab.topology import (
    MAX_LABS,
    Direction,
    LabTopology,
    Role,
    parse_namespace_name,
    validate_run_id,
)
from agent.net.nat import NAT_TYPES, Behavior, NatBehavior, NatType, Refresh
from agent.net.network import NatConfig

EIM = Behavior.ENDPOINT_INDEPENDENT
ADM = Behavior.ADDRESS_DEPENDENT
APDM = Behavior.ADDRESS_AND_PORT_DEPENDENT
TOPO = LabTopology("r1", 7)


def behavior(
    mapping: Behavior = EIM, filtering: Behavior = APDM, **changes: Any
) -> NatBehavior:
    """The scenario default NAT with some behaviours changed."""
    default = NatConfig().behavior()
    return dataclasses.replace(default, mapping=mapping, filtering=filtering, **changes)


# -- topology ---------------------------------------------------------------------


def test_names_and_addresses_follow_the_index() -> None:
    assert TOPO.namespaces == {
        Role.INSIDE: "ca-r1-7-in",
        Role.NAT: "ca-r1-7-nat",
        Role.OUTSIDE: "ca-r1-7-out",
    }
    assert (TOPO.inside_ip, TOPO.public_ip, TOPO.outside_ip) == (
        "198.18.7.2",
        "198.19.7.1",
        "198.19.7.2",
    )
    assert TOPO.default_routes == {
        Role.INSIDE: "198.18.7.1",
        Role.OUTSIDE: "198.19.7.1",
    }
    # libnice skips veth*: no lab interface may be called that.
    ifnames = {end.ifname for link in TOPO.links for end in (link.inner, link.outer)}
    assert ifnames == {"lan0", "wan0"}


def test_labs_never_share_an_address() -> None:
    seen: set[str] = set()
    for index in range(MAX_LABS):
        topo = LabTopology("r1", index)
        addresses = {e.address for link in topo.links for e in (link.inner, link.outer)}
        assert not addresses & seen
        seen |= addresses
    with pytest.raises(NetworkLabError, match="out of range"):
        LabTopology("r1", MAX_LABS)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("ca-r1-7-nat", ("r1", 7, Role.NAT)),
        ("ca-deadbeef-0-in", ("deadbeef", 0, Role.INSIDE)),
        ("ca-r1-7-nat2", None),
        ("ca-r1-07-nat", None),  # not a name we generate
        ("ca-r1-256-out", None),
        ("cx-r1-7-nat", None),
        ("ca-r1", None),
        ("ca-R1-7-in", None),
    ],
)
def test_only_our_names_parse(name: str, parsed: tuple[str, int, Role] | None) -> None:
    assert parse_namespace_name(name) == parsed


def test_run_ids_cannot_prefix_each_other() -> None:
    validate_run_id("abc123")
    for bad in ("", "a-b", "A", "x" * 17, "a/b"):
        with pytest.raises(NetworkLabError, match="run id"):
            validate_run_id(bad)


def test_link_fault_ends_by_direction() -> None:
    wan = TOPO.wan
    assert [e.role for e in wan.receiving_ends(Direction.INBOUND)] == [Role.NAT]
    assert [e.role for e in wan.receiving_ends(Direction.OUTBOUND)] == [Role.OUTSIDE]
    assert len(TOPO.lan.receiving_ends(Direction.BOTH)) == 2
    with pytest.raises(NetworkLabError, match="no lab link"):
        TOPO.link("dmz")


# -- NAT rules --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAT_TYPES))
def test_every_classic_nat_type_is_expressible(name: NatType) -> None:
    mapping, filtering = NAT_TYPES[name]
    ruleset = nat_ruleset(behavior(mapping, filtering), TOPO)
    text = ruleset.nft
    assert text.startswith("table ip calab {")
    assert "policy drop" in text and "ct state established,related accept" in text
    if mapping is EIM:
        assert "masquerade persistent" in text and "masquerade random" not in text
    else:
        assert "masquerade random" in text
    assert ("dnat ip to udp dport map @mappings" in text) is (filtering is not APDM)
    assert ("@permits" in text) is (filtering is ADM)


def test_outbound_refresh_drops_inbound_before_conntrack() -> None:
    outbound = nat_ruleset(behavior(lifetime_s=2.5), TOPO)
    assert "priority raw" in outbound.nft
    assert 'iifname "wan0" udp dport != @alive drop' in outbound.nft
    assert "timeout 3000ms" in outbound.nft  # whole seconds, rounded up
    assert outbound.notes
    both = nat_ruleset(behavior(refresh=Refresh.BOTH), TOPO)
    assert "@alive" not in both.nft and "priority raw" not in both.nft
    assert state_sets(behavior(refresh=Refresh.BOTH)) == ()
    assert [n for n, _ in state_sets(behavior(EIM, ADM))] == [
        "alive",
        "mappings",
        "permits",
    ]


@pytest.mark.parametrize(
    ("behavior", "named"),
    [
        (behavior(ADM, APDM), "address-dependent mapping"),
        (behavior(ADM, EIM), "address-dependent mapping"),
        (behavior(APDM, EIM), "endpoint_independent filtering"),
        (behavior(APDM, ADM), "address_dependent filtering"),
        (behavior(lifetime_s=0.5), "0.5 s mapping lifetime"),
    ],
)
def test_inexpressible_behaviors_are_refused_in_one_line(
    behavior: NatBehavior, named: str
) -> None:
    reason = nat_refusal(behavior)
    assert reason is not None and named in reason and "\n" not in reason
    with pytest.raises(NetworkLabError) as refused:
        nat_ruleset(behavior, TOPO)
    assert str(refused.value) == reason


def test_udp_timeouts_set_both_sysctls_in_whole_seconds() -> None:
    assert udp_timeout_sysctls(0.2) == (
        ("net.netfilter.nf_conntrack_udp_timeout", "1"),
        ("net.netfilter.nf_conntrack_udp_timeout_stream", "1"),
    )
    assert nat_ruleset(behavior(lifetime_s=30), TOPO).sysctls[1][1] == "30"


def test_fault_rules_text() -> None:
    assert rebind_rule(("198.18.7.2", 40000), "198.19.7.1", 50001) == (
        "add rule ip calab rebinds ip saddr 198.18.7.2 udp sport 40000 "
        "snat ip to 198.19.7.1:50001\n"
    )
    assert "ct state new ct count over 50 drop" in flow_limit_rules(50)
    with pytest.raises(NetworkLabError):
        flow_limit_rules(0)
    assert loss_statement(2.5) == "meta protocol ip numgen random mod 10000 < 250 drop"
    with pytest.raises(NetworkLabError, match="0-100"):
        loss_statement(101)
    text = link_fault_rules("cafault_loss_1", "wan0", "drop")
    assert 'hook ingress device "wan0"' in text and text.startswith("table netdev ")


# -- conntrack output, capability check ------------------------------------------

_LISTING = """\
udp      17 28 src=198.18.0.2 dst=198.19.0.2 sport=40000 dport=5000 \
src=198.19.0.2 dst=198.19.0.1 sport=5000 dport=40000 mark=0 use=1
udp      17 29 src=198.18.0.2 dst=198.19.0.2 sport=40001 dport=5000 [UNREPLIED] \
src=198.19.0.2 dst=198.19.0.1 sport=5000 dport=8467 mark=0 use=1
icmp     1 29 src=198.18.0.2 dst=198.19.0.2 type=8 code=0 id=7 \
src=198.19.0.2 dst=198.19.0.1 type=0 code=0 id=7 mark=0 use=1
"""


def test_conntrack_listing_parses_to_mappings() -> None:
    first, second = parse_conntrack(_LISTING)
    assert first.original_src == ("198.18.0.2", 40000)
    assert first.public == ("198.19.0.1", 40000) and first.replied
    assert second.public == ("198.19.0.1", 8467) and not second.replied
    assert second.timeout_s == 29
    err = "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.\n"
    assert parse_deleted_count(err) == 2
    assert parse_deleted_count("conntrack v1.4.7: operation failed") is None


def test_capability_check_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shell, "_effective_caps", lambda: 0)
    reason = shell.unavailable_reason()
    assert reason is not None and "CAP_NET_ADMIN" in reason and "\n" not in reason
    monkeypatch.setattr(shell, "_effective_caps", lambda: (1 << 12) | (1 << 21))
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    reason = shell.unavailable_reason()
    assert reason is not None and "ip, nft, conntrack" in reason
