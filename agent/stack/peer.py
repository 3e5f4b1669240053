"""A JSEP peer built from aiortc's ORTC objects, with SDP under our control.

Why not ``RTCPeerConnection``: aiortc's peer connection rebuilds codec and header
extension tables on every ``createOffer`` (renumbering payload types and extmap
IDs, which Chromium rejects or which silently stops media), answers an ICE restart
with the old credentials, and closes itself on a fingerprint change. A test agent
that must *survive and count* restarts and rehandshakes needs the negotiation in
its own hands, so :class:`Peer` composes aiortc's public ORTC objects
(``RTCIceGatherer``, ``RTCIceTransport``, ``RTCCertificate``) with our own DTLS
transport.

:class:`Peer` is a facade; each concern lives in its own module:

===========================  ==================================================
offer/answer, glare          :mod:`agent.stack.negotiation` (state machine, no I/O)
SDP reading and writing      :mod:`agent.stack.sdp` (no I/O)
ICE generations (restarts)   :mod:`agent.stack.generations`, :mod:`agent.stack.ice`
liveness, consent, recovery  :mod:`agent.stack.liveness` (decisions on a clock)
DTLS, rehandshakes           :mod:`agent.stack.dtls`, :mod:`agent.stack.rehandshake`
certificates and expiry      :mod:`agent.stack.certs`
settings, listener           :mod:`agent.stack.config`, :mod:`agent.stack.listener`
===========================  ==================================================

What stays here is the I/O that glues them: gathering before describing,
starting a generation after an answer, starting media once ICE and DTLS are up,
the liveness task, the certificate timer, teardown. States mirror the browser's
``RTCPeerConnectionState``: new, connecting, connected, disconnected, failed,
closed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCCertificate, RTCIceParameters, RTCIceTransport, sdp

from agent.errors import CallError, SignalingError
from agent.stack.certs import (
    DEFAULT_CERT_LIFETIME_S,
    WallClock,
    certificate_info,
    make_certificate,
    utc_now,
)
from agent.stack.config import (
    CertExpiryPolicy,
    CertificateKind,
    FarEndProfile,
    IceProfile,
    PeerConfig,
    PeerState,
    RecoveryPolicy,
)
from agent.stack.dtls import SrtpTransport
from agent.stack.generations import IceGeneration, IceGenerations, Restart
from agent.stack.ice import (
    AgentIceGatherer,
    DatagramFilter,
    IceMux,
    SelectedPair,
    SideNet,
    WireDirection,
)
from agent.stack.listener import NullListener, PeerListener, Renegotiate
from agent.stack.liveness import (
    ends_call,
    peer_state,
)
from agent.stack.media import RtpAudioReceiver, RtpAudioSender
from agent.stack.negotiation import Negotiator
from agent.stack.peer_dtls import PeerDtls
from agent.stack.peer_hold import PeerHold
from agent.stack.peer_ice import PeerIce
from agent.stack.sdp import LocalSource, Negotiated, parse_sdp

logger = logging.getLogger(__name__)


class Peer:
    """One side of a call: ICE + DTLS-SRTP + Opus audio, negotiated by JSEP."""

    def __init__(
        self,
        config: PeerConfig,
        listener: PeerListener,
        clock_ms: Callable[[], float],
        *,
        name: str = "peer",
        wall_clock: WallClock = utc_now,
    ) -> None:
        self.config = config
        self.name = name
        self._listener = listener
        self._clock_ms = clock_ms
        self._wall_clock = wall_clock
        self.certificate = make_certificate(
            config.certificate_lifetime_s or DEFAULT_CERT_LIFETIME_S,
            kind=config.certificate,
        )
        self.certificates: list[dict[str, Any]] = []
        self.mux = IceMux()
        self.dtls = SrtpTransport(
            self.mux, self.certificate, self, name=f"{name}-dtls", mtu=config.dtls_mtu
        )
        self._pairs: dict[int, SelectedPair] = {}
        self.ssrc = config.rng.randrange(1, 1 << 32)
        self.cname = str(uuid.UUID(int=config.rng.getrandbits(128)))
        self.negotiation = Negotiator(
            audio=config.audio, session_id=config.rng.randrange(1, 1 << 62)
        )
        self.state = PeerState.NEW
        self._liveness = PeerState.CONNECTED
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.sender: RtpAudioSender | None = None
        self.receiver: RtpAudioReceiver | None = None
        self.error: str | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: far end of renegotiations we start (ICE restarts); set by the call
        self.renegotiate: Renegotiate | None = None
        self.ice_generations = IceGenerations(
            config,
            listener,
            on_selected_pair=self._on_selected_pair,
            on_state=self._on_ice_state,
        )
        self._rolled_back = False
        #: the peer's DTLS, ICE and hold behaviour, one collaborator each
        self.dtls_side = PeerDtls(self)
        self.ice_side = PeerIce(self)
        self.hold = PeerHold(self)
        self.dtls_side.record_certificate(self.certificate, "initial")
        self.ice_generations.new()

    # -- views -------------------------------------------------------------
    @property
    def negotiated(self) -> Negotiated | None:
        return self.negotiation.negotiated

    @property
    def generations(self) -> list[IceGeneration]:
        return self.ice_generations.all

    @property
    def current(self) -> IceGeneration | None:
        return self.ice_generations.current

    @property
    def pending(self) -> IceGeneration | None:
        """The ICE restart being negotiated or checked, if any."""
        return self.ice_generations.pending

    @property
    def restart_idle(self) -> asyncio.Event:
        return self.ice_generations.restart_idle

    @property
    def ice(self) -> RTCIceTransport:
        return self.ice_generations.active.transport

    @property
    def gatherer(self) -> AgentIceGatherer:
        return self.ice_generations.negotiating.gatherer

    @property
    def ice_generation(self) -> int:
        return self.ice_generations.active.number

    @property
    def selected_pair(self) -> SelectedPair | None:
        current = self.current
        return None if current is None else current.connection.selected_pair

    async def restart_settled(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until no ICE restart is under way (it completed or failed)."""
        await asyncio.wait_for(self.restart_idle.wait(), timeout)

    def _on_selected_pair(self, pair: SelectedPair, number: int) -> None:
        previous = self._pairs.get(number)
        self._pairs[number] = pair
        self._listener.on_selected_pair(pair, number)
        if (
            previous is not None
            and previous.remote != pair.remote
            and self.config.dtls_profile is FarEndProfile.ON_SOURCE_CHANGE
        ):
            # Equipment that ties DTLS state to the remote address.
            self.dtls_side.far_end_rehandshake("source_change", "source_change")

    # -- JSEP ------------------------------------------------------------
    def _source(self) -> LocalSource:
        return LocalSource(ssrc=self.ssrc, cname=self.cname)

    async def create_offer(
        self,
        *,
        ice_restart: bool = False,
        trigger: str = "step",
        cause: str | None = None,
    ) -> str:
        """Gather, then return a complete (non-trickle) offer.

        With ``ice_restart`` (RFC 8445 §9, JSEP §5.2.1 ``iceRestart``) the offer
        carries a new ufrag/pwd and new candidates of a new generation.
        """
        if self.negotiation.create_offer():
            self.generations[0].connection.ice_controlling = True
        elif ice_restart and self.pending is None:
            self.ice_generations.new(("local", trigger, cause))
        generation = self.ice_generations.negotiating
        await generation.gatherer.gather()
        transport = generation.local_transport(self.dtls.local_fingerprints())
        return self.negotiation.offer(transport, self._source())

    async def accept_offer(self, offer_sdp: str) -> str:
        """Apply a remote offer (initial or re-offer) and return our answer."""
        offer = self.negotiation.receive_offer(offer_sdp)
        if offer.rolled_back:
            # Glare and we are polite: our own restart gives way.
            self._rolled_back = True
            rolled_back = self.ice_generations.roll_back_pending()
            if rolled_back is not None:
                self._spawn(rolled_back.transport.stop())
        meaning = self.negotiation.apply_offer(
            offer, self.ice_generations.negotiating.remote
        )
        if meaning.ice_restart:
            # The far end restarted ICE: answer with a real new generation
            # (RFC 8839 §4.4.1.1.1), not aiortc's old credentials.
            self.ice_generations.new(("remote", "remote", None))
        generation = self.ice_generations.negotiating
        try:
            await generation.apply_remote(offer.audio)
            await generation.gatherer.gather()
        except BaseException:
            self.negotiation.abandon_remote_offer()
            raise
        transport = generation.local_transport(self.dtls.local_fingerprints())
        answer = self.negotiation.answer(transport, self._source())
        self.ice_side.start_generation(generation)
        if meaning.fingerprint_changed:
            # A new remote certificate means a new DTLS association (a
            # browser's "DTLS restart", an SBC's backup): set it up in our role.
            self.dtls_side.remote_rehandshake("fingerprint_change")
        await self.hold.follow()
        return answer

    async def accept_answer(self, answer_sdp: str) -> None:
        """Apply the remote answer to our offer; the offered generation connects."""
        audio = self.negotiation.receive_answer(answer_sdp)
        generation = self.ice_generations.negotiating
        if self.ice_side.rejects_restart(generation, audio):
            return
        await generation.apply_remote(audio)
        self.ice_side.start_generation(generation)
        await self.hold.follow()

    async def accept_ice_restart(
        self, ufrag: str, pwd: str, candidates: list[str], *, end: bool = False
    ) -> tuple[str, str, list[str]]:
        """Apply a remote ICE restart (e.g. a WHIP PATCH sdpfrag, RFC 9725 §4.4).

        Returns our new local ufrag, pwd and candidate lines (``candidate:...``).
        """
        if self.negotiated is None:
            raise SignalingError("ICE restart before the call was negotiated")
        generation = self.ice_generations.new(("remote", "remote", None))
        generation.remote = RTCIceParameters(usernameFragment=ufrag, password=pwd)
        for line in candidates:
            await generation.add_candidate(line)
        await generation.gatherer.gather()
        if end:
            # After our own gathering: aioice's end-of-candidates must not
            # cut our local candidates short.
            await generation.transport.addRemoteCandidate(None)
        self.ice_side.start_generation(generation)
        local = generation.gatherer.getLocalParameters()
        lines = [
            "candidate:" + sdp.candidate_to_sdp(c)
            for c in generation.gatherer.getLocalCandidates()
        ]
        return str(local.usernameFragment), str(local.password), lines

    async def add_remote_candidate(self, candidate_line: str | None) -> None:
        """Trickle one remote candidate (``a=candidate`` value) or end-of-candidates."""
        await self.ice_generations.negotiating.add_candidate(candidate_line)

    async def _renegotiate(self, offer: str) -> None:
        """Send our re-offer, apply the answer; our offer is withdrawn on failure."""
        assert self.renegotiate is not None
        try:
            answer = await asyncio.wait_for(
                self.renegotiate(offer), timeout=self.config.restart_timeout_s
            )
            await self.accept_answer(answer)
        except (SignalingError, TimeoutError, ConnectionError):
            self.negotiation.abandon_local_offer()
            raise

    # -- what a call or a scenario step asks of the peer ----------------------
    async def restart_ice(
        self, *, trigger: str = "step", cause: str | None = None
    ) -> bool:
        """Restart ICE from this side (see :meth:`PeerIce.restart_ice`)."""
        return await self.ice_side.restart_ice(trigger=trigger, cause=cause)

    async def rehandshake_dtls(
        self,
        *,
        rotate_certificate: bool = True,
        ice_restart: bool = False,
        trigger: str = "step",
        cause: str | None = None,
    ) -> bool:
        """A new DTLS association (see :meth:`PeerDtls.rehandshake_dtls`)."""
        return await self.dtls_side.rehandshake_dtls(
            rotate_certificate=rotate_certificate,
            ice_restart=ice_restart,
            trigger=trigger,
            cause=cause,
        )

    async def fail_over(
        self, *, ice_restart: bool = True, cause: str = "sbc_failover"
    ) -> bool:
        """Act as a backup SBC taking over (see :meth:`PeerDtls.fail_over`)."""
        return await self.dtls_side.fail_over(ice_restart=ice_restart, cause=cause)

    def use_certificate(self, certificate: RTCCertificate, reason: str) -> None:
        """Sign future DTLS associations with ``certificate``, and watch its
        expiry."""
        self.dtls_side.use_certificate(certificate, reason)

    # -- media -------------------------------------------------------------
    async def _start_media(self) -> None:
        neg = self.negotiated
        assert neg is not None
        try:
            if neg.receives:
                self.receiver = RtpAudioReceiver(
                    listener=self._listener.on_rtp,
                    clock_ms=self._clock_ms,
                    decode=self.config.decode,
                    on_bye=self._listener.on_rtp_bye,
                )
                self.dtls.set_receiver(self.receiver)
            await self.dtls.start(neg.dtls_role, self.negotiation.remote_fingerprints)
            if self.dtls.state != "connected":
                return
            self.dtls_side.watch_certificate()
            if neg.sends:
                self.sender = RtpAudioSender(
                    send=self.dtls.send_rtp,
                    ssrc=self.ssrc,
                    payload_type=neg.payload_type,
                    packet_ms=self.config.packet_ms,
                    rng=self.config.rng,
                    clock_ms=self._clock_ms,
                )
                self.sender.start()
            self._spawn(self.ice_side.monitor_liveness())
        except ConnectionError:
            raise
        except Exception as exc:  # aiortc internals: report, do not crash the run
            logger.exception("%s: connecting failed", self.name)
            self.error = f"connecting failed: {exc}"
            self._set_state(PeerState.FAILED)

    # -- states ----------------------------------------------------------
    def _on_ice_state(self, generation: IceGeneration) -> None:
        self._listener.on_ice_state(generation.transport.state, generation.number)
        if generation is self.ice_generations.active:
            self._update_state()

    # DtlsListener (from SrtpTransport)
    def on_dtls_state(self, state: str) -> None:
        at = self.config.net.dtls_arrival_ms(self._clock_ms())  # last flight in
        self._listener.on_dtls_state(state, at if state == "connected" else None)
        self._update_state()

    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        self._listener.on_dtls_rehandshake_started(initiator, trigger, cause)

    def on_dtls_rehandshake_ended(self, outcome: str, detail: dict[str, Any]) -> None:
        if outcome == "completed" and self.negotiated is not None:
            # A ClientHello-started association may have swapped the roles.
            self.negotiated.dtls_role = self.dtls.role
        self._listener.on_dtls_rehandshake_ended(outcome, detail)

    def _update_state(self) -> None:
        if self.state is PeerState.CLOSED:
            return
        self._set_state(
            peer_state(
                self.ice.state,
                self.dtls.state,
                self._liveness,
                restart_pending=self.pending is not None,
            )
        )

    def _set_state(self, state: PeerState) -> None:
        if state is self.state:
            return
        self.state = state
        self._listener.on_connection_state(state)
        if state is PeerState.CONNECTED:
            self.connected.set()
        if ends_call(
            state,
            self.config.recovery,
            can_renegotiate=self.renegotiate is not None,
            was_connected=self.connected.is_set(),
        ):
            self.ended.set()

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109
        waiter = asyncio.create_task(self.connected.wait())
        ender = asyncio.create_task(self.ended.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, ender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            ender.cancel()
        if not self.connected.is_set():
            if not done:
                raise CallError(
                    f"{self.name}: not connected after {timeout:.0f} s "
                    f"(ICE {self.ice.state}, DTLS {self.dtls.state})"
                )
            raise CallError(
                f"{self.name}: call {self.state} before connecting"
                + (f" ({self.error})" if self.error else "")
            )

    # -- teardown --------------------------------------------------------
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Hang up: stop media, send DTLS close_notify, close ICE (idempotent).

        Runs in full even when the far end already closed the call, so our own
        sockets and tasks are always released.
        """
        if self._closing:
            return
        self._closing = True
        self.negotiation.close()
        self.dtls_side.stop_watching()
        if self.sender is not None:
            await self.sender.stop()
        for task in list(self._tasks):
            task.cancel()
        generation_tasks = self.ice_generations.tasks()
        for task in generation_tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, *generation_tasks, return_exceptions=True)
        await self.dtls.stop()
        self.mux.close()
        for generation in self.generations:
            await generation.transport.stop()
        self._set_state(PeerState.CLOSED)


__all__ = [
    "CertExpiryPolicy",
    "CertificateKind",
    "DatagramFilter",
    "FarEndProfile",
    "IceGeneration",
    "IceProfile",
    "Negotiated",
    "NullListener",
    "Peer",
    "PeerConfig",
    "PeerListener",
    "PeerState",
    "RecoveryPolicy",
    "Renegotiate",
    "Restart",
    "SelectedPair",
    "SideNet",
    "WireDirection",
    "certificate_info",
    "parse_sdp",
]
