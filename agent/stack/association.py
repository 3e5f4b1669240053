"""One DTLS association: a complete handshake and the SRTP keys it exported.

:class:`agent.stack.dtls.SrtpTransport` owns a sequence of these; this module runs
one of them over pyOpenSSL. The handshake is driven by hand (``do_handshake``
until it stops wanting to read) so that our MTU, not OpenSSL's guess, decides how
flights are fragmented (RFC 6347 §4.2.3), and so that the far end's certificate
is checked against the signalled fingerprint *during* the handshake (a mismatch
aborts it with a fatal alert the far end sees too). Keys are exported with the
``EXTRACTOR-dtls_srtp`` label (RFC 5764 §4.2).

aiortc lends its certificate's SSL context helper, its SRTP profile table and its
certificate digest; those private names are pinned in :mod:`agent.stack.pins`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcdtlstransport import SRTP_PROFILES, certificate_digest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from agent.stack.certs import sha256_fingerprint
from agent.stack.dtlsrecord import split_records
from agent.stack.srtp import SrtpSession, srtp_session

#: The DTLS 1.2 suites we offer and accept, as OpenSSL names them. aiortc
#: offers ECDHE-ECDSA only, so a far end with an RSA certificate (webrtcbin's
#: default, many SBCs) fails with alert 40. This is what browsers take:
#: ECDHE with either key, AES-GCM and ChaCha20 first, then the CBC suites
#: Chrome and Firefox still accept (RFC 8827 §6.5 only mandates ECDHE+AES-GCM).
DTLS_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
    ]
)

#: Send one datagram toward the far end.
Send = Callable[[bytes], Awaitable[None]]


class DtlsError(Exception):
    """A DTLS association could not be set up (one sentence)."""


@dataclass(eq=False)
class DtlsAssociation:
    """One DTLS handshake and the SRTP keys it exported."""

    number: int
    role: str  # "client" or "server"
    certificate: RTCCertificate
    remote_fingerprints: list[RTCDtlsFingerprint]
    inbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    randoms: set[bytes] = field(default_factory=set)
    tx: SrtpSession | None = None
    rx: SrtpSession | None = None
    version: str | None = None
    cipher: str | None = None
    srtp_profile: str | None = None
    established: asyncio.Event = field(default_factory=asyncio.Event)
    #: set once this association's setup is over, whatever the outcome
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    #: its state was dropped (a failed-over far end): no media under its keys
    lost: bool = False
    error: str | None = None
    closed_by_remote: bool = False
    ssl: SSL.Connection | None = None
    task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "association": self.number,
            "role": self.role,
            "version": self.version,
            "cipher": self.cipher,
            "srtp_profile": self.srtp_profile,
            "local_fingerprint": sha256_fingerprint(self.certificate),
        }


def pack_datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Pack whole records into datagrams of at most ``mtu`` bytes (one record
    larger than the MTU still goes alone: the path decides its fate)."""
    datagrams: list[bytes] = []
    current = b""
    for record in split_records(data):
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


async def flush(ssl: SSL.Connection, send: Send, mtu: int) -> None:
    """Send what OpenSSL wrote, packed into datagrams of at most ``mtu``."""
    chunks = []
    while True:
        try:
            chunk = ssl.bio_read(65536)
        except SSL.Error:
            break
        if not chunk:
            break
        chunks.append(chunk)
    for datagram in pack_datagrams(b"".join(chunks), mtu):
        await send(datagram)


#: one SSL context per certificate, shared by its associations
_CONTEXTS: weakref.WeakKeyDictionary[RTCCertificate, SSL.Context] = (
    weakref.WeakKeyDictionary()
)


def dtls_context(certificate: RTCCertificate) -> SSL.Context:
    """The SSL context of every association signed with ``certificate``.

    Made once per certificate, so that the transport can make it along with
    the certificate, before the call's setup: loading a certificate and key
    into OpenSSL costs ~0.4 ms a side, and the first one in a process ~3 ms
    more (pyOpenSSL's lazy imports), all of it on the path from ICE
    completed to the ClientHello otherwise."""
    context = _CONTEXTS.get(certificate)
    if context is None:
        context = certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES)
        context.set_cipher_list(DTLS_CIPHERS.encode())
        # Our MTU, not OpenSSL's guess: a certificate flight then gets through
        # a path that drops large datagrams.
        context.set_options(SSL.OP_NO_QUERY_MTU)
        # One verify callback for the context (pyOpenSSL makes a cffi callback
        # for each one set, ~60 µs); it asks the connection's own runner.
        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_peer
        )
        # Shared by associations: no resumption from an earlier one, each is a
        # full handshake with its own keys, as with a context per association.
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        _CONTEXTS[certificate] = context
    return context


def _verify_peer(
    connection: SSL.Connection, cert: Any, _errno: int, depth: int, _ok: int
) -> bool:
    """The far end's certificate, checked by the runner of ``connection``
    against this association's signalled fingerprints."""
    runner = connection.get_app_data()
    return isinstance(runner, AssociationRunner) and runner.verify(cert, depth)


