"""Network faults on real loopback calls between two agent peers.

Each test runs a short scenario through the runner (real sockets, real ICE and
DTLS) and asserts on the report: counts, pair changes, causes, gaps. Short
keepalives (consent 1 s) and NAT timeouts (1-2 s) keep each one to seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner


async def run(text: str, seed: int = 7) -> dict[str, Any]:
    runner = ScenarioRunner(seed=seed)
    (result,) = await asyncio.wait_for(runner.run([parse_scenario(text)]), timeout=60)
    return result


def events(result: Mapping[str, Any], kind: str, side: str | None = None) -> list[Any]:
    return [
        e
        for e in result["events"]
        if e["type"] == kind and (side is None or e["side"] == side)
    ]


def failed(result: Mapping[str, Any]) -> list[Any]:
    """Checks the network or the far end failed. One the agent's own stall
    made inconclusive (a busy host) is not the fault's doing."""
    return [
        c
        for c in result["expectations"]["checks"]
        if not c["passed"] and not c.get("inconclusive")
    ]


def pair_changes(result: Mapping[str, Any], side: str) -> list[Any]:
    return [
        e
        for e in events(result, "selected_pair_change", side)
        if not e["detail"]["initial"]
    ]


async def test_rebind_of_the_controlling_side_the_controlled_far_end_follows() -> None:
    result = await run(
        """
name: rebind
duration: 6s
peers: {caller: {consent_interval: 1s}}
steps: [{at: 1s, do: net.rebind, side: caller}]
expect:
  ice_restarts: 0
  selected_pair_changes_by_side: {caller: 0, callee: 1}
  all_events_attributed: true
"""
    )
    assert not failed(result), failed(result)
    (start,) = events(result, "fault_start")
    (change,) = pair_changes(result, "callee")
    # The far end moved to the new port as a peer-reflexive candidate, with the
    # rebind as its cause; the old port is on the fault event.
    assert change["detail"]["remote_type"] == "prflx"
    assert change["cause"] == "nat_rebind"
    assert change["detail"]["remote"] in start["detail"]["new"]
    assert change["detail"]["remote"] not in start["detail"]["old"]
    # Callee-to-caller audio stopped until the callee followed: at the
    # caller's first nominating ping from the new port (libwebrtc profile),
    # at most one ping interval (1 s -> 0.96 s on the 480 ms tick) later.
    gap = result["media"]["callee_to_caller"]["max_gap_ms"]
    assert 100 < gap < 1500
    assert result["media"]["caller_to_callee"]["max_gap_ms"] < 200


async def test_rebind_of_the_controlled_side_the_controlling_far_end_nominates() -> (
    None
):
    result = await run(
        """
name: rebind-callee
duration: 4s
peers: {callee: {consent_interval: 1s}}
steps: [{at: 1s, do: net.rebind, side: callee}]
expect:
  ice_restarts: 0
  selected_pair_changes_by_side: {caller: 1, callee: 0}
"""
    )
    assert not failed(result), failed(result)
    # Aggressive nomination on the triggered check: the switch is immediate.
    assert result["media"]["caller_to_callee"]["max_gap_ms"] < 1500


async def test_caller_behind_nat_learns_srflx_and_callee_sees_only_the_nat() -> None:
    result = await run(
        """
name: nat
duration: 6s
network:
  nat: {side: caller, type: port_restricted_cone, public_address: 127.0.0.3}
peers: {caller: {consent_interval: 1s}}
steps: [{at: 1s, do: nat.rebind}]
expect:
  ice_restarts: 0
  selected_pair_changes_by_side: {caller: 0, callee: 1}
  all_events_attributed: true
"""
    )
    assert not failed(result), failed(result)
    callee = result["sides"]["callee"]["selected_pair"]
    assert callee["remote"].startswith("127.0.0.3:")
    initial = [
        e
        for e in events(result, "selected_pair_change", "callee")
        if e["detail"]["initial"]
    ]
    assert initial[0]["detail"]["remote_type"] == "srflx"
    start, end = events(result, "fault_start")[0], events(result, "fault_end")[0]
    assert start["cause"] == end["cause"] == "nat_rebind"
    old_port = start["detail"]["mappings"][0].split("-> ")[1]
    assert old_port not in end["detail"]["new_mapping"]


async def test_symmetric_nat_connects_through_peer_reflexive_candidates() -> None:
    result = await run(
        """
name: symmetric
duration: 2s
network: {nat: {side: caller, type: symmetric}}
expect: {ice_restarts: 0, max_media_gap_ms: 100}
"""
    )
    assert not failed(result), failed(result)
    # The srflx port (mapped toward the STUN server) is not the one the callee
    # sees: address-and-port-dependent mapping.
    initial = [
        e
        for e in events(result, "selected_pair_change", "callee")
        if e["detail"]["initial"]
    ]
    assert initial[0]["detail"]["remote_type"] == "prflx"


