"""A scenario file's settings as the call's configuration.

One configuration: a peer's file settings reach the stack's
:class:`~agent.stack.peer.PeerConfig` mechanically, so a new knob is one
:class:`~agent.scenario.model.PeerSettings` field (plus the stack code that
uses it). ``tests/scenario/test_peer_config.py`` checks every field both ways.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from agent.call.calls import CallConfig
from agent.observe.model import Thresholds
from agent.observe.observer import MediaSettings
from agent.scenario.model import PeerSettings, Scenario
from agent.stack.peer import PeerConfig

__all__ = [
    "PEER_FIELDS_NOT_IN_FILES",
    "PEER_FIELD_SHAPES",
    "call_config",
    "peer_config",
    "peer_config_field",
    "scenario_thresholds",
]


def call_config(scenario: Scenario, call_id: str, seed: int) -> CallConfig:
    media = scenario.media
    return CallConfig(
        call_id=call_id,
        caller=peer_config(scenario.peers.caller),
        callee=peer_config(scenario.peers.callee),
        audio=media.audio,
        packet_ms=media.packet_ms,
        decode=media.decode,
        media=MediaSettings(
            gap_threshold_ms=media.gap_threshold_ms,
            jitter_budget_ms=media.jitter_budget_ms,
        ),
        thresholds=scenario_thresholds(scenario),
        seed=seed,
        nat=scenario.network.nat,
    )


# --- one configuration: a peer's file settings -> the stack's PeerConfig ------
#
# Mechanical, so a new knob is one PeerSettings field (plus the stack code that
# uses it): a field reaches the PeerConfig field of the same name, or with the
# ``_s`` unit suffix for durations. Only the two below are shaped differently.
# tests/scenario/test_peer_config.py checks every field both ways.

#: file field -> (PeerConfig field, conversion)
PEER_FIELD_SHAPES: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "address": ("host_addresses", lambda address: [str(address)]),
    # The call ANDs it with the call's media.audio.
    "send_audio": ("audio", bool),
}
#: PeerConfig fields no file sets per peer: the call fills them in (media,
#: the seeded random source, the side's network) or they keep their default.
PEER_FIELDS_NOT_IN_FILES = frozenset(
    {
        "packet_ms",
        "decode",
        "rng",
        "net",
        "restart_timeout_s",
        # the stack's own cadence, not a behaviour a field issue differs in
        "liveness_tick_s",
        "retire_after_s",
    }
)


def peer_config_field(name: str) -> str:
    """The PeerConfig field a PeerSettings field sets."""
    if name in PEER_FIELD_SHAPES:
        return PEER_FIELD_SHAPES[name][0]
    known = {f.name for f in dataclasses.fields(PeerConfig)}
    for candidate in (name, f"{name}_s"):
        if candidate in known:
            return candidate
    raise LookupError(f"PeerSettings.{name} matches no PeerConfig field")


def peer_config(peer: PeerSettings) -> PeerConfig:
    """The stack's settings for one peer, every file setting carried over."""
    values: dict[str, Any] = {}
    for name, value in peer:
        shape = PEER_FIELD_SHAPES.get(name)
        values[peer_config_field(name)] = value if shape is None else shape[1](value)
    return PeerConfig(**values)


def scenario_thresholds(scenario: Scenario) -> dict[str, Thresholds]:
    return {
        "ice_restarts": scenario.thresholds.ice_restarts,
        "dtls_rehandshakes": scenario.thresholds.dtls_rehandshakes,
    }
