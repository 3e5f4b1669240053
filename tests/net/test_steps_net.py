"""The net.* and nat.* steps as scenario data: registered, validated, handed
to the call as the fault's own params."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from agent.errors import ScenarioError
from agent.net.faults import FAULTS, FaultParams
from agent.net.faults.jitter import JitterParams
from agent.net.faults.mtu import MtuParams
from agent.observe.model import Side
from agent.scenario.loader import parse_scenario
from agent.scenario.steps import STEPS


class Target:
    def __init__(self) -> None:
        self.faults: list[tuple[Side | None, str, FaultParams]] = []

    async def hangup(self, side: Side) -> None: ...

    def note(self, side: Side | None, text: str) -> None: ...

    async def restart_ice(self, side: Side, cause: str | None) -> None: ...

    async def rehandshake_dtls(
        self,
        side: Side,
        *,
        rotate_certificate: bool,
        ice_restart: bool,
        cause: str | None,
    ) -> None: ...

    async def fail_over(self, side: Side, *, ice_restart: bool) -> None: ...

    async def set_direction(self, side: Side, direction: str) -> None: ...

    async def apply_fault(
        self, side: Side | None, fault: str, params: FaultParams
    ) -> None:
        self.faults.append((side, fault, params))


def test_every_fault_step_is_registered() -> None:
    wanted = {
        "net.blackhole", "net.loss", "net.delay", "net.jitter", "net.mtu",
        "net.rebind", "net.address_change", "net.path_change",
        "nat.rebind", "nat.flush",
    }  # fmt: skip
    assert wanted <= set(STEPS)


async def test_steps_build_the_fault_the_file_describes() -> None:
    scenario = parse_scenario(
        """
name: x
duration: 10s
network: {nat: {side: caller, udp_timeout: 20s, type: symmetric}}
steps:
  - {at: 1s, do: net.jitter, side: callee, jitter: 40ms, delay: 0.01, seed: 4}
  - {at: 2s, do: net.mtu, side: callee, max_bytes: 548, duration: 3s}
  - {at: 3s, do: net.path_change, side: callee, address: 127.0.0.9}
  - {at: 4s, do: nat.flush, cause: conntrack_gc}
"""
    )
    target = Target()
    for spec in scenario.ordered_steps:
        await STEPS[spec.do]().run(target, spec.side, spec.params)
    (s1, n1, jitter), (_, n2, mtu), (_, n3, path), (s4, n4, flush) = target.faults
    assert (s1, n1) == (Side.CALLEE, "net.jitter")
    assert isinstance(jitter, JitterParams)
    assert (jitter.jitter, jitter.delay, jitter.seed) == (0.04, 0.01, 4)
    assert isinstance(mtu, MtuParams)
    assert (mtu.max_bytes, mtu.duration, mtu.cause) == (548, 3.0, None)
    assert FAULTS[n2]().cause(mtu) == "mtu"
    assert n3 == "net.path_change"
    assert getattr(path, "address", None) == IPv4Address("127.0.0.9")
    assert FAULTS[n3]().cause(path) == "path_change"
    assert (s4, n4) == (None, "nat.flush")
    assert FAULTS[n4]().cause(flush) == "conntrack_gc"
    assert scenario.network.nat is not None and scenario.network.nat.udp_timeout == 20


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[{at: 1s, do: nat.rebind}]", "network.nat is not set"),
        (
            "[{at: 1s, do: net.loss, side: caller, rate: 2}]",
            "rate: must be at most 1",
        ),
        (
            "[{at: 1s, do: net.address_change, side: caller, address: 10.0.0.1}]",
            "not a loopback address",
        ),
    ],
)
def test_bad_fault_steps_are_one_clear_error(steps: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(f"name: x\nduration: 10s\nsteps: {steps}\n")


def test_a_side_behind_the_nat_moves_with_the_nat() -> None:
    with pytest.raises(ScenarioError, match="behind the NAT"):
        parse_scenario(
            "name: x\nduration: 10s\nnetwork: {nat: {side: caller}}\n"
            "steps: [{at: 1s, do: net.rebind, side: caller}]\n"
        )
