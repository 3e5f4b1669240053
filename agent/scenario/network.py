"""The scenario's ``network`` section: the NAT, and where the network is —
the agent's own sockets (``lab: user``, the default) or a kernel lab
(``lab: kernel``: namespaces, nftables NAT, conntrack; see
:mod:`agent.net.lab`) — with the kernel lab's refusals, said at ``check``
time in one line.

A shared lab (``shared: true``) puts every call of the scenario through one
NAT and one state table; ``max_flows`` limits that table (``ct count``): new
flows beyond it are dropped, established ones keep flowing — a firewall's
full state table (scenarios/firewall_overflow.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from agent.net.lab.rules import nat_refusal
from agent.net.lab.topology import MAX_LABS
from agent.net.network import NatConfig
from agent.scenario.fields import Section, raise_errors, unknown_key_errors
from agent.scenario.steps_net import FILE_SYNTAX_CONTEXT

__all__ = ["MAX_LAB_FLOWS", "LabMode", "NetworkSettings", "kernel_refusal"]

LabMode = Literal["user", "kernel"]
#: A lab's state table, in flows (``ct count``); a few per call.
MAX_LAB_FLOWS = 1_000_000


class NetworkSettings(Section):
    """The network between the peers (loopback calls)."""

    #: one side behind a user-space NAT; declared once, in :mod:`agent.net.network`
    nat: NatConfig | None = None
    #: where the network is: the agent's own sockets (``user``, the default)
    #: or a kernel lab of namespaces, nftables and conntrack (``kernel``,
    #: needs root; ``callagent run --lab`` overrides it)
    lab: LabMode = "user"
    #: kernel lab: every call of the scenario goes through ONE lab (one NAT,
    #: one state table) instead of a lab each
    shared: StrictBool = False
    #: kernel lab: the NAT's state table holds this many flows; new flows
    #: beyond it are dropped, established ones keep flowing
    max_flows: Annotated[StrictInt, Field(ge=1, le=MAX_LAB_FLOWS)] | None = None

    @field_validator("nat", mode="before")
    @classmethod
    def _nat_as_written(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value  # None (no NAT), a NatConfig, or a type error below
        raise_errors(
            NatConfig.__name__,
            unknown_key_errors(value, NatConfig.model_fields, "field"),
        )
        # Errors keep their locations: ('network', 'nat', 'udp_timeout').
        return NatConfig.model_validate(value, context=FILE_SYNTAX_CONTEXT)


def kernel_refusal(network: NetworkSettings, calls: int) -> str | None:
    """One line saying why a scenario cannot run in a kernel lab (a NAT
    behaviour nftables cannot express, more labs than exist), or None."""
    if network.nat is not None:
        reason = nat_refusal(network.nat.behavior())
        if reason is not None:
            return reason
    if not network.shared and calls > MAX_LABS:
        return (
            f"kernel lab: {calls} calls need {calls} labs, at most {MAX_LABS} "
            "exist at once (set network.shared: true)"
        )
    return None