async def test_nat_timeout_with_slow_keepalives_restarts_ice_with_that_cause() -> None:
    result = await run(
        """
name: nat-timeout
duration: 5s
network: {nat: {side: caller, udp_timeout: 1s}}
# rfc: RFC 7675 keepalives only; a libwebrtc listener's first five pings
# (0.96 s apart) would keep a 1 s mapping alive for this short call.
peers:
  caller: {send_audio: false, consent_interval: 8s, recovery: restart_on_disconnected,
           disconnected_after: 1s, ice_profile: rfc}
  callee: {consent_interval: 8s, disconnected_after: 30s, ice_profile: rfc}
expect:
  call_up: false
  ice_restarts: {min: 1}
  causes: {ice_restarts: nat_timeout}
  all_events_attributed: true
"""
    )
    assert not failed(result), failed(result)
    timeouts = [e for e in events(result, "fault_start") if e["cause"] == "nat_timeout"]
    restart = events(result, "ice_restart", "caller")[0]
    assert timeouts and timeouts[0]["t_ms"] < restart["t_ms"]
    assert restart["detail"]["trigger"] == "disconnected"
    assert restart["detail"]["fault"]["kind"] == "nat_timeout"


async def test_nat_timeout_fixed_by_faster_keepalives() -> None:
    result = await run(
        """
name: nat-timeout-fixed
duration: 3s
network: {nat: {side: caller, udp_timeout: 2s}}
peers:
  caller: {send_audio: false, consent_interval: 0.5s, recovery: restart_on_disconnected,
           disconnected_after: 1s}
  callee: {consent_interval: 8s, disconnected_after: 30s}
expect: {ice_restarts: 0, max_media_gap_ms: 100}
"""
    )
    assert not failed(result), failed(result)
    assert not events(result, "fault_start")


async def test_flush_drops_inbound_until_the_inside_sends_and_keeps_the_port() -> None:
    result = await run(
        """
name: flush
duration: 5s
network: {nat: {side: caller}}
peers:
  caller: {send_audio: false, consent_interval: 2s}
  callee: {consent_interval: 8s, disconnected_after: 30s}
steps: [{at: 1s, do: nat.flush}]
expect:
  ice_restarts: 0
  selected_pair_changes_by_side: {caller: 0, callee: 0}
  all_events_attributed: true
"""
    )
    assert not failed(result), failed(result)
    start, end = events(result, "fault_start")[0], events(result, "fault_end")[0]
    assert start["cause"] == "firewall_eviction"
    assert (
        start["detail"]["mappings"][0].split("-> ")[1] in end["detail"]["new_mapping"]
    )
    gap = result["media"]["callee_to_caller"]["max_gap_ms"]
    assert 100 < gap < 3000  # until the next consent check (<= 2.4 s)


async def test_path_change_keeps_media_and_the_far_end_follows() -> None:
    result = await run(
        """
name: path
duration: 6s
peers: {caller: {consent_interval: 1s}}
steps: [{at: 1s, do: net.path_change, side: caller, address: 127.0.0.5}]
expect:
  ice_restarts: 0
  selected_pair_changes_by_side: {caller: 0, callee: 1}
  max_media_gap_ms: 100
"""
    )
    assert not failed(result), failed(result)
    (change,) = pair_changes(result, "callee")
    assert change["detail"]["remote"].startswith("127.0.0.5:")
    assert change["cause"] == "path_change"


async def test_address_change_restarts_ice_on_the_new_address() -> None:
    result = await run(
        """
name: vpn
duration: 4s
# rfc: the callee does not follow the caller's pings from the new address
# (a libwebrtc callee would, at the next 0.96 s ping, before the caller's
# 1 s disconnect), so the caller's recovery restart is what heals the call.
peers:
  caller: {recovery: restart_on_disconnected, disconnected_after: 1s, ice_profile: rfc}
  callee: {ice_profile: rfc}
steps: [{at: 1s, do: net.address_change, side: caller, address: 127.0.0.6}]
expect:
  ice_restarts: 1
  causes: {ice_restarts: vpn_reconnect}
  dtls_rehandshakes: 0
  all_events_attributed: true
"""
    )
    assert not failed(result), failed(result)
    # The new generation reached the callee from the new address (prflx).
    assert result["sides"]["callee"]["selected_pair"]["remote"].startswith("127.0.0.6:")


async def test_blackhole_for_a_duration_disconnects_then_recovers() -> None:
    result = await run(
        """
name: hole
duration: 4s
steps: [{at: 0.5s, do: net.blackhole, side: callee, duration: 2.5s}]
expect: {ice_restarts: 0, call_up: true, all_events_attributed: true}
"""
    )
    assert not failed(result), failed(result)
    states = [
        e["detail"]["state"] for e in events(result, "connection_state", "caller")
    ]
    assert "disconnected" in states and states[-2:] == ["connected", "closed"]
    (end,) = events(result, "fault_end")
    assert 2400 < end["detail"]["duration_ms"] < 2700 and end["detail"]["dropped"] > 0


async def test_delay_shows_as_one_gap_and_loss_is_seeded() -> None:
    text = """
name: impair
duration: 3s
steps:
  - {at: 0.5s, do: net.delay, side: callee, delay: 300ms, duration: 1s}
  - {at: 2s, do: net.loss, side: callee, rate: 0.3, duration: 0.5s, direction: outbound}
"""
    first = await run(text, seed=3)
    gaps = [e for e in events(first, "media_gap", "caller") if e["cause"] == "delay"]
    assert gaps and 250 < gaps[0]["detail"]["length_ms"] < 450
    (loss,) = [e for e in events(first, "fault_end") if e["cause"] == "packet_loss"]
    assert loss["detail"]["dropped"] > 0
    # The loss's seed is derived from the call's seed and recorded: replayable.
    (start,) = [e for e in events(first, "fault_start") if e["cause"] == "packet_loss"]
    assert isinstance(start["detail"]["seed"], int)
