"""Remote ICE candidates: the grammar we accept and how many per ICE session.

Theory of operation
-------------------
Every candidate a remote sends — in an offer, a WHIP PATCH, a ``/ws``
``candidate`` message — names an address and port that our ICE agent will send
STUN checks to (RFC 8445 §6.1.4). So candidates are checked here, once, before
anything acts on them: the whole line against RFC 8839 §5.1 (a port of 99999
or a priority of ``-1`` reaches aioice's socket calls otherwise, as an
``OverflowError`` in the log), and only unicast addresses a check can go to.
A request is validated whole before any of its candidates is used, so a
rejected request changes nothing (no half-applied ICE restart).

:class:`CandidateBudget` caps how many remote candidates one ICE session takes
(:data:`MAX_REMOTE_CANDIDATES`, offer plus trickle; a restart starts a new
session and a new count). An unauthenticated offer can then make the server
check at most that many addresses, each at ICE's pacing, until the call's
connect timeout; ``docs/whip.md`` says so.
"""

from __future__ import annotations

import ipaddress
import re

from agent.errors import SignalingError

__all__ = [
    "MAX_REMOTE_CANDIDATES",
    "CandidateBudget",
    "check_candidate",
    "check_sdp_candidates",
]

#: A browser sends 2-8 candidates per session (host, srflx, relay, per
#: interface); 20 leaves room for multi-homed hosts and caps what an
#: unauthenticated offer can make us send STUN checks to.
MAX_REMOTE_CANDIDATES = 20

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{1,32}")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]{1,64}")
_VALUE = re.compile(r"[\x21-\x7e]{1,256}")
_MDNS_NAME = re.compile(r"[A-Za-z0-9-]{1,63}\.local")
_TYPES = ("host", "srflx", "prflx", "relay")


def check_candidate(text: str) -> str:
    """One candidate (``a=candidate:…``, ``candidate:…`` or the bare value),
    checked against RFC 8839 §5.1; returns it as ``candidate:<value>``."""
    value = text.strip().removeprefix("a=").removeprefix("candidate:")
    shown = value[:80]
    fields = value.split(" ")
    if len(fields) < 8 or len(fields) % 2 != 0 or len(value) > 1024:
        raise SignalingError(f"malformed candidate {shown!r} (RFC 8839 §5.1)")
    foundation, component, transport, priority, address, port, typ, kind = fields[:8]
    problem = None
    if not _ICE_CHARS.fullmatch(foundation):
        problem = "foundation must be 1-32 letters, digits, '+' or '/'"
    elif not (component.isdigit() and 1 <= int(component[:4]) <= 256):
        problem = "component id must be 1-256"
    elif transport.lower() not in ("udp", "tcp"):
        problem = f"transport must be UDP or TCP, not {transport[:20]!r}"
    elif not (priority.isdigit() and len(priority) <= 10):
        problem = "priority must be a number of at most 10 digits"
    elif not 1 <= int(priority) <= 0xFFFFFFFF:
        problem = "priority must be 1 to 2^32-1"
    elif typ != "typ" or kind not in _TYPES:
        problem = "missing 'typ host|srflx|prflx|relay'"
    else:
        problem = _address_problem(address) or _port_problem(port, transport)
    if problem is None:
        problem = _extension_problem(fields[8:])
    if problem is not None:
        raise SignalingError(f"bad ICE candidate {shown!r}: {problem} (RFC 8839 §5.1)")
    return "candidate:" + value


def _address_problem(address: str) -> str | None:
    if _MDNS_NAME.fullmatch(address):
        return None  # a browser's hidden host address (mDNS, resolved on the LAN)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address {address[:60]!r} is not an IP address or an mDNS .local name"
    if ip.is_multicast or ip.is_unspecified or str(ip) == "255.255.255.255":
        return f"address {ip} is not a unicast address"
    return None


def _port_problem(port: str, transport: str) -> str | None:
    if not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return f"port {port[:20]!r} is not 0-65535"
    # RFC 6544 §4.5: active TCP candidates carry port 9 (or 0); UDP needs a port.
    if int(port) == 0 and transport.lower() == "udp":
        return "a UDP candidate needs a port (1-65535)"
    return None


def _extension_problem(pairs: list[str]) -> str | None:
    for name, value in zip(pairs[0::2], pairs[1::2], strict=True):
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            return f"extension {name[:20]!r} {value[:20]!r} is malformed"
        if name == "rport" and not (value.isdigit() and int(value[:6]) <= 65535):
            return f"rport {value[:20]!r} is not 0-65535"
    return None


def check_sdp_candidates(sdp_text: str, kind: str) -> int:
    """Check every ``a=candidate`` line of an offer or answer; return how many.

    Raises :class:`SignalingError` on the first bad one or beyond the cap.
    """
    count = 0
    for line in sdp_text.splitlines():
        if line.startswith("a=candidate:"):
            check_candidate(line)
            count += 1
    if count > MAX_REMOTE_CANDIDATES:
        raise SignalingError(
            f"{kind} has {count} ICE candidates; at most "
            f"{MAX_REMOTE_CANDIDATES} per ICE session are accepted"
        )
    return count


class CandidateBudget:
    """How many remote candidates the current ICE session has taken."""

    def __init__(self, limit: int = MAX_REMOTE_CANDIDATES) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        """Account for ``count`` more, or raise (and account for none)."""
        if self.used + count > self.limit:
            raise SignalingError(
                f"too many ICE candidates: at most {self.limit} per ICE session "
                f"(already {self.used}, {count} more sent)"
            )
        self.used += count

    def restart(self, count: int) -> None:
        """A new ICE session (restart) with ``count`` candidates so far."""
        if count > self.limit:
            raise SignalingError(
                f"too many ICE candidates: {count}, at most {self.limit} "
                "per ICE session"
            )
        self.used = count
