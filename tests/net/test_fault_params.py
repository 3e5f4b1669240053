"""Fault parameters are strict, and read in file syntax only when told."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agent.net.faults import FAULTS
from agent.net.faults.address_change import MoveParams
from agent.net.faults.base import TimedParams
from agent.net.faults.jitter import JitterParams
from agent.net.faults.loss import LossParams
from agent.net.faults.mtu import MtuParams
from agent.net.nat import NAT_TYPES, Behavior, Refresh
from agent.net.network import NatConfig
from agent.scenario.steps_net import FILE_SYNTAX_CONTEXT

TIMED = sorted(n for n, f in FAULTS.items() if issubclass(f.Params, TimedParams))


def refused(model: type[BaseModel], data: dict[str, Any], file: bool = False) -> str:
    context = FILE_SYNTAX_CONTEXT if file else None
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, context=context)
    return str(caught.value.errors()[0]["type"])


@pytest.mark.parametrize("rate", ["0.5", True, 0, 0.0, -0.1, 1.5, float("nan")])
def test_a_rate_is_a_number_above_0_and_at_most_1(rate: object) -> None:
    refused(LossParams, {"rate": rate})
    refused(LossParams, {"rate": rate}, file=True)


@pytest.mark.parametrize("rate", [1, 1.0, 0.001])
def test_good_rates(rate: float) -> None:
    assert LossParams.model_validate({"rate": rate}).rate == rate


@pytest.mark.parametrize("name", TIMED)
@pytest.mark.parametrize(
    "duration", [0, -1, float("inf"), float("nan"), True, "2s", "2"]
)
def test_durations_in_code_are_finite_positive_seconds(
    name: str, duration: object
) -> None:
    params = FAULTS[name].Params
    assert issubclass(params, TimedParams)
    refused(params, {**_required(name), "duration": duration})


@pytest.mark.parametrize("name", TIMED)
@pytest.mark.parametrize("duration", ["0s", "-1s", ".inf", True, "soon", float("inf")])
def test_durations_in_files_use_the_scenario_syntax_and_stay_finite(
    name: str, duration: object
) -> None:
    refused(FAULTS[name].Params, {**_required(name), "duration": duration}, file=True)


@pytest.mark.parametrize("name", TIMED)
def test_a_file_duration_is_read_as_seconds(name: str) -> None:
    data = {**_required(name), "duration": "1500ms"}
    params = FAULTS[name].Params.model_validate(data, context=FILE_SYNTAX_CONTEXT)
    assert isinstance(params, TimedParams) and params.duration == 1.5


def _required(name: str) -> dict[str, Any]:
    required: dict[str, dict[str, Any]] = {
        "net.loss": {"rate": 0.5},
        "net.delay": {"delay": 0.1},
        "net.jitter": {"jitter": 0.02},
        "net.mtu": {"max_bytes": 576},
    }
    return required.get(name, {})


def test_jitter_takes_a_zero_delay_but_not_a_negative_one() -> None:
    assert JitterParams(jitter=0.02).delay == 0.0
    refused(JitterParams, {"jitter": 0.02, "delay": -0.01})
    refused(JitterParams, {"jitter": "20ms"})


@pytest.mark.parametrize("size", ["576", 27, 65508, 576.0, True])
def test_mtu_sizes_are_whole_datagram_sizes(size: object) -> None:
    refused(MtuParams, {"max_bytes": size})


def test_addresses_are_loopback_only_in_files() -> None:
    # The scenario layer's rule (calls bind loopback only), not the network's.
    assert MoveParams(address=IPv4Address("10.0.0.1")).address.is_private
    assert refused(MoveParams, {"address": "10.0.0.1"}, file=True) == "not_loopback"


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_refuses_unknown_keys_and_bad_causes(name: str) -> None:
    params = FAULTS[name].Params
    refused(params, {**_required(name), "causes": "x"})
    refused(params, {**_required(name), "cause": "Not A Name"})
    refused(params, {**_required(name), "cause": 3})


def test_nat_config_reads_file_syntax_only_when_told() -> None:
    written = {"udp_timeout": "2s", "public_address": "127.0.0.5"}
    nat = NatConfig.model_validate(written, context=FILE_SYNTAX_CONTEXT)
    assert nat.udp_timeout == 2.0
    assert nat.behavior().lifetime_s == 2.0
    refused(NatConfig, written)  # "2s" in code is not a number
    refused(NatConfig, {"udp_timeout": float("inf")})
    refused(NatConfig, {"public_address": "10.0.0.1"}, file=True)


def test_nat_config_resolves_its_type_and_overrides_into_one_behaviour() -> None:
    stock = NatConfig().behavior()
    assert (stock.mapping, stock.filtering) == NAT_TYPES["port_restricted_cone"]
    assert (stock.lifetime_s, stock.refresh) == (30.0, Refresh.OUTBOUND)
    nat = NatConfig.model_validate(
        {"type": "symmetric", "filtering": "endpoint_independent", "refresh": "both"}
    ).behavior()
    assert nat.mapping is Behavior.ADDRESS_AND_PORT_DEPENDENT
    assert nat.filtering is Behavior.ENDPOINT_INDEPENDENT
    assert nat.refresh is Refresh.BOTH
