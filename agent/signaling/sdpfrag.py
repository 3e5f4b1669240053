"""SDP fragments for trickle ICE and ICE restarts (RFC 8840 §9, RFC 9725 §4.3).

Theory of operation
-------------------
WHIP carries ICE information after the offer/answer in HTTP PATCH bodies of type
``application/trickle-ice-sdpfrag``: an SDP fragment with the session-level ICE
attributes, then one ``m=`` line per media section (under max-bundle, only the
bundle's first section) with its ``a=mid``, the credentials and candidates::

    a=ice-options:trickle ice2
    a=group:BUNDLE 0
    m=audio 9 UDP/TLS/RTP/SAVPF 111
    a=mid:0
    a=ice-ufrag:EsAw
    a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y
    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0
    a=end-of-candidates

A fragment whose ufrag/pwd differ from the ones in use is an ICE restart
(RFC 9725 §4.3.2); otherwise it trickles candidates (§4.3.1). This module only
parses and builds the text; the resource model lives in :mod:`whip_server`.
Parsing is lenient about what RFC 8840 allows to vary (line endings, attribute
order, ufrag/pwd at session or media level) and strict about what we could
misread (an ufrag without a pwd, a candidate without ``a=``).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import SignalingError
from agent.signaling.candidates import MAX_REMOTE_CANDIDATES, check_candidate

__all__ = ["MEDIA_TYPE", "SdpFrag", "build_sdpfrag", "parse_sdpfrag"]

MEDIA_TYPE = "application/trickle-ice-sdpfrag"

#: A fragment is a handful of lines; more is a mistake or an attack.
MAX_LINES = 512


@dataclass(frozen=True)
class SdpFrag:
    """What an SDP fragment says about one ICE session (the bundle's transport)."""

    ufrag: str | None = None
    pwd: str | None = None
    #: ``a=candidate`` values, ``candidate:`` prefix kept (RFC 8839 §5.1)
    candidates: tuple[str, ...] = ()
    end_of_candidates: bool = False
    mid: str | None = None
    ice_options: tuple[str, ...] = ()

    @property
    def has_credentials(self) -> bool:
        return self.ufrag is not None and self.pwd is not None


def parse_sdpfrag(text: str) -> SdpFrag:
    """Parse an ``application/trickle-ice-sdpfrag`` body (RFC 8840 §9)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    lines = [line for line in lines if line]
    if len(lines) > MAX_LINES:
        raise SignalingError(
            f"SDP fragment has {len(lines)} lines (at most {MAX_LINES})"
        )
    ufrag: str | None = None
    pwd: str | None = None
    mid: str | None = None
    options: tuple[str, ...] = ()
    candidates: list[str] = []
    end = False
    media_lines = 0
    for number, line in enumerate(lines, start=1):
        if line.startswith("m="):
            media_lines += 1
            if media_lines > 1:
                # max-bundle: one transport, so one m= line (RFC 9725 §4.3.1).
                raise SignalingError(
                    "SDP fragment has more than one m= line (only the BUNDLE's "
                    "first media section carries ICE, RFC 9725 §4.3.1)"
                )
            continue
        if not line.startswith("a="):
            raise SignalingError(
                f"SDP fragment line {number} is not an a= or m= line: {line[:60]!r}"
            )
        name, _, value = line[2:].partition(":")
        if name == "ice-ufrag":
            ufrag = _ice_char_string(value, "ice-ufrag", number)
        elif name == "ice-pwd":
            pwd = _ice_char_string(value, "ice-pwd", number)
        elif name == "ice-options":
            options = tuple(value.split())
        elif name == "mid":
            mid = value
        elif name == "candidate":
            if end:
                raise SignalingError(
                    f"SDP fragment line {number}: candidate after a=end-of-candidates"
                )
            try:
                # The whole fragment is checked before any of it is acted on.
                candidates.append(check_candidate(value))
            except SignalingError as exc:
                raise SignalingError(f"SDP fragment line {number}: {exc}") from None
            if len(candidates) > MAX_REMOTE_CANDIDATES:
                raise SignalingError(
                    f"SDP fragment has more than {MAX_REMOTE_CANDIDATES} candidates "
                    "(the most one ICE session takes)"
                )
        elif name == "end-of-candidates":
            end = True
        # Other attributes (a=group, a=ice-lite, extensions) do not concern ICE
        # trickling here; RFC 8840 §9 lets receivers ignore them.
    if (ufrag is None) != (pwd is None):
        raise SignalingError(
            "SDP fragment has a=ice-ufrag without a=ice-pwd or the reverse "
            "(an ICE restart needs both, RFC 8839 §5.4)"
        )
    return SdpFrag(
        ufrag=ufrag,
        pwd=pwd,
        candidates=tuple(candidates),
        end_of_candidates=end,
        mid=mid,
        ice_options=options,
    )


def _ice_char_string(value: str, name: str, number: int) -> str:
    # RFC 8839 §5.4: ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4-256, pwd 22-256.
    low = 4 if name == "ice-ufrag" else 22
    ok = low <= len(value) <= 256 and all(c.isalnum() or c in "+/" for c in value)
    if not ok or not value.isascii():
        raise SignalingError(
            f"SDP fragment line {number}: a={name} must be {low}-256 characters "
            "of letters, digits, '+' and '/' (RFC 8839 §5.4)"
        )
    return value


def build_sdpfrag(
    *,
    ufrag: str,
    pwd: str,
    candidates: list[str] | tuple[str, ...],
    mid: str = "0",
    end_of_candidates: bool = True,
    ice_options: str = "trickle",
) -> str:
    """An SDP fragment for one bundled transport (RFC 8840 §9, RFC 9725 §4.3).

    ``candidates`` are ``candidate:...`` values (the ``a=`` is added here).
    """
    lines = [
        f"a=ice-options:{ice_options}",
        f"a=group:BUNDLE {mid}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0",
        f"a=mid:{mid}",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
    ]
    for candidate in candidates:
        value = candidate.removeprefix("a=")
        if not value.startswith("candidate:"):
            value = "candidate:" + value
        lines.append("a=" + value)
    if end_of_candidates:
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"
