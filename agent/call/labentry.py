"""The report's ``lab`` entry of a call that ran in a kernel lab: topology
(namespaces, links, addresses), the NAT rules in force, the placement of
the agent's sides, and the kernel faults the call applied."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import JsonValue

from agent.net.labnet import CallLab
from agent.report.entries import LabEntry, LabFaultEntry, LabLink, LabLinkEnd

__all__ = ["lab_entry"]


def lab_entry(placed: CallLab) -> LabEntry:
    lab = placed.lab
    topo = lab.topology
    return LabEntry(
        run_id=topo.run_id,
        index=topo.index,
        namespaces={role.name.lower(): ns for role, ns in topo.namespaces.items()},
        links=[
            LabLink(
                name=link.name,
                subnet=link.subnet,
                ends=[
                    LabLinkEnd(
                        namespace=topo.namespace(end.role),
                        ifname=end.ifname,
                        address=end.cidr,
                    )
                    for end in (link.inner, link.outer)
                ],
            )
            for link in topo.links
        ],
        public_ip=topo.public_ip,
        placement=placed.placement(),
        nat=lab.nat,
        nat_rules=lab.ruleset.nft,
        flow_limit=lab.max_flows,
        shared_by=placed.shared_by,
        notes=list(lab.ruleset.notes),
        faults=[
            LabFaultEntry(
                kind=fault.kind,
                layer="kernel",
                active=fault.active,
                detail=_json(fault.detail),
            )
            for fault in placed.applied
        ],
    )


def _json(detail: Mapping[str, object]) -> dict[str, JsonValue]:
    """Kernel fault details are JSON-ready already; anything else as text."""
    out: dict[str, JsonValue] = json.loads(json.dumps(detail, default=str))
    return out
