"""Every aiortc/aioice private name this package relies on, in one list.

aiortc and aioice are pinned exactly in pyproject.toml because ``agent/stack``
reaches into them. When an upgrade renames or removes one of these names,
``tests/stack/test_pins.py`` fails naming it, instead of a call failing in some
odd way at run time. Add a line here whenever ``agent/stack`` starts using a new
private name (attribute, method, or hook the library calls on our objects).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

PINNED_VERSIONS = {"aiortc": "1.16.0", "aioice": "0.13.0"}


@dataclass(frozen=True)
class Pin:
    owner: str  # "module:Class" or "module"
    name: str
    kind: str  # "attr" (set in __init__), "method", "class", "func", "const"
    why: str


PINS: tuple[Pin, ...] = (
    # aioice.Connection: gathering on chosen addresses, wire tap, selected pair
    Pin(
        "aioice.ice:Connection",
        "_local_candidates_start",
        "attr",
        "gather on chosen addresses",
    ),
    Pin(
        "aioice.ice:Connection",
        "_local_candidates",
        "attr",
        "gather on chosen addresses",
    ),
    Pin(
        "aioice.ice:Connection",
        "_local_candidates_end",
        "attr",
        "gather on chosen addresses",
    ),
    Pin("aioice.ice:Connection", "_components", "attr", "gather per component"),
    Pin("aioice.ice:Connection", "_nominated", "attr", "selected pair per component"),
    Pin("aioice.ice:Connection", "_protocols", "attr", "sockets to filter"),
    Pin(
        "aioice.ice:Connection",
        "_check_list",
        "attr",
        "valid pairs to follow a far end that moved",
    ),
    Pin("aioice.ice:Connection", "_closing", "attr", "no pair switch when closing"),
    Pin(
        "aioice.ice:Connection",
        "_tie_breaker",
        "attr",
        "same tie-breaker per generation",
    ),
    Pin("aioice.ice:Connection", "query_consent", "method", "RFC 7675 consent, expiry"),
    Pin("aioice.ice:Connection", "request_received", "method", "liveness stamp"),
    Pin("aioice.ice:Connection", "build_request", "method", "consent requests"),
    Pin(
        "aioice.ice:Connection",
        "get_component_candidates",
        "method",
        "bind host sockets",
    ),
    Pin(
        "aioice.ice:Connection", "check_complete", "method", "selected-pair change hook"
    ),
    Pin("aioice.ice:Connection", "data_received", "method", "inbound wire tap"),
    Pin("aioice.ice:Connection", "sendto", "method", "outbound wire tap"),
    Pin("aioice.ice:CandidatePair", "local_addr", "method", "describe selected pair"),
    Pin("aioice.ice:CandidatePair", "remote_addr", "method", "describe selected pair"),
    # aiortc ORTC objects
    Pin(
        "aiortc.rtcicetransport:RTCIceGatherer",
        "_connection",
        "attr",
        "swap in AgentIceConnection",
    ),
    # DTLS: our own associations (agent/stack/dtls.py) on aiortc's certificate
    Pin(
        "aiortc.rtcdtlstransport:RTCCertificate",
        "_create_ssl_context",
        "method",
        "SSL context of a DTLS association",
    ),
    Pin("aiortc.rtcdtlstransport:RTCCertificate", "_cert", "attr", "validity window"),
    Pin("aiortc.rtcdtlstransport", "SRTP_PROFILES", "const", "SRTP profiles"),
    # the method our SRTP transport calls on the receiver (aiortc's name)
    Pin(
        "aiortc.rtcrtpreceiver:RTCRtpReceiver",
        "_handle_rtp_packet",
        "method",
        "router -> receiver",
    ),
    Pin(
        "aiortc.rtcrtpreceiver:RTCRtpReceiver",
        "_handle_rtcp_packet",
        "method",
        "router -> receiver",
    ),
    Pin(
        "aiortc.rtcrtpreceiver:RTCRtpReceiver",
        "_handle_disconnect",
        "method",
        "router -> receiver",
    ),
)


def _resolve(owner: str) -> object:
    module_name, _, class_name = owner.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name) if class_name else module


def check_pins() -> list[str]:
    """Return one message per pinned name that is missing (empty when all hold)."""
    problems: list[str] = []
    for package, version in PINNED_VERSIONS.items():
        found = getattr(importlib.import_module(package), "__version__", None)
        if found != version:
            problems.append(
                f"{package} is {found}, agent/stack is written for {version}"
            )
    for pin in PINS:
        try:
            owner = _resolve(pin.owner)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{pin.owner} not importable: {exc}")
            continue
        if pin.kind == "attr":
            if not _sets_attribute(owner, pin.name):
                problems.append(f"{pin.owner}.{pin.name} is no longer set ({pin.why})")
        elif not hasattr(owner, pin.name):
            problems.append(f"{pin.owner}.{pin.name} is gone ({pin.why})")
    return problems


def _sets_attribute(cls: object, name: str) -> bool:
    """Whether ``cls.__init__`` assigns ``self.<name>`` (read from its source)."""
    import inspect

    try:
        source = inspect.getsource(cls.__init__)  # type: ignore[misc]
    except (OSError, TypeError):
        return False
    return f"self.{name} " in source or f"self.{name}:" in source