class AssociationRunner:
    """Runs one association: handshake, key export, then answering
    retransmitted flights until the far end closes it."""

    def __init__(
        self,
        association: DtlsAssociation,
        send: Send,
        mtu: int,
        on_remote_close: Callable[[DtlsAssociation], None],
    ) -> None:
        self.association = association
        self._send = send
        self._mtu = mtu
        self._on_remote_close = on_remote_close
        #: the (certificate, fingerprints) last matched: OpenSSL asks once per
        #: verification step and we check again after the handshake, three
        #: digests each time otherwise
        self._matched: tuple[bytes, list[tuple[str, str]]] | None = None

    async def run(self) -> None:
        association = self.association
        ssl = SSL.Connection(dtls_context(association.certificate))
        # The fingerprint check is this association's (see _verify_peer).
        ssl.set_app_data(self)
        ssl.set_ciphertext_mtu(self._mtu)
        association.ssl = ssl
        if association.role == "server":
            ssl.set_accept_state()
        else:
            ssl.set_connect_state()
        try:
            await self._handshake(ssl)
            self._derive_keys(ssl)
            association.established.set()
            await self._after_handshake(ssl)
        except DtlsError as exc:
            association.error = str(exc)
        except ConnectionError as exc:
            association.error = f"link closed during the handshake: {exc}"

    async def _flush(self, ssl: SSL.Connection) -> None:
        await flush(ssl, self._send, self._mtu)

    async def _handshake(self, ssl: SSL.Connection) -> None:
        while True:
            try:
                ssl.do_handshake()
                break
            except SSL.WantReadError:
                await self._flush(ssl)
                await self._next_record(ssl)
            except SSL.Error as exc:
                await self._flush(ssl)  # our fatal alert, if OpenSSL made one
                raise DtlsError(
                    self.association.error or f"DTLS handshake failed: {exc}"
                ) from exc
        await self._flush(ssl)
        certificate = ssl.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            raise DtlsError("the far end sent no certificate")
        self._match_fingerprint(certificate)

    async def _next_record(self, ssl: SSL.Connection) -> None:
        """One inbound record into OpenSSL, or a retransmission on its timer."""
        inbox = self.association.inbox
        timeout = ssl.DTLSv1_get_timeout()
        try:
            if timeout is None:
                data = await inbox.get()
            else:
                # Not wait_for: Python 3.11's wraps the get in a task, one
                # more loop pass for every record of the handshake.
                async with asyncio.timeout(timeout):
                    data = await inbox.get()
        except TimeoutError:
            ssl.DTLSv1_handle_timeout()
            await self._flush(ssl)
            return
        ssl.bio_write(data)

    def verify(self, cert: Any, depth: int) -> bool:
        if depth > 0:
            return True
        try:
            self._match_fingerprint(cert.to_cryptography())
        except DtlsError as exc:
            self.association.error = str(exc)
            return False
        return True

    def _match_fingerprint(self, certificate: x509.Certificate) -> None:
        supported = [
            f
            for f in self.association.remote_fingerprints
            if f.algorithm.lower() in ("sha-256", "sha-384", "sha-512")
        ]
        if not supported:
            raise DtlsError("no usable remote fingerprint was signalled")
        matching = (
            certificate.public_bytes(Encoding.DER),
            [(f.algorithm, f.value) for f in supported],
        )
        if matching == self._matched:
            return
        for fingerprint in supported:
            if fingerprint.value.upper() != certificate_digest(
                certificate, fingerprint.algorithm.lower()
            ):
                raise DtlsError(
                    "the far end's certificate does not match the signalled "
                    f"{fingerprint.algorithm} fingerprint"
                )
        self._matched = matching

    def _derive_keys(self, ssl: SSL.Connection) -> None:
        association = self.association
        selected = ssl.get_selected_srtp_profile()
        profile = next(
            (p for p in SRTP_PROFILES if p.openssl_profile == selected), None
        )
        if profile is None:
            raise DtlsError("no SRTP protection profile was negotiated (RFC 5764)")
        material = ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
        )
        client = profile.get_key_and_salt(material, 0)
        server = profile.get_key_and_salt(material, 1)
        tx_key, rx_key = (
            (server, client) if association.role == "server" else (client, server)
        )
        association.tx = srtp_session(tx_key, profile.libsrtp_profile, outbound=True)
        association.rx = srtp_session(rx_key, profile.libsrtp_profile, outbound=False)
        association.version = ssl.get_protocol_version_name()
        association.cipher = ssl.get_cipher_name()
        association.srtp_profile = selected.decode()

    async def _after_handshake(self, ssl: SSL.Connection) -> None:
        """Answer retransmitted flights; notice the far end's close_notify."""
        while True:
            await self._next_record(ssl)
            try:
                ssl.recv(1500)
            except SSL.ZeroReturnError:
                self.association.closed_by_remote = True
                await self._flush(ssl)
                self._on_remote_close(self.association)
                return
            except SSL.Error:
                pass
            await self._flush(ssl)
