"""Certificates of a peer: making them, describing them, and their expiry.

WebRTC certificates are self-signed and authenticated by the fingerprint in SDP
(RFC 8827 §6.5). A scenario can give one a short lifetime so that it expires
mid-call (RFC 5280 ``notAfter``); what the peer then does is a decision made here
on the wall clock it is handed (:func:`expiry_delay_s`), so it is testable
without waiting.
"""

from __future__ import annotations

import datetime
import weakref
from collections.abc import Callable
from typing import Any

from aiortc import RTCCertificate, RTCDtlsFingerprint
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from agent.stack.config import CertificateKind

#: Lifetime of certificates we make unless a scenario says otherwise.
DEFAULT_CERT_LIFETIME_S = 30 * 86400.0
#: Expiries further away than this are not watched: no call lasts that long.
WATCH_HORIZON_S = 7 * 86400.0

#: The wall clock certificates are judged on (injected in tests).
WallClock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_certificate(
    lifetime_s: float = DEFAULT_CERT_LIFETIME_S,
    *,
    not_before: datetime.datetime | None = None,
    kind: CertificateKind = CertificateKind.ECDSA,
) -> RTCCertificate:
    """A self-signed certificate valid for ``lifetime_s`` from now: ECDSA P-256
    (what browsers make) or RSA 2048 (webrtcbin's default, what some SBCs
    insist on)."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if kind is CertificateKind.RSA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    now = not_before or utc_now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callagent")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=60))
        .not_valid_after(now + datetime.timedelta(seconds=lifetime_s))
        .sign(key, hashes.SHA256())
    )
    # aiortc annotates the key as EC only; pyOpenSSL takes an RSA key alike.
    return RTCCertificate(key=key, cert=cert)  # type: ignore[arg-type]


#: each certificate's fingerprints, computed once (see :func:`fingerprints`)
_FINGERPRINTS: weakref.WeakKeyDictionary[RTCCertificate, list[RTCDtlsFingerprint]] = (
    weakref.WeakKeyDictionary()
)


def fingerprints(certificate: RTCCertificate) -> list[RTCDtlsFingerprint]:
    """The certificate's SHA-256/384/512 fingerprints (RFC 8122 §5), as every
    description we write carries them.

    Computed once per certificate: aiortc's ``getFingerprints`` hashes and
    formats all three on each call, ~65 µs, in every offer and answer."""
    found = _FINGERPRINTS.get(certificate)
    if found is None:
        found = _FINGERPRINTS[certificate] = certificate.getFingerprints()
    return list(found)


def sha256_fingerprint(certificate: RTCCertificate) -> str:
    return next(f.value for f in fingerprints(certificate) if f.algorithm == "sha-256")


def certificate_info(
    certificate: RTCCertificate,
    *,
    timestamp: Callable[[datetime.datetime], str] = datetime.datetime.isoformat,
) -> dict[str, Any]:
    """Fingerprint and validity window of a certificate, for the report.

    ``timestamp`` formats the window's ends (ISO 8601 by default; the report
    writer passes its own format)."""
    cert = certificate._cert
    return {
        "fingerprint_sha256": sha256_fingerprint(certificate),
        "not_before": timestamp(cert.not_valid_before_utc),
        "not_after": timestamp(cert.not_valid_after_utc),
    }


def expiry_delay_s(
    expires: datetime.datetime,
    now: datetime.datetime,
    *,
    horizon_s: float = WATCH_HORIZON_S,
) -> float | None:
    """Seconds until a certificate in use must be acted on, or None when its
    expiry is beyond ``horizon_s`` (not worth a timer). Already expired: 0."""
    remaining = (expires - now).total_seconds()
    if remaining >= horizon_s:
        return None
    return max(remaining, 0.0)
