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

One association's handshake runs in :mod:`agent.stack.association`; the
rehandshake span (announced, handshaking, ended) is the state machine of
:mod:`agent.stack.rehandshake`; records are read by :mod:`agent.stack.dtlsrecord`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import pylibsrtp
from aiortc import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtp import AnyRtcpPacket, RtcpPacket
from OpenSSL import SSL

from agent.stack.association import (
    AssociationRunner,
    DtlsAssociation,
    DtlsError,
    dtls_context,
    flush,
    pack_datagrams,
)
from agent.stack.certs import fingerprints, make_certificate, sha256_fingerprint
from agent.stack.dtlsrecord import client_hello_random, split_records
from agent.stack.rehandshake import RehandshakeEvent, RehandshakeMachine

logger = logging.getLogger(__name__)

#: Inbound SRTP under the previous keys is still accepted this long after a swap.
OLD_KEYS_GRACE_S = 2.0
#: After a close_notify, a new ClientHello within this window revives the call.
REVIVE_WINDOW_S = 1.0
#: A handshake not finished within this long has failed.
HANDSHAKE_TIMEOUT_S = 10.0
#: Largest datagram we send; DTLS records are packed up to it, never split.
DEFAULT_MTU = 1200
#: the fixed RTP header (RFC 3550 §5.1): V/P/X/CC, M/PT, seq, timestamp, SSRC
RTP_HEADER = struct.Struct("!BBHII")


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing, as aiortc does it: a second byte of
    192..208 (RTCP packet types SR..PSFB) is RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 208


class DtlsState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


class Link(Protocol):
    """What carries the datagrams: the ICE mux (``_recv``/``_send`` for DTLS;
    ``on_media``/``send_media`` for SRTP, synchronous, with arrival times)."""

    on_media: Callable[[bytes, float], None] | None

    async def _recv(self) -> bytes: ...
    async def _send(self, data: bytes) -> None: ...
    def send_media(self, data: bytes) -> None: ...


class RtpSink(Protocol):
    """The RTP receiver: gets each authenticated RTP packet's clear text with
    its header fields read (RFC 3550 §5.1) and its arrival (``time.monotonic``
    seconds, the kernel's when known), and each RTCP packet."""

    def rtp_received(
        self, packet: bytes, ssrc: int, seq: int, timestamp: int, at: float
    ) -> None: ...
    def rtcp_received(self, packet: AnyRtcpPacket) -> None: ...


