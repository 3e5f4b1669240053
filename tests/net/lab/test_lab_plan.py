"""The lab wiring that needs no root: placement, directions, the per-mode
expectations, the scenario's lab settings and refusals, host candidates."""

from __future__ import annotations

import pytest

from agent.errors import ScenarioError
from agent.net.filters import Direction as SideDirection
from agent.net.lab import Direction, Lab, Role
from agent.net.lab.lab import DEFAULT_BEHAVIOR
from agent.net.labnet import CallLab
from agent.net.network import NatConfig
from agent.observe.model import Side
from agent.scenario.loader import parse_scenario
from agent.scenario.runner import ScenarioRunner
from agent.stack.hostsockets import host_foundation, host_priority


def scenario_text(body: str) -> str:
    return f"name: plan\nduration: 5s\n{body}"


def test_the_nat_side_is_inside_and_directions_follow_it() -> None:
    placed = CallLab(Lab(run_id="tplan", index=3), Side.CALLEE)
    assert placed.role(Side.CALLEE) is Role.INSIDE
    assert placed.address(Side.CALLEE) == "198.18.3.2"
    assert placed.address(Side.CALLER) == "198.19.3.2"
    assert (placed.link(Side.CALLEE), placed.far_link(Side.CALLEE)) == ("lan", "wan")
    # "inbound" seen from a side is toward it; the lab's INBOUND is toward inside.
    assert placed.direction(Side.CALLEE, SideDirection.INBOUND) is Direction.INBOUND
    assert placed.direction(Side.CALLER, SideDirection.INBOUND) is Direction.OUTBOUND
    assert placed.direction(Side.CALLER, SideDirection.BOTH) is Direction.BOTH
    assert placed.placement() == {"caller": "outside", "callee": "inside"}
    placed.moved[Side.CALLEE] = "198.18.3.10"
    assert placed.address(Side.CALLEE) == "198.18.3.10"


def test_a_lab_without_nat_only_routes() -> None:
    lab = Lab(run_id="tplan", index=1, nat=False)
    assert lab.ruleset.nft == "" and "only routes" in lab.ruleset.notes[0]
    assert lab.spare_address(Role.OUTSIDE) == ("198.19.1.10", "wan0")
    assert lab.spare_address(Role.INSIDE) == ("198.18.1.11", "lan0")


def test_expect_kernel_replaces_only_its_keys_in_the_kernel_lab() -> None:
    scenario = parse_scenario(
        scenario_text(
            "expect: {ice_restarts: 0, max_media_gap_ms: 100}\n"
            "expect_kernel: {max_media_gap_ms: 900}\n"
        ),
        "plan.yaml",
    )
    user = ScenarioRunner(seed=1).expectations(scenario)
    kernel = ScenarioRunner(seed=1, lab="kernel").expectations(scenario)
    assert (user.max_media_gap_ms, kernel.max_media_gap_ms) == (100, 900)
    assert user.ice_restarts == kernel.ice_restarts


def test_each_call_gets_its_own_lab_index_and_gives_it_back() -> None:
    scenario = parse_scenario(scenario_text("network: {lab: kernel}\n"), "plan.yaml")
    runner = ScenarioRunner(seed=1, lab_run_id="tplan")
    first, second = runner.new_lab(scenario, 0), runner.new_lab(scenario, 0)
    assert (first.topology.index, second.topology.index) == (0, 1)
    assert not first.nat  # no NAT in the scenario: a routed path
    runner._release(first)
    assert runner.new_lab(scenario, 0).topology.index == 0


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ("{shared: true}", "needs network.lab: kernel"),
        ("{max_flows: 10}", "needs network.lab: kernel"),
        ("{lab: kernel, max_flows: 0}", "must be at least 1, got 0"),
        (
            "{lab: kernel, nat: {side: caller, mapping: address_dependent}}",
            "address-dependent mapping",
        ),
        ("{lab: netns}", "'user' or 'kernel'"),
    ],
)
def test_lab_settings_are_refused_in_one_line(network: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(scenario_text(f"network: {network}\n"), "plan.yaml")
    assert message in str(caught.value)


def test_host_candidates_on_lab_sockets_are_rfc_8445_host_candidates() -> None:
    # type preference 126, local preference 65535, component 1 (RFC 8445 §5.1.2.1)
    assert host_priority(1) == 2130706431
    assert host_foundation("198.18.0.2") == host_foundation("198.18.0.2")
    assert host_foundation("198.18.0.2") != host_foundation("198.18.0.10")
    assert len(host_foundation("198.18.0.2")) <= 32


def test_a_lab_without_a_scenario_has_the_scenario_nat_defaults() -> None:
    assert DEFAULT_BEHAVIOR == NatConfig().behavior()
