"""One configuration: a peer's file settings reach the stack's PeerConfig.

A per-peer knob is declared once in the stack (PeerConfig) and once where a
file writes it (PeerSettings); the mapping between them is mechanical. These
tests fail when a knob is added on one side only.
"""

from __future__ import annotations

import dataclasses
import random
from ipaddress import IPv4Address
from typing import Any

import pytest

from agent.call.calls import CallConfig, LoopbackCall
from agent.observe.model import Side
from agent.scenario.callconfig import (
    PEER_FIELDS_NOT_IN_FILES,
    call_config,
    peer_config,
    peer_config_field,
)
from agent.scenario.loader import parse_scenario
from agent.scenario.model import PeerSettings
from agent.stack.peer import (
    CertExpiryPolicy,
    CertificateKind,
    FarEndProfile,
    IceProfile,
    PeerConfig,
    RecoveryPolicy,
)

PEER_CONFIG_FIELDS = {f.name for f in dataclasses.fields(PeerConfig)}

#: A value other than the default for every PeerSettings field.
NOT_DEFAULT: dict[str, Any] = {
    "address": IPv4Address("127.0.0.9"),
    "recovery": RecoveryPolicy.RESTART_ON_FAILED,
    "disconnected_after": 3.5,
    "consent_interval": 1.25,
    "consent_expiry": 12.5,
    "send_audio": False,
    "certificate_lifetime": 42.0,
    "cert_expiry": CertExpiryPolicy.KEEP,
    "dtls_mtu": 576,
    "dtls_profile": FarEndProfile.ON_SOURCE_CHANGE,
    "certificate": CertificateKind.RSA,
    "ice_profile": IceProfile.RFC,
}


@pytest.mark.parametrize("name", sorted(PeerSettings.model_fields))
def test_every_file_setting_names_a_peer_config_field(name: str) -> None:
    assert peer_config_field(name) in PEER_CONFIG_FIELDS


def test_every_peer_config_field_is_set_from_a_file_or_said_not_to_be() -> None:
    from_files = {peer_config_field(name) for name in PeerSettings.model_fields}
    assert from_files.isdisjoint(PEER_FIELDS_NOT_IN_FILES)
    missing = PEER_CONFIG_FIELDS - from_files - PEER_FIELDS_NOT_IN_FILES
    assert not missing, (
        f"PeerConfig fields {sorted(missing)} cannot be set from a scenario: add "
        "them to PeerSettings, or to runner.PEER_FIELDS_NOT_IN_FILES"
    )
    assert PEER_FIELDS_NOT_IN_FILES <= PEER_CONFIG_FIELDS


def test_the_test_sets_every_file_setting() -> None:
    assert set(NOT_DEFAULT) == set(PeerSettings.model_fields)


@pytest.mark.parametrize("name", sorted(NOT_DEFAULT))
def test_a_non_default_file_setting_arrives_in_peer_config(name: str) -> None:
    default = peer_config(PeerSettings(address=IPv4Address("127.0.0.1")))
    changed = peer_config(
        PeerSettings.model_validate({"address": "127.0.0.1", name: NOT_DEFAULT[name]})
    )
    target = peer_config_field(name)
    assert getattr(changed, target) != getattr(default, target)
    others = PEER_CONFIG_FIELDS - {target, "rng", "net"}
    assert {k: getattr(changed, k) for k in others} == {
        k: getattr(default, k) for k in others
    }


def test_defaults_agree_with_the_stacks() -> None:
    # A file that says nothing gets the stack's own defaults.
    config = peer_config(PeerSettings(address=IPv4Address("127.0.0.1")))
    stock = PeerConfig(host_addresses=["127.0.0.1"], rng=config.rng, net=config.net)
    assert config == stock


def test_a_scenario_file_reaches_the_calls_peers() -> None:
    scenario = parse_scenario(
        """
name: x
duration: 5s
media: {audio: true, packet_ms: 40}
peers:
  caller: {recovery: restart_on_disconnected, consent_interval: 1s}
  callee: {send_audio: false, dtls_mtu: 600, certificate_lifetime: 3s}
"""
    )
    config = call_config(scenario, "x#1", seed=1)
    assert config.caller.recovery is RecoveryPolicy.RESTART_ON_DISCONNECTED
    assert config.caller.consent_interval_s == 1.0
    assert config.caller.host_addresses == ["127.0.0.1"]
    assert (config.callee.audio, config.callee.dtls_mtu) == (False, 600)
    assert config.callee.certificate_lifetime_s == 3.0
    assert config.packet_ms == 40
    assert isinstance(config.caller.rng, random.Random)


async def test_the_call_passes_each_sides_settings_to_its_peer() -> None:
    # The call only sets what belongs to the whole call; the rest is the side's.
    caller = dataclasses.replace(
        peer_config(PeerSettings.model_validate({"address": "127.0.0.1", **{
            k: v for k, v in NOT_DEFAULT.items() if k != "address"
        }})),
        restart_timeout_s=3.0,
    )  # fmt: skip
    config = CallConfig(call_id="c#1", caller=caller, packet_ms=40, audio=True)
    call = LoopbackCall(config)
    try:
        peer = call.peers[Side.CALLER].config
        call_owned = {"packet_ms", "decode", "rng", "net"}
        for name in PEER_CONFIG_FIELDS - call_owned:
            assert getattr(peer, name) == getattr(caller, name), name
        assert peer.packet_ms == 40
        assert peer.net is not caller.net
        assert call.network.sides[Side.CALLER] is peer.net
    finally:
        await call.close()
