"""DTLS-SRTP that survives rehandshakes: one transport, many DTLS associations.

aiortc's ``RTCDtlsTransport`` performs exactly one handshake: a remote
fingerprint change closes the peer connection, a second ClientHello is fed to
the established session (and ignored), and nothing can start a new handshake on
a live call. A test agent that must *perform, survive and count* rehandshakes
needs the association to be replaceable, so :class:`SrtpTransport` stands where
aiortc's transport stood (between the ICE mux and the RTP sender/receiver) and
owns a sequence of :class:`DtlsAssociation` objects, each a complete DTLS
handshake with its own SRTP keys (RFC 5764 §4.2, keys exported with the
``EXTRACTOR-dtls_srtp`` label).

Demultiplexing (RFC 7983 §7): datagrams whose first byte is 20..63 are DTLS,
128..191 SRTP/SRTCP. DTLS records go to the association being set up if there
is one, else to the current one. A plaintext ClientHello (epoch 0) whose random
no association has seen starts a **remote** rehandshake: a new association in
the server role is created for it — what a browser's "DTLS restart" or an SBC
that failed over to a backup looks like on the wire.

Key swap: when a new association completes, outbound SRTP switches to its keys
at once; inbound SRTP is tried against the current keys and then, for
:data:`OLD_KEYS_GRACE_S`, against the previous association's, so packets the far
end sent before it finished its side of the handshake still play.

A close_notify on the current association with nothing to replace it ends the
transport after :data:`REVIVE_WINDOW_S` unless a new ClientHello arrives
meanwhile (a far end that closes and handshakes again, as RFC 8842 §5 allows).

Only aiortc's certificate helper and SRTP profile table are borrowed; private
names are pinned in :mod:`agent.stack.pins`.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pylibsrtp
from aiortc import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcdtlstransport import SRTP_PROFILES, certificate_digest
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, is_rtcp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

logger = logging.getLogger(__name__)

#: Inbound SRTP under the previous keys is still accepted this long after a swap.
OLD_KEYS_GRACE_S = 2.0
#: After a close_notify, a new ClientHello within this window revives the call.
REVIVE_WINDOW_S = 1.0
#: A handshake not finished within this long has failed.
HANDSHAKE_TIMEOUT_S = 10.0
#: Largest datagram we send; DTLS records are packed up to it, never split.
DEFAULT_MTU = 1200
_RECORD_HEADER = 13


class DtlsState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


class DtlsError(Exception):
    """A DTLS association could not be set up (one sentence)."""


def make_certificate(
    lifetime_s: float = 30 * 86400.0, *, not_before: datetime.datetime | None = None
) -> RTCCertificate:
    """A self-signed ECDSA P-256 certificate valid for ``lifetime_s`` from now.

    WebRTC certificates are self-signed and authenticated by the fingerprint in
    SDP (RFC 8827 §6.5); a short lifetime lets a scenario make one expire
    mid-call.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = not_before or datetime.datetime.now(datetime.UTC)
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
    return RTCCertificate(key=key, cert=cert)


def sha256_fingerprint(certificate: RTCCertificate) -> str:
    return next(
        f.value for f in certificate.getFingerprints() if f.algorithm == "sha-256"
    )


def split_records(data: bytes) -> Iterator[bytes]:
    """Whole DTLS records of a buffer (RFC 6347 §4.1 header: length at 11..13)."""
    offset = 0
    while offset + _RECORD_HEADER <= len(data):
        length = int.from_bytes(data[offset + 11 : offset + 13], "big")
        end = offset + _RECORD_HEADER + length
        if end > len(data):
            return
        yield data[offset:end]
        offset = end


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


def client_hello_random(datagram: bytes) -> bytes | None:
    """The 32-byte random of a plaintext ClientHello's first fragment, else None.

    Record header 13 bytes (type 22 = handshake, epoch at 3..5), then the
    handshake header (type 1 = client_hello, fragment offset at 6..9 of it),
    then client_version (2 bytes) and the random.
    """
    if len(datagram) < _RECORD_HEADER + 12 + 2 + 32 or datagram[0] != 22:
        return None
    if datagram[3:5] != b"\x00\x00" or datagram[13] != 1:
        return None
    if datagram[13 + 6 : 13 + 9] != b"\x00\x00\x00":
        return None
    start = _RECORD_HEADER + 12 + 2
    return datagram[start : start + 32]


