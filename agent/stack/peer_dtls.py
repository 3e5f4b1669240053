"""The DTLS side of a :class:`~agent.stack.peer.Peer`: rehandshakes it starts or
answers, SBC fail-over, and its certificates' lifetimes.

A part of ``Peer`` (a mixin, its methods typed ``self``) kept in its own
module so that each concern of the facade reads on its own. The rehandshake
span itself is :mod:`agent.stack.rehandshake`'s state machine, run by
:class:`~agent.stack.dtls.SrtpTransport`; expiry timing is
:func:`agent.stack.certs.expiry_delay_s` on the peer's wall clock.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiortc import RTCCertificate

from agent.errors import CallError, SignalingError
from agent.stack.certs import (
    DEFAULT_CERT_LIFETIME_S,
    certificate_info,
    expiry_delay_s,
    make_certificate,
    sha256_fingerprint,
)
from agent.stack.config import CertExpiryPolicy
from agent.stack.dtls import DtlsAssociation

if TYPE_CHECKING:
    from agent.stack.peer import Peer

logger = logging.getLogger(__name__)


class PeerDtls:
    """DTLS rehandshakes and certificates of a peer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self._expiry: asyncio.TimerHandle | None = None

    # -- DTLS rehandshake ------------------------------------------------------
    def remote_rehandshake(self, trigger: str) -> None:
        assert self.peer.negotiated is not None
        fingerprints = list(self.peer.negotiation.remote_fingerprints)
        pending = self.peer.dtls.pending
        if pending is not None:
            # The far end's ClientHello raced ahead of its re-offer.
            pending.remote_fingerprints = fingerprints
            self.peer.dtls.remote_fingerprints = fingerprints
            return
        if self.peer.dtls.state != "connected":
            return
        self.peer.dtls.begin_rehandshake("remote", trigger, None)
        self.peer.dtls.start_association(self.peer.negotiated.dtls_role, fingerprints)

    async def rehandshake_dtls(
        self,
        *,
        rotate_certificate: bool = True,
        ice_restart: bool = False,
        trigger: str = "step",
        cause: str | None = None,
    ) -> bool:
        """Start a new DTLS association on the live call; True if it completed.

        With ``rotate_certificate`` a new certificate is made and its
        fingerprint signalled by a re-offer (JSEP requires the far end to know
        it; RFC 8829/9429 §5.11 expects a fingerprint change only with an ICE
        restart, so ``ice_restart`` makes the same re-offer restart ICE too).
        Without it no signalling is needed: we send a ClientHello for a new
        association with the same certificates, whichever DTLS role we had.
        """
        if self.peer.negotiated is None or self.peer.dtls.state != "connected":
            raise CallError(
                f"{self.peer.name}: DTLS is not connected, cannot rehandshake"
            )
        if self.peer.dtls.pending is not None or not self.peer.dtls.rehandshake.idle:
            return False  # one is already under way
        self.peer.dtls.begin_rehandshake("local", trigger, cause)
        if not rotate_certificate and not ice_restart:
            return await self._association_done(
                self.peer.dtls.start_association("client")
            )
        if self.peer.renegotiate is None:
            self.peer.dtls.abort_rehandshake("no signalling channel for the re-offer")
            raise CallError(f"{self.peer.name}: no signalling channel to re-offer over")
        if rotate_certificate:
            self.use_certificate(
                make_certificate(
                    DEFAULT_CERT_LIFETIME_S, kind=self.peer.config.certificate
                ),
                trigger,
            )
        role = self.peer.negotiated.dtls_role
        association: DtlsAssociation | None = None
        if role == "server":
            # Ready before the far end can answer and send its ClientHello.
            association = self.peer.dtls.start_association("server")
        try:
            offer = await self.peer.create_offer(
                ice_restart=ice_restart, trigger=trigger, cause=cause
            )
            await self.peer._renegotiate(offer)
        except (SignalingError, TimeoutError, ConnectionError) as exc:
            if self.peer.pending is not None:
                self.peer.ice_side.fail_restart(
                    self.peer.pending, f"renegotiation failed: {exc}"
                )
            self.peer.dtls.abort_rehandshake(f"re-offer failed: {exc}")
            return False
        if role == "client":
            # The far end may have sent its ClientHello first: that one is ours.
            association = (
                self.peer.dtls.start_association("client") or self.peer.dtls.pending
            )
        return await self._association_done(association)

    async def _association_done(self, association: DtlsAssociation | None) -> bool:
        if association is None:
            self.peer.dtls.abort_rehandshake("another association is being set up")
            return False
        await asyncio.wait_for(
            association.settled.wait(), self.peer.dtls.handshake_timeout_s + 1.0
        )
        return self.peer.dtls.current is association

    async def fail_over(
        self, *, ice_restart: bool = True, cause: str = "sbc_failover"
    ) -> bool:
        """Act as a backup SBC taking over this side of the call: new
        certificate, no DTLS state (media under the old keys stops at once),
        optionally a new ICE generation, and a re-offer; a new handshake follows."""
        self.peer.dtls.drop_state()
        return await self.rehandshake_dtls(
            rotate_certificate=True,
            ice_restart=ice_restart,
            trigger="failover",
            cause=cause,
        )

    def far_end_rehandshake(self, trigger: str, cause: str) -> None:
        """The configured far-end profile reacts to an ICE or path change."""
        if self.peer.dtls.state != "connected" or self.peer.dtls.pending is not None:
            return

        async def rehandshake() -> None:
            try:
                await self.rehandshake_dtls(
                    rotate_certificate=False, trigger=trigger, cause=cause
                )
            except (CallError, SignalingError, TimeoutError) as exc:
                logger.info("%s: profile rehandshake failed: %s", self.peer.name, exc)

        self.peer._spawn(rehandshake())

    # -- certificates ----------------------------------------------------------
    def use_certificate(self, certificate: RTCCertificate, reason: str) -> None:
        """Sign future DTLS associations with ``certificate`` (and watch it)."""
        self.peer.certificate = certificate
        self.peer.dtls.certificate = certificate
        self.record_certificate(certificate, reason)
        self.watch_certificate()

    def stop_watching(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def record_certificate(self, certificate: RTCCertificate, reason: str) -> None:
        info = certificate_info(certificate)
        info.update(reason=reason, in_use_from_ms=round(self.peer._clock_ms(), 1))
        self.peer.certificates.append(info)
        self.peer._listener.on_certificate(info)

    def watch_certificate(self) -> None:
        """Act when the certificate in use expires (RFC 5280 notAfter)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        delay = expiry_delay_s(self.peer.certificate.expires, self.peer._wall_clock())
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self._certificate_expired)

    def _certificate_expired(self) -> None:
        self._expiry = None
        fingerprint = sha256_fingerprint(self.peer.certificate)
        if (
            self.peer.certificates
            and self.peer.certificates[-1]["fingerprint_sha256"] == fingerprint
        ):
            self.peer.certificates[-1]["expired_at_ms"] = round(
                self.peer._clock_ms(), 1
            )
        if self.peer._closing:
            return
        if self.peer.config.cert_expiry is CertExpiryPolicy.KEEP:
            self.peer._listener.on_certificate(
                {"fingerprint_sha256": fingerprint, "expired": True, "kept": True}
            )
            return
        self.peer._spawn(self._rotate_expired())

    async def _rotate_expired(self) -> None:
        try:
            await self.rehandshake_dtls(
                rotate_certificate=True, trigger="cert_expiry", cause="cert_expiry"
            )
        except (CallError, SignalingError, TimeoutError) as exc:
            logger.info(
                "%s: rotating the expired certificate failed: %s", self.peer.name, exc
            )
