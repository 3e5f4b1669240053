"""The NAT as RFC 4787 data: mapping, filtering, lifetime, refresh, rebind, flush.

Pure and table-driven: no sockets, ports from a counter, time as a number.
"""

from __future__ import annotations

import itertools

import pytest

from agent.net.nat import NAT_TYPES, Behavior, NatBehavior, NatTable, NatType, Refresh

EIM = Behavior.ENDPOINT_INDEPENDENT
ADM = Behavior.ADDRESS_DEPENDENT
APDM = Behavior.ADDRESS_AND_PORT_DEPENDENT

INSIDE = ("10.0.0.1", 5000)
A1 = ("198.51.100.1", 3478)
A1_OTHER_PORT = ("198.51.100.1", 9999)
B = ("203.0.113.7", 3478)


def table(
    mapping: Behavior = EIM,
    filtering: Behavior = APDM,
    lifetime_s: float = 30.0,
    refresh: Refresh = Refresh.OUTBOUND,
) -> tuple[NatTable, list[int]]:
    ports = itertools.count(40000)
    released: list[int] = []

    def allocate(preferred: int | None) -> int:
        return preferred if preferred is not None else next(ports)

    behavior = NatBehavior(mapping, filtering, lifetime_s, refresh)
    return NatTable(behavior, "192.0.2.1", allocate, released.append), released


@pytest.mark.parametrize(
    ("mapping", "same_port_for"),
    [
        # RFC 4787 §4.1: which later destinations reuse the first mapping.
        (EIM, {A1_OTHER_PORT, B}),
        (ADM, {A1_OTHER_PORT}),
        (APDM, set()),
    ],
)
def test_mapping_behaviour_decides_which_destinations_share_a_port(
    mapping: Behavior, same_port_for: set[tuple[str, int]]
) -> None:
    nat, _ = table(mapping=mapping)
    first = nat.outbound(INSIDE, A1, now=0).public
    for remote in (A1_OTHER_PORT, B):
        port = nat.outbound(INSIDE, remote, now=0).public
        assert (port == first) is (remote in same_port_for), remote


@pytest.mark.parametrize(
    ("filtering", "admitted"),
    [
        # RFC 4787 §5: after the inside sent to A1 only, who may answer.
        (EIM, {A1, A1_OTHER_PORT, B}),
        (ADM, {A1, A1_OTHER_PORT}),
        (APDM, {A1}),
    ],
)
def test_filtering_behaviour_decides_who_gets_in(
    filtering: Behavior, admitted: set[tuple[str, int]]
) -> None:
    nat, _ = table(filtering=filtering)
    public = nat.outbound(INSIDE, A1, now=0).public
    for remote in (A1, A1_OTHER_PORT, B):
        passed = nat.inbound(public, remote, now=1) is not None
        assert passed is (remote in admitted), remote


def test_nothing_gets_in_on_a_port_with_no_mapping() -> None:
    nat, _ = table(filtering=EIM)
    assert nat.inbound(("192.0.2.1", 40000), A1, now=0) is None


@pytest.mark.parametrize(
    ("refresh", "inbound_keeps_it"), [(Refresh.OUTBOUND, False), (Refresh.BOTH, True)]
)
def test_mapping_lifetime_and_refresh_direction(
    refresh: Refresh, inbound_keeps_it: bool
) -> None:
    nat, released = table(lifetime_s=2.0, refresh=refresh)
    mapping = nat.outbound(INSIDE, A1, now=0)
    # Inbound traffic at 1.5 s; outbound silence after 0.
    assert nat.inbound(mapping.public, A1, now=1.5) is mapping
    expired = nat.expire(now=2.5)
    assert (expired == []) is inbound_keeps_it
    if not inbound_keeps_it:
        assert released == [mapping.public[1]]
        assert nat.inbound(mapping.public, A1, now=2.6) is None
        # The next outbound packet opens a new port the far end never saw.
        assert nat.outbound(INSIDE, A1, now=2.7).public != mapping.public


def test_outbound_traffic_keeps_a_mapping_alive() -> None:
    nat, _ = table(lifetime_s=2.0)
    mapping = nat.outbound(INSIDE, A1, now=0)
    for now in (1.5, 3.0, 4.5):
        assert nat.outbound(INSIDE, A1, now=now) is mapping
    assert nat.expire(now=6.0) == []
    assert nat.expire(now=6.5) == [mapping]


def test_rebind_drops_mappings_and_the_next_packet_gets_a_new_port() -> None:
    nat, released = table()
    old = nat.outbound(INSIDE, A1, now=0)
    assert nat.drop() == [old] and released == [old.public[1]]
    assert nat.inbound(old.public, A1, now=1) is None
    new = nat.outbound(INSIDE, A1, now=1)
    assert new.public != old.public and new.packets_out == 1


def test_flush_forgets_state_but_preserves_the_port() -> None:
    nat, _ = table()
    old = nat.outbound(INSIDE, A1, now=0)
    nat.flush()
    # Eviction: the far end's packets are dropped until the inside sends again...
    assert nat.inbound(old.public, A1, now=1) is None
    again = nat.outbound(INSIDE, A1, now=2)
    # ...then the same public port comes back (port preservation).
    assert again.public == old.public and again is not old
    assert nat.inbound(old.public, A1, now=2.1) is again


@pytest.mark.parametrize("name", sorted(NAT_TYPES))
def test_classic_names_are_behaviour_data(name: NatType) -> None:
    mapping, filtering = NAT_TYPES[name]
    nat, _ = table(mapping=mapping, filtering=filtering)
    public = nat.outbound(INSIDE, A1, now=0).public
    assert nat.inbound(public, A1, now=0) is not None