class Link(Protocol):
    """What carries the datagrams: the ICE mux (``_recv``/``_send``)."""

    async def _recv(self) -> bytes: ...
    async def _send(self, data: bytes) -> None: ...


class RtpSink(Protocol):
    async def _handle_rtp_packet(
        self, packet: RtpPacket, arrival_time_ms: int
    ) -> None: ...


class DtlsListener(Protocol):
    def on_dtls_state(self, state: str) -> None: ...
    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None: ...
    def on_dtls_rehandshake_ended(
        self, outcome: str, detail: dict[str, Any]
    ) -> None: ...


@dataclass(eq=False)
class DtlsAssociation:
    """One DTLS handshake and the SRTP keys it exported."""

    number: int
    role: str  # "client" or "server"
    certificate: RTCCertificate
    remote_fingerprints: list[RTCDtlsFingerprint]
    inbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    randoms: set[bytes] = field(default_factory=set)
    tx: pylibsrtp.Session | None = None
    rx: pylibsrtp.Session | None = None
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


class SrtpTransport:
    """The call's DTLS-SRTP: a sequence of associations over one ICE link."""

    def __init__(
        self,
        link: Link,
        certificate: RTCCertificate,
        listener: DtlsListener,
        *,
        name: str = "dtls",
        mtu: int = DEFAULT_MTU,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self._link = link
        self.certificate = certificate
        self._listener = listener
        self.name = name
        self.mtu = mtu
        self.handshake_timeout_s = handshake_timeout_s
        self.state = DtlsState.NEW
        self.associations: list[DtlsAssociation] = []
        self.current: DtlsAssociation | None = None
        self.pending: DtlsAssociation | None = None
        self._previous: DtlsAssociation | None = None
        self._previous_until = 0.0
        self.remote_fingerprints: list[RTCDtlsFingerprint] = []
        self.role = "client"
        self._ext_map = HeaderExtensionsMap()
        self._sink: RtpSink | None = None
        self._pump: asyncio.Task[None] | None = None
        self._revive: asyncio.TimerHandle | None = None
        self._rehandshake_open = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.srtp_errors = 0
        self.stray_dtls = 0

    # -- setup ---------------------------------------------------------------
    def set_receiver(self, sink: RtpSink, parameters: RTCRtpReceiveParameters) -> None:
        self._ext_map.configure(parameters)
        self._sink = sink

    def local_fingerprints(self) -> list[RTCDtlsFingerprint]:
        return self.certificate.getFingerprints()

    async def start(
        self, role: str, remote_fingerprints: list[RTCDtlsFingerprint]
    ) -> None:
        """The initial handshake; returns when connected, or failed."""
        self.role = role
        self.remote_fingerprints = list(remote_fingerprints)
        association = self._new_association(role)
        self.pending = association
        self._set_state(DtlsState.CONNECTING)
        self._pump = asyncio.create_task(self._receive(), name=f"{self.name}-rx")
        await self._run_until_established(association)
        self.pending = None
        association.settled.set()
        if association.error is not None:
            logger.info("%s: %s", self.name, association.error)
            self._set_state(DtlsState.FAILED)
            return
        self._promote(association)
        self._set_state(DtlsState.CONNECTED)

    def _new_association(self, role: str) -> DtlsAssociation:
        association = DtlsAssociation(
            number=len(self.associations),
            role=role,
            certificate=self.certificate,
            remote_fingerprints=list(self.remote_fingerprints),
        )
        self.associations.append(association)
        association.task = asyncio.create_task(
            self._association(association),
            name=f"{self.name}-assoc{association.number}",
        )
        return association

    async def _run_until_established(self, association: DtlsAssociation) -> None:
        assert association.task is not None
        waiter = asyncio.ensure_future(association.established.wait())
        try:
            await asyncio.wait(
                {waiter, association.task},
                timeout=self.handshake_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if not association.established.is_set() and association.error is None:
            association.error = (
                f"DTLS handshake not finished after {self.handshake_timeout_s:.0f} s"
            )
            association.task.cancel()

    # -- rehandshakes --------------------------------------------------------
    def begin_rehandshake(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        """Announce a rehandshake (the observer opens its span); the new
        association follows with :meth:`start_association`, or the attempt ends
        with :meth:`abort_rehandshake` (e.g. the re-offer was refused)."""
        self._rehandshake_open = True
        self._listener.on_dtls_rehandshake_started(initiator, trigger, cause)

    def abort_rehandshake(self, why: str) -> None:
        self._end_rehandshake("failed", {"error": why})
        if self.current is not None and self.current.closed_by_remote:
            # The far end already dropped the old association: nothing left.
            self._set_state(DtlsState.FAILED)

    def start_association(
        self, role: str, remote_fingerprints: list[RTCDtlsFingerprint] | None = None
    ) -> DtlsAssociation | None:
        """Set up a new association on the live call in ``role`` (client: send
        a ClientHello now; server: wait for the far end's). None if one is
        already being set up or the transport is not connected."""
        if self.pending is not None or self.state is not DtlsState.CONNECTED:
            return None
        if remote_fingerprints is not None:
            self.remote_fingerprints = list(remote_fingerprints)
        association = self._new_association(role)
        self.pending = association
        task = asyncio.create_task(self._finish_rehandshake(association))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return association

    def drop_state(self) -> None:
        """Forget the current association's keys (an SBC that failed over to a
        backup with no DTLS state): no media is sent or accepted under them."""
        if self.current is not None:
            self.current.lost = True
        self._previous = None

    async def _finish_rehandshake(self, association: DtlsAssociation) -> None:
        before = None if self.current is None else self.current.describe()
        await self._run_until_established(association)
        if self.pending is association:
            self.pending = None
        association.settled.set()
        detail: dict[str, Any] = {"before": before, "after": association.describe()}
        if association.error is not None:
            detail["error"] = association.error
            self._end_rehandshake("failed", detail)
            if self.current is not None and self.current.closed_by_remote:
                # The far end dropped the old association and the new one failed.
                self._set_state(DtlsState.FAILED)
            return
        self._promote(association)
        self._end_rehandshake("completed", detail)

    def _end_rehandshake(self, outcome: str, detail: dict[str, Any]) -> None:
        if self._rehandshake_open:
            self._rehandshake_open = False
            self._listener.on_dtls_rehandshake_ended(outcome, detail)

    def _promote(self, association: DtlsAssociation) -> None:
        loop = asyncio.get_running_loop()
        previous = self.current
        self.current = association
        self.role = association.role
        if self._revive is not None:
            self._revive.cancel()
            self._revive = None
        if previous is not None and previous is not association:
            self._previous = previous
            self._previous_until = loop.time() + OLD_KEYS_GRACE_S
            if previous.task is not None:
                previous.task.cancel()

    # -- one association ----------------------------------------------------
    async def _association(self, association: DtlsAssociation) -> None:
        context = association.certificate._create_ssl_context(
            srtp_profiles=SRTP_PROFILES
        )
        # Check the far end's certificate against the signalled fingerprint
        # *during* the handshake, so a mismatch aborts it with a fatal alert
        # that the far end sees too (not a silent switch to keys only one
        # side accepted).
        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            lambda _c, cert, _e, depth, _ok: self._verify(association, cert, depth),
        )
        # Our MTU, not OpenSSL's guess: handshake messages are fragmented to
        # fit it (RFC 6347 §4.2.3), which is what gets a certificate flight
        # through a path that drops large datagrams.
        context.set_options(SSL.OP_NO_QUERY_MTU)
        ssl = SSL.Connection(context)
        ssl.set_ciphertext_mtu(self.mtu)
        association.ssl = ssl
        if association.role == "server":
            ssl.set_accept_state()
        else:
            ssl.set_connect_state()
        try:
            await self._handshake(association, ssl)
            self._derive_keys(association, ssl)
            association.established.set()
            await self._after_handshake(association, ssl)
        except DtlsError as exc:
            association.error = str(exc)
        except ConnectionError as exc:
            association.error = f"link closed during the handshake: {exc}"

    async def _handshake(
        self, association: DtlsAssociation, ssl: SSL.Connection
    ) -> None:
        while True:
            try:
                ssl.do_handshake()
                break
            except SSL.WantReadError:
                await self._flush(ssl)
                await self._next_record(association, ssl)
            except SSL.Error as exc:
                await self._flush(ssl)  # our fatal alert, if OpenSSL made one
                raise DtlsError(
                    association.error or f"DTLS handshake failed: {exc}"
                ) from exc
        await self._flush(ssl)
        self._check_fingerprint(association, ssl)

    async def _next_record(
        self, association: DtlsAssociation, ssl: SSL.Connection
    ) -> None:
        """One inbound record into OpenSSL, or a retransmission on its timer."""
        timeout = ssl.DTLSv1_get_timeout()
        try:
            if timeout is None:
                data = await association.inbox.get()
            else:
                data = await asyncio.wait_for(association.inbox.get(), timeout)
        except TimeoutError:
            ssl.DTLSv1_handle_timeout()
            await self._flush(ssl)
            return
        ssl.bio_write(data)

    def _verify(self, association: DtlsAssociation, cert: Any, depth: int) -> bool:
        if depth > 0:
            return True
        try:
            self._match_fingerprint(association, cert.to_cryptography())
        except DtlsError as exc:
            association.error = str(exc)
            return False
        return True

    def _check_fingerprint(
        self, association: DtlsAssociation, ssl: SSL.Connection
    ) -> None:
        certificate = ssl.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            raise DtlsError("the far end sent no certificate")
        self._match_fingerprint(association, certificate)

    def _match_fingerprint(
        self, association: DtlsAssociation, certificate: x509.Certificate
    ) -> None:
        supported = [
            f
            for f in association.remote_fingerprints
            if f.algorithm.lower() in ("sha-256", "sha-384", "sha-512")
        ]
        if not supported:
            raise DtlsError("no usable remote fingerprint was signalled")
        for fingerprint in supported:
            if fingerprint.value.upper() != certificate_digest(
                certificate, fingerprint.algorithm.lower()
            ):
                raise DtlsError(
                    "the far end's certificate does not match the signalled "
                    f"{fingerprint.algorithm} fingerprint"
                )

    def _derive_keys(self, association: DtlsAssociation, ssl: SSL.Connection) -> None:
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
        association.tx = _srtp_session(tx_key, profile.libsrtp_profile, outbound=True)
        association.rx = _srtp_session(rx_key, profile.libsrtp_profile, outbound=False)
        association.version = ssl.get_protocol_version_name()
        association.cipher = ssl.get_cipher_name()
        association.srtp_profile = selected.decode()

    async def _after_handshake(
        self, association: DtlsAssociation, ssl: SSL.Connection
    ) -> None:
        """Answer retransmitted flights; notice the far end's close_notify."""
        while True:
            await self._next_record(association, ssl)
            try:
                ssl.recv(1500)
            except SSL.ZeroReturnError:
                association.closed_by_remote = True
                await self._flush(ssl)
                self._on_remote_close(association)
                return
            except SSL.Error:
                pass
            await self._flush(ssl)

    async def _flush(self, ssl: SSL.Connection) -> None:
        chunks = []
        while True:
            try:
                chunk = ssl.bio_read(65536)
            except SSL.Error:
                break
            if not chunk:
                break
            chunks.append(chunk)
        for datagram in pack_datagrams(b"".join(chunks), self.mtu):
            await self._link._send(datagram)

    def _on_remote_close(self, association: DtlsAssociation) -> None:
        if association is not self.current or self.pending is not None:
            return
        if self._rehandshake_open:
            # We asked for a new association (a re-offer with a new
            # fingerprint): the far end dropping the old one is expected, and
            # the rehandshake's outcome decides what becomes of the call.
            return
        logger.info("%s: far end sent close_notify", self.name)
        loop = asyncio.get_running_loop()
        self._revive = loop.call_later(REVIVE_WINDOW_S, self._closed_for_good)

    def _closed_for_good(self) -> None:
        self._revive = None
        if self.pending is None:
            self._set_state(DtlsState.CLOSED)

    # -- the receive pump ---------------------------------------------------
    async def _receive(self) -> None:
        try:
            while True:
                data = await self._link._recv()
                if not data:
                    continue
                first = data[0]
                if 20 <= first < 64:
                    self._on_dtls(data)
                elif 128 <= first < 192:
                    await self._on_srtp(data)
        except ConnectionError:
            if self.state is not DtlsState.FAILED:
                self._set_state(DtlsState.CLOSED)

    def _on_dtls(self, data: bytes) -> None:
        random = client_hello_random(data)
        if random is not None:
            owner = next((a for a in self.associations if random in a.randoms), None)
            if owner is not None:
                owner.inbox.put_nowait(data)  # a retransmitted ClientHello
                return
            pending = self.pending
            if pending is not None and pending.role == "server" and not pending.randoms:
                pending.randoms.add(random)
                pending.inbox.put_nowait(data)
                return
            if pending is None and self.state is DtlsState.CONNECTED:
                # The far end started a new association on a live call.
                self.begin_rehandshake("remote", "client_hello", None)
                association = self.start_association("server")
                if association is not None:
                    association.randoms.add(random)
                    association.inbox.put_nowait(data)
                    return
        target = self.pending or self.current
        if target is None:
            self.stray_dtls += 1
            return
        target.inbox.put_nowait(data)

    async def _on_srtp(self, data: bytes) -> None:
        rtcp = is_rtcp(data)
        plain = self._unprotect(data, rtcp)
        if plain is None or rtcp or self._sink is None:
            return
        try:
            packet = RtpPacket.parse(plain, self._ext_map)
        except ValueError:
            return
        arrival_ms = int(asyncio.get_running_loop().time() * 1000)
        await self._sink._handle_rtp_packet(packet, arrival_time_ms=arrival_ms)

    def _unprotect(self, data: bytes, rtcp: bool) -> bytes | None:
        candidates = [self.current]
        if self._previous is not None:
            if asyncio.get_running_loop().time() < self._previous_until:
                candidates.append(self._previous)
            else:
                self._previous = None
        for association in candidates:
            if association is None or association.rx is None or association.lost:
                continue
            try:
                if rtcp:
                    return bytes(association.rx.unprotect_rtcp(data))
                return bytes(association.rx.unprotect(data))
            except pylibsrtp.Error:
                continue
        self.srtp_errors += 1
        return None

    # -- sending -------------------------------------------------------------
    async def send_rtp(self, data: bytes) -> None:
        association = self.current
        if (
            self.state is not DtlsState.CONNECTED
            or association is None
            or association.lost
        ):
            raise ConnectionError("DTLS is not connected")
        assert association.tx is not None
        if is_rtcp(data):
            protected = association.tx.protect_rtcp(data)
        else:
            protected = association.tx.protect(data)
        await self._link._send(protected)

    # -- state, teardown -----------------------------------------------------
    def _set_state(self, state: DtlsState) -> None:
        if state is self.state or self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return
        self.state = state
        self._listener.on_dtls_state(str(state))

    async def stop(self) -> None:
        """Send close_notify on the current association and stop (idempotent)."""
        if self._revive is not None:
            self._revive.cancel()
        current = self.current
        if (
            current is not None
            and current.ssl is not None
            and not current.closed_by_remote
        ):
            try:
                current.ssl.shutdown()
            except SSL.Error:
                pass
            try:
                await self._flush(current.ssl)
            except ConnectionError:
                pass
        tasks = [a.task for a in self.associations if a.task is not None]
        tasks.extend(self._tasks)
        if self._pump is not None:
            tasks.append(self._pump)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._end_rehandshake("incomplete", {"error": "call ended"})
        self._set_state(DtlsState.CLOSED)


def _srtp_session(key: bytes, profile: int, *, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            if outbound
            else pylibsrtp.Policy.SSRC_ANY_INBOUND
        ),
        srtp_profile=profile,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


__all__ = [
    "DtlsAssociation",
    "DtlsError",
    "DtlsListener",
    "DtlsState",
    "SrtpTransport",
    "client_hello_random",
    "make_certificate",
    "pack_datagrams",
    "sha256_fingerprint",
    "split_records",
]
