"""A peer's settings and the enums they are made of.

Every knob a scenario or a caller can turn on one :class:`Peer
<agent.stack.peer.Peer>` is a field of :class:`PeerConfig`. The timers are
fields too, so that a test can run the same decisions on short timers (consent
expiry in a second instead of RFC 7675's 30 s) without patching anything.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from agent.stack.icenet import SideNet

#: RFC 7675 §5.1: consent expires 30 s after the last authenticated response.
CONSENT_EXPIRY_S = 30.0
#: RFC 7675 §5.1: checks every 5 s on average, randomised 0.8..1.2.
CONSENT_INTERVAL_S = 5.0
#: How often the liveness monitor looks at the selected pair.
LIVENESS_TICK_S = 0.1
#: After a restart selects its pair, the old generation keeps receiving this
#: long, so packets already in flight on the old path are not lost.
RETIRE_AFTER_S = 1.0


class PeerState(enum.StrEnum):
    """The browser's ``RTCPeerConnectionState``."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    CLOSED = "closed"


class CertExpiryPolicy(enum.StrEnum):
    """What a peer does when its DTLS certificate expires mid-call."""

    ROTATE = "rotate"  # new certificate, re-offer, rehandshake (cause cert_expiry)
    KEEP = "keep"  # keep using it; the report says it expired


class FarEndProfile(enum.StrEnum):
    """DTLS behaviour of equipment seen in the field, for the answering side."""

    NEVER = "never"  # like browsers: the association rides across everything
    ON_ICE_RESTART = "rehandshake_on_ice_restart"
    ON_SOURCE_CHANGE = "rehandshake_on_source_change"


class CertificateKind(enum.StrEnum):
    """The key of a peer's DTLS certificate. Browsers make ECDSA P-256 ones;
    webrtcbin and many SBCs make (and some require) RSA."""

    ECDSA = "ecdsa"
    RSA = "rsa"


class IceProfile(enum.StrEnum):
    """Whose ICE behaviour a peer imitates (see :mod:`agent.stack.ice_profile`)."""

    #: Chrome/libwebrtc: pings on the selected pair, USE-CANDIDATE on every
    #: check when controlling, the controlled side follows a nominated pair
    LIBWEBRTC = "libwebrtc"
    #: plain RFC 8445/7675 as aioice does it: consent checks only, no
    #: nomination after the first, the controlled side stays put
    RFC = "rfc"


class RecoveryPolicy(enum.StrEnum):
    """What the peer does when its path dies — what apps do with restartIce()."""

    NONE = "none"
    RESTART_ON_DISCONNECTED = "restart_on_disconnected"
    RESTART_ON_FAILED = "restart_on_failed"


@dataclass
class PeerConfig:
    host_addresses: list[str]
    audio: bool = True
    packet_ms: int = 20
    decode: bool = False
    rng: random.Random = field(default_factory=random.Random)
    #: nothing received on the selected pair this long -> ``disconnected``
    disconnected_after_s: float = 2.0
    #: pings (consent checks) on a healthy selected pair; None: the ICE
    #: profile's (libwebrtc 2.5 s, rfc 5 s)
    consent_interval_s: float | None = None
    recovery: RecoveryPolicy = RecoveryPolicy.NONE
    #: a new generation not selected within this long is a failed restart
    restart_timeout_s: float = 10.0
    #: lifetime of the first certificate (None: 30 days)
    certificate_lifetime_s: float | None = None
    cert_expiry: CertExpiryPolicy = CertExpiryPolicy.ROTATE
    dtls_profile: FarEndProfile = FarEndProfile.NEVER
    #: largest DTLS datagram we send (handshake flights are packed up to it)
    dtls_mtu: int = 1200
    #: this side's network (impairments, routes, NAT) shared by every ICE
    #: generation, so a fault also catches the sockets a restart opens
    net: SideNet = field(default_factory=SideNet)
    #: no authenticated consent response this long -> ``failed`` (RFC 7675
    #: §5.1 says 30 s; tests shorten it)
    consent_expiry_s: float = CONSENT_EXPIRY_S
    #: how often liveness (disconnected/failed) is looked at
    liveness_tick_s: float = LIVENESS_TICK_S
    #: how long a replaced ICE generation still receives (make-before-break)
    retire_after_s: float = RETIRE_AFTER_S
    #: the key type of this peer's DTLS certificates (first and rotated)
    certificate: CertificateKind = CertificateKind.ECDSA
    #: whose ICE behaviour this peer imitates (libwebrtc: a browser)
    ice_profile: IceProfile = IceProfile.LIBWEBRTC