class DtlsListener(Protocol):
    def on_dtls_state(self, state: str) -> None: ...
    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None: ...
    def on_dtls_rehandshake_ended(
        self, outcome: str, detail: dict[str, Any]
    ) -> None: ...


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
        self._certificate = certificate
        dtls_context(certificate)
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
        self._sink: RtpSink | None = None
        link.on_media = self._on_srtp
        self._pump: asyncio.Task[None] | None = None
        self._revive: asyncio.TimerHandle | None = None
        #: the rehandshake span (see :mod:`agent.stack.rehandshake`)
        self.rehandshake = RehandshakeMachine()
        self._tasks: set[asyncio.Task[None]] = set()
        self.srtp_errors = 0
        self.stray_dtls = 0

    # -- setup ---------------------------------------------------------------
    @property
    def certificate(self) -> RTCCertificate:
        """What future associations are signed with."""
        return self._certificate

    @certificate.setter
    def certificate(self, certificate: RTCCertificate) -> None:
        # Its SSL context now, not on the handshake's path (see dtls_context).
        self._certificate = certificate
        dtls_context(certificate)

    def set_receiver(self, sink: RtpSink) -> None:
        self._sink = sink

    def local_fingerprints(self) -> list[RTCDtlsFingerprint]:
        return fingerprints(self.certificate)

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
        runner = AssociationRunner(
            association, self._link._send, self.mtu, self._on_remote_close
        )
        association.task = asyncio.create_task(
            runner.run(),
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
        with :meth:`abort_rehandshake` (e.g. the re-offer was refused). While
        one is already announced, a second announcement joins it."""
        if self.rehandshake.handle(RehandshakeEvent.BEGIN).opened:
            self._listener.on_dtls_rehandshake_started(initiator, trigger, cause)

    def abort_rehandshake(self, why: str) -> None:
        self._end_rehandshake(RehandshakeEvent.FAIL, "failed", {"error": why})
        if self.current is not None and self.current.closed_by_remote:
            # The far end already dropped the old association: nothing left.
            self._set_state(DtlsState.FAILED)

    def start_association(
        self, role: str, remote_fingerprints: list[RTCDtlsFingerprint] | None = None
    ) -> DtlsAssociation | None:
        """Set up a new association on the live call in ``role`` (client: send
        a ClientHello now; server: wait for the far end's) for the announced
        rehandshake. None if one is already being set up or the transport is
        not connected."""
        if self.pending is not None or self.state is not DtlsState.CONNECTED:
            return None
        if remote_fingerprints is not None:
            self.remote_fingerprints = list(remote_fingerprints)
        association = self._new_association(role)
        self.rehandshake.handle(RehandshakeEvent.ASSOCIATE, association.number)
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
            self._end_rehandshake(
                RehandshakeEvent.FAIL, "failed", detail, association.number
            )
            if self.current is not None and self.current.closed_by_remote:
                # The far end dropped the old association and the new one failed.
                self._set_state(DtlsState.FAILED)
            return
        self._promote(association)
        self._end_rehandshake(
            RehandshakeEvent.COMPLETE, "completed", detail, association.number
        )

    def _end_rehandshake(
        self,
        event: RehandshakeEvent,
        outcome: str,
        detail: dict[str, Any],
        association: int | None = None,
    ) -> None:
        if self.rehandshake.handle(event, association).closed:
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

    async def _flush(self, ssl: SSL.Connection) -> None:
        await flush(ssl, self._link._send, self.mtu)

    def _on_remote_close(self, association: DtlsAssociation) -> None:
        if association is not self.current or self.pending is not None:
            return
        if not self.rehandshake.idle:
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
                    self._on_srtp(data, time.monotonic())
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
                # The far end started a new association on a live call (or
                # answered the re-offer of a rehandshake we announced).
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

    def _on_srtp(self, data: bytes, at: float) -> None:
        """One SRTP/SRTCP datagram that reached the host at ``at``; the hot
        path: no packet object, the header read with ``struct``."""
        rtcp = is_rtcp(data)
        plain = self._unprotect(data, rtcp)
        sink = self._sink
        if plain is None or sink is None:
            return
        if rtcp:
            # The receiver needs the far end's RTCP BYE (RFC 3550 §6.6): its
            # media stops being due then, so silence after it is no gap.
            try:
                packets = RtcpPacket.parse(plain)
            except ValueError:
                return
            for rtcp_packet in packets:
                sink.rtcp_received(rtcp_packet)
            return
        if len(plain) < 12 or plain[0] >> 6 != 2:
            return  # not RTP version 2 (RFC 3550 §5.1)
        _, _, seq, timestamp, ssrc = RTP_HEADER.unpack_from(plain)
        sink.rtp_received(plain, ssrc, seq, timestamp, at)

    def _unprotect(self, data: bytes, rtcp: bool) -> bytes | None:
        current = self.current
        if current is not None and current.rx is not None and not current.lost:
            try:
                if rtcp:
                    return current.rx.unprotect_rtcp(data)
                return current.rx.unprotect(data)
            except pylibsrtp.Error:
                pass
        previous = self._previous
        if previous is not None:
            if asyncio.get_running_loop().time() >= self._previous_until:
                self._previous = None
            elif previous.rx is not None and not previous.lost:
                try:
                    if rtcp:
                        return previous.rx.unprotect_rtcp(data)
                    return previous.rx.unprotect(data)
                except pylibsrtp.Error:
                    pass
        self.srtp_errors += 1
        return None

    # -- sending -------------------------------------------------------------
    def send_rtp(self, data: bytes) -> None:
        """Protect and send one RTP or RTCP packet now; ``ConnectionError``
        when DTLS is not connected or no ICE pair can carry it."""
        association = self.current
        if (
            self.state is not DtlsState.CONNECTED
            or association is None
            or association.lost
        ):
            raise ConnectionError("DTLS is not connected")
        assert association.tx is not None
        if 192 <= data[1] <= 208:  # RTCP (is_rtcp; RTP headers are 12+ bytes)
            protected = association.tx.protect_rtcp(data)
        else:
            protected = association.tx.protect(data)
        self._link.send_media(protected)

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
        self._end_rehandshake(
            RehandshakeEvent.STOP, "incomplete", {"error": "call ended"}
        )
        self._set_state(DtlsState.CLOSED)


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
