"""The ``media:`` and ``peers:`` sections: what flows on a call, and who is on it.

:class:`PeerSettings` is one peer as a file writes it; every field reaches the
stack's :class:`~agent.stack.peer.PeerConfig` by name (see
:func:`agent.scenario.callconfig.peer_config`, and the test that checks the
mapping, ``tests/scenario/test_peer_config.py``). Like every section, they are
frozen and refuse unknown keys (:class:`~agent.scenario.fields.Section`);
:class:`~agent.scenario.model.Scenario` holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Annotated, Any, Literal, Self

from pydantic import Field, StrictBool, StrictInt, model_validator

from agent.scenario.fields import (
    LoopbackAddress,
    Milliseconds,
    PositiveDuration,
    Section,
    located_error,
    raise_errors,
)
from agent.stack.peer import (
    CertExpiryPolicy,
    CertificateKind,
    FarEndProfile,
    IceProfile,
    RecoveryPolicy,
)

__all__ = ["DEFAULT_ADDRESSES", "MediaSettings", "PeerSettings", "PeersSettings"]


class MediaSettings(Section):
    """What flows on the call, and how the receivers judge it."""

    audio: StrictBool = True
    #: reserved: data channels are not implemented yet, so true is an error
    datachannel: StrictBool = False
    #: decode received Opus instead of analysing RTP timing only
    decode: StrictBool = False
    #: Opus frame size the sender packetises at
    packet_ms: Literal[10, 20, 40, 60] = 20
    #: an inter-arrival time above this counts as a media gap
    gap_threshold_ms: Milliseconds = 60.0
    #: a packet later than this behind its schedule counts as delayed
    jitter_budget_ms: Milliseconds = 60.0

    @model_validator(mode="after")
    def _check_combination(self) -> Self:
        errors = []
        if self.datachannel:
            errors.append(
                located_error(
                    ("datachannel",),
                    "datachannel_unsupported",
                    "data channels are not supported yet; calls carry audio only",
                    True,
                )
            )
        elif not self.audio:
            # With nothing negotiated there is no ICE or DTLS to observe.
            errors.append(
                located_error(
                    ("audio",),
                    "no_media",
                    "a call needs audio (nothing else is negotiated yet)",
                    self.audio,
                )
            )
        if self.decode and not self.audio:
            errors.append(
                located_error(
                    ("decode",), "decode_without_audio", "needs audio: true", True
                )
            )
        if self.gap_threshold_ms < self.packet_ms:
            errors.append(
                located_error(
                    ("gap_threshold_ms",),
                    "gap_below_packet",
                    f"{self.gap_threshold_ms:g} ms is shorter than packet_ms "
                    f"{self.packet_ms}, so every packet interval would count as "
                    "a media gap",
                    self.gap_threshold_ms,
                )
            )
        raise_errors(type(self).__name__, errors)
        return self


class PeerSettings(Section):
    """One peer of a loopback call, as a file writes it.

    Each field reaches the stack's :class:`~agent.stack.peer.PeerConfig` by
    name (durations gain the ``_s`` unit there; see
    :func:`agent.scenario.callconfig.peer_config`), so a new per-peer knob is one
    field here plus the stack code that uses it. Choices are the stack's own
    enums, not copies of their values.
    """

    address: LoopbackAddress
    #: what the peer does when its path dies, as apps do with restartIce()
    recovery: RecoveryPolicy = RecoveryPolicy.NONE
    #: nothing received this long on the selected pair -> ``disconnected``
    disconnected_after: PositiveDuration = 2.0
    #: pings on the selected pair (RFC 7675 consent checks, also the NAT
    #: keepalive); unset: the ICE profile's (libwebrtc 2.5 s, rfc 5 s)
    consent_interval: PositiveDuration | None = None
    #: no consent response this long -> ``failed`` (RFC 7675 §5.1: 30 s)
    consent_expiry: PositiveDuration = 30.0
    #: false: this peer only receives audio (a listener, a call on hold), so
    #: its consent checks are all that keeps a NAT mapping alive
    send_audio: StrictBool = True
    #: the first DTLS certificate expires this long after the call starts
    certificate_lifetime: PositiveDuration | None = None
    #: on expiry: rotate (new certificate, rehandshake) or keep using it
    cert_expiry: CertExpiryPolicy = CertExpiryPolicy.ROTATE
    #: largest DTLS datagram this peer sends; handshake messages are
    #: fragmented to fit (the fix for a path that drops big datagrams)
    dtls_mtu: Annotated[StrictInt, Field(ge=256, le=1500)] = 1200
    #: DTLS behaviour of field equipment this peer imitates
    dtls_profile: FarEndProfile = FarEndProfile.NEVER
    #: the key of its DTLS certificates: ecdsa (browsers) or rsa (webrtcbin,
    #: SBCs that require one)
    certificate: CertificateKind = CertificateKind.ECDSA
    #: whose ICE behaviour it imitates: libwebrtc (a browser) or rfc (aioice)
    ice_profile: IceProfile = IceProfile.LIBWEBRTC


#: Distinct loopback addresses by default, so a capture tells the sides apart.
DEFAULT_ADDRESSES = {
    "caller": IPv4Address("127.0.0.1"),
    "callee": IPv4Address("127.0.0.2"),
}


class PeersSettings(Section):
    caller: PeerSettings = PeerSettings(address=DEFAULT_ADDRESSES["caller"])
    callee: PeerSettings = PeerSettings(address=DEFAULT_ADDRESSES["callee"])

    @model_validator(mode="before")
    @classmethod
    def _default_addresses(cls, data: Any) -> Any:
        # The default address depends on the role, so PeerSettings cannot
        # carry it; fill it in here when a peer section leaves it out.
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for role, address in DEFAULT_ADDRESSES.items():
            peer = filled.get(role)
            if peer is None and role in filled:
                peer = {}
            if isinstance(peer, Mapping) and "address" not in peer:
                filled[role] = {**peer, "address": address}
        return filled
