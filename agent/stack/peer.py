"""A JSEP peer built from aiortc's ORTC objects, with SDP under our control.

Why not ``RTCPeerConnection``: aiortc's peer connection rebuilds codec and header
extension tables on every ``createOffer`` (renumbering payload types and extmap
IDs, which Chromium rejects or which silently stops media), answers an ICE restart
with the old credentials, and closes itself on a fingerprint change. Its state
lives in name-mangled attributes. A test agent that must *survive and count*
restarts and rehandshakes needs the negotiation in its own hands, so :class:`Peer`
composes aiortc's public ORTC objects — ``RTCIceGatherer``, ``RTCIceTransport``,
``RTCDtlsTransport``, ``RTCCertificate`` — and writes and reads SDP with
``aiortc.sdp``.

One peer = one BUNDLEd transport carrying one Opus audio m-section (RFC 8843
BUNDLE, RFC 5761 rtcp-mux, RFC 8829/9429 JSEP). Sections we do not support in a
remote offer (video, data) are rejected with port 0 as JSEP §5.3.1 prescribes.
Negotiated values (payload type, extmap IDs, mid, SSRC) are fixed at the first
negotiation and reused verbatim in every later offer or answer.

States mirror the browser's ``RTCPeerConnectionState``: new, connecting,
connected, disconnected, failed, closed.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import (
    RTCCertificate,
    RTCDtlsParameters,
    RTCIceParameters,
    RTCIceTransport,
    sdp,
)
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
)

from agent.errors import CallError, SignalingError
from agent.stack.dtls import (
    DtlsAssociation,
    SrtpTransport,
    make_certificate,
    sha256_fingerprint,
)
from agent.stack.ice import (
    CONSENT_INTERVAL_S,
    AgentIceConnection,
    AgentIceGatherer,
    IceMux,
    SelectedPair,
    SideNet,
    WireDirection,
)
from agent.stack.media import OPUS_CLOCK_RATE, RtpAudioReceiver, RtpAudioSender

logger = logging.getLogger(__name__)

#: Header extensions we offer, with IDs fixed for the life of a peer.
OFFERED_EXTENSIONS = (
    (1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (2, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
)
#: Chromium's customary Opus payload type; ours when we offer.
OPUS_PAYLOAD_TYPE = 111
DISCARD_HOST = "0.0.0.0"
DISCARD_PORT = 9


class PeerState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    CLOSED = "closed"


class PeerListener(Protocol):
    """What a peer reports; the observer implements it.

    ``generation`` numbers ICE generations: 0 is the initial one, each ICE
    restart adds one. ``initiator`` is ``"local"`` or ``"remote"``.
    """

    def on_ice_gathering(self, state: str, generation: int) -> None: ...
    def on_ice_state(self, state: str, generation: int) -> None: ...
    def on_dtls_state(self, state: str) -> None: ...
    def on_connection_state(self, state: PeerState) -> None: ...
    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None: ...
    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None: ...
    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None: ...
    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None: ...
    def on_dtls_rehandshake_ended(
        self, outcome: str, detail: dict[str, Any]
    ) -> None: ...
    def on_certificate(self, info: dict[str, Any]) -> None: ...
    def on_wire(self, direction: WireDirection, data: bytes) -> None: ...
    def on_rtp(
        self, ssrc: int, seq: int, timestamp: int, arrival_ms: float
    ) -> None: ...


class NullListener:
    """A ``PeerListener`` that ignores everything; subclass it to hear a few events."""

    def on_ice_gathering(self, state: str, generation: int) -> None:
        pass

    def on_ice_state(self, state: str, generation: int) -> None:
        pass

    def on_dtls_state(self, state: str) -> None:
        pass

    def on_connection_state(self, state: PeerState) -> None:
        pass

    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None:
        pass

    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None:
        pass

    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None:
        pass

    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        pass

    def on_dtls_rehandshake_ended(self, outcome: str, detail: dict[str, Any]) -> None:
        pass

    def on_certificate(self, info: dict[str, Any]) -> None:
        pass

    def on_wire(self, direction: WireDirection, data: bytes) -> None:
        pass

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        pass


class CertExpiryPolicy(enum.StrEnum):
    """What a peer does when its DTLS certificate expires mid-call."""

    ROTATE = "rotate"  # new certificate, re-offer, rehandshake (cause cert_expiry)
    KEEP = "keep"  # keep using it; the report says it expired


class FarEndProfile(enum.StrEnum):
    """DTLS behaviour of equipment seen in the field, for the answering side."""

    NEVER = "never"  # like browsers: the association rides across everything
    ON_ICE_RESTART = "rehandshake_on_ice_restart"
    ON_SOURCE_CHANGE = "rehandshake_on_source_change"


class RecoveryPolicy(enum.StrEnum):
    """What the peer does when its path dies — what apps do with restartIce()."""

    NONE = "none"
    RESTART_ON_DISCONNECTED = "restart_on_disconnected"
    RESTART_ON_FAILED = "restart_on_failed"


#: Signalling for renegotiation: hand our offer to the far end, get its answer.
Renegotiate = Callable[[str], Awaitable[str]]


@dataclass
class PeerConfig:
    host_addresses: list[str]
    audio: bool = True
    packet_ms: int = 20
    decode: bool = False
    rng: random.Random = field(default_factory=random.Random)
    #: nothing received on the selected pair this long -> ``disconnected``
    disconnected_after_s: float = 2.0
    consent_interval_s: float = CONSENT_INTERVAL_S
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


@dataclass(eq=False)
class IceGeneration:
    """One ICE generation: its credentials, sockets, checks and consent."""

    number: int
    gatherer: AgentIceGatherer
    transport: RTCIceTransport
    remote: RTCIceParameters | None = None
    task: asyncio.Task[None] | None = None
    #: ``(initiator, trigger, cause)`` when this generation is a restart
    restart: tuple[str, str, str | None] | None = None

    @property
    def connection(self) -> AgentIceConnection:
        return self.gatherer.connection


@dataclass
class Negotiated:
    """Values fixed by the first offer/answer and reused ever after."""

    mid: str
    payload_type: int
    extensions: list[tuple[int, str]]
    local_direction: str
    remote_ssrc: int | None = None
    dtls_role: str = "auto"  # ours: "client" or "server"

    @property
    def sends(self) -> bool:
        return self.local_direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.local_direction in ("sendrecv", "recvonly")


def _reverse(direction: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)


def _payload_type(codec: RTCRtpCodecParameters) -> int:
    if codec.payloadType is None:
        raise SignalingError(f"remote codec {codec.mimeType} has no payload type")
    return int(codec.payloadType)


def parse_sdp(text: str, kind: str) -> sdp.SessionDescription:
    """Parse remote SDP, turning every parser failure into one clear sentence."""
    if not isinstance(text, str) or not text.strip():
        raise SignalingError(f"remote {kind} is empty")
    if not text.lstrip().startswith("v=0"):
        raise SignalingError(f"remote {kind} is not SDP (it must start with 'v=0')")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:
        # aiortc's parser fails in many ways on hostile text (AssertionError,
        # KeyError, a StopIteration for a=fmtp without a=rtpmap): all of them
        # are the far end's error, so all become one sentence here.
        reason = str(exc) or "a line does not have the expected form"
        raise SignalingError(f"remote {kind} SDP is malformed: {reason}") from exc
    description.type = kind
    return description


#: Lifetime of certificates we make unless a scenario says otherwise.
DEFAULT_CERT_LIFETIME_S = 30 * 86400.0

#: After a restart selects its pair, the old generation keeps receiving this
#: long, so packets already in flight on the old path are not lost.
RETIRE_AFTER_S = 1.0
#: How often the liveness monitor looks at the selected pair.
LIVENESS_TICK_S = 0.1


class Peer:
    """One side of a call: ICE + DTLS-SRTP + Opus audio, negotiated by JSEP."""

    def __init__(
        self,
        config: PeerConfig,
        listener: PeerListener,
        clock_ms: Callable[[], float],
        *,
        name: str = "peer",
    ) -> None:
        self.config = config
        self.name = name
        self._listener = listener
        self._clock_ms = clock_ms
        self.certificate = make_certificate(
            config.certificate_lifetime_s or DEFAULT_CERT_LIFETIME_S
        )
        self.certificates: list[dict[str, Any]] = []
        self.mux = IceMux()
        self.dtls = SrtpTransport(
            self.mux,
            self.certificate,
            self,
            name=f"{name}-dtls",
            mtu=config.dtls_mtu,
        )
        self._expiry: asyncio.TimerHandle | None = None
        self._pairs: dict[int, SelectedPair] = {}
        self.ssrc = config.rng.randrange(1, 1 << 32)
        self.cname = str(uuid.UUID(int=config.rng.getrandbits(128)))
        self._session_id = config.rng.randrange(1, 1 << 62)
        self._session_version = 0
        self.negotiated: Negotiated | None = None
        self._remote_dtls: RTCDtlsParameters | None = None
        self._is_offerer = False
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
        self.generations: list[IceGeneration] = []
        #: the generation media is sent on (None until the first is selected)
        self.current: IceGeneration | None = None
        self._pending: IceGeneration | None = None
        #: set while no ICE restart is being negotiated or checked
        self.restart_idle = asyncio.Event()
        self.restart_idle.set()
        self._local_offer_pending = False
        self._rolled_back = False
        self._record_certificate(self.certificate, "initial")
        self._new_generation()

    # -- generations -------------------------------------------------------
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
            self._far_end_rehandshake("source_change", "source_change")

    def _new_generation(
        self, restart: tuple[str, str, str | None] | None = None
    ) -> IceGeneration:
        number = len(self.generations)
        gatherer = AgentIceGatherer(
            host_addresses=self.config.host_addresses,
            consent_interval_s=self.config.consent_interval_s,
            rng=random.Random(self.config.rng.getrandbits(64)),
            net=self.config.net,
        )
        generation = IceGeneration(
            number, gatherer, RTCIceTransport(gatherer), restart=restart
        )
        connection = generation.connection
        if self.generations:
            first = self.generations[0].connection
            # Roles and tie-breaker carry over: RFC 8445 §9 keeps roles on a
            # restart unless the peer's ICE lite status changes.
            connection.ice_controlling = first.ice_controlling
            connection.tie_breaker = first.tie_breaker
        connection.wire_tap = self._listener.on_wire
        connection.pair_listener = lambda pair: self._on_selected_pair(pair, number)
        gatherer.on(
            "statechange",
            lambda: self._listener.on_ice_gathering(gatherer.state, number),
        )
        generation.transport.on("statechange", lambda: self._on_ice_state(generation))
        self.generations.append(generation)
        if restart is not None:
            self.pending = generation
            initiator, trigger, cause = restart
            self._listener.on_ice_restart_started(number, initiator, trigger, cause)
        return generation

    @property
    def pending(self) -> IceGeneration | None:
        """The ICE restart being negotiated or checked, if any."""
        return self._pending

    @pending.setter
    def pending(self, generation: IceGeneration | None) -> None:
        self._pending = generation
        if generation is None:
            self.restart_idle.set()
        else:
            self.restart_idle.clear()

    async def restart_settled(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until no ICE restart is under way (it completed or failed)."""
        await asyncio.wait_for(self.restart_idle.wait(), timeout)

    @property
    def _negotiating(self) -> IceGeneration:
        """The generation whose credentials the next description carries."""
        return self.pending or self.current or self.generations[0]

    @property
    def ice(self) -> RTCIceTransport:
        return (self.current or self.generations[0]).transport

    @property
    def gatherer(self) -> AgentIceGatherer:
        return self._negotiating.gatherer

    @property
    def ice_generation(self) -> int:
        return (self.current or self.generations[0]).number

    # -- JSEP ------------------------------------------------------------
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
        if self.negotiated is None:
            self._is_offerer = True
            self.generations[0].connection.ice_controlling = True
            self.negotiated = Negotiated(
                mid="0",
                payload_type=OPUS_PAYLOAD_TYPE,
                extensions=list(OFFERED_EXTENSIONS),
                local_direction="sendrecv" if self.config.audio else "recvonly",
            )
        elif ice_restart and self.pending is None:
            self._new_generation(("local", trigger, cause))
        self._local_offer_pending = True
        await self._negotiating.gatherer.gather()
        # Subsequent offers keep the DTLS role (JSEP §5.2.2: setup is the
        # current role), so a re-offer never swaps client and server.
        setup = "auto" if self.current is None else self.negotiated.dtls_role
        return self._describe("offer", setup=setup)

    async def accept_offer(self, offer_sdp: str) -> str:
        """Apply a remote offer (initial or re-offer) and return our answer."""
        offer = parse_sdp(offer_sdp, "offer")
        audio = next((m for m in offer.media if m.kind == "audio"), None)
        if audio is None:
            raise SignalingError("remote offer has no audio m-section")
        self._check_transport(audio, "offer")
        assert audio.ice is not None
        if self._local_offer_pending:
            self._resolve_glare()
        initial = self.negotiated is None
        if self.negotiated is None:
            self._negotiate_from_offer(audio)
        else:
            self._check_reoffer(audio)
            current = self._negotiating.remote
            if current is not None and (
                audio.ice.usernameFragment != current.usernameFragment
                or audio.ice.password != current.password
            ):
                # The far end restarted ICE: answer with a real new generation
                # (RFC 8839 §4.4.1.1.1), not aiortc's old credentials.
                self._new_generation(("remote", "remote", None))
        assert self.negotiated is not None
        self._offer_order = offer.media
        generation = self._negotiating
        await self._apply_remote_transport(generation, audio)
        if initial:
            # The answerer picks the DTLS role; like browsers we take "client"
            # (a=setup:active, RFC 8842 §5.3) unless the offer forbids it.
            remote_setup = audio.dtls.role if audio.dtls else "auto"
            self.negotiated.dtls_role = (
                "server" if remote_setup == "client" else "client"
            )
        new_fingerprint = not initial and self._fingerprint_changed(audio)
        self._set_remote_dtls(audio)
        await generation.gatherer.gather()
        answer = self._describe("answer", setup=self.negotiated.dtls_role)
        self._start_generation(generation)
        if new_fingerprint:
            # A new remote certificate means a new DTLS association (a
            # browser's "DTLS restart", an SBC's backup): set it up in our role.
            self._remote_rehandshake("fingerprint_change")
        return answer

    def _fingerprint_changed(self, media: sdp.MediaDescription) -> bool:
        if self._remote_dtls is None or media.dtls is None:
            return False
        old = {
            (f.algorithm.lower(), f.value.upper())
            for f in self._remote_dtls.fingerprints
        }
        new = {(f.algorithm.lower(), f.value.upper()) for f in media.dtls.fingerprints}
        return old != new

    def _remote_rehandshake(self, trigger: str) -> None:
        assert self.negotiated is not None and self._remote_dtls is not None
        fingerprints = list(self._remote_dtls.fingerprints)
        pending = self.dtls.pending
        if pending is not None:
            # The far end's ClientHello raced ahead of its re-offer.
            pending.remote_fingerprints = fingerprints
            self.dtls.remote_fingerprints = fingerprints
            return
        if self.dtls.state != "connected":
            return
        self.dtls.begin_rehandshake("remote", trigger, None)
        self.dtls.start_association(self.negotiated.dtls_role, fingerprints)

    def _negotiate_from_offer(self, audio: sdp.MediaDescription) -> None:
        opus = next(
            (c for c in audio.rtp.codecs if c.mimeType.lower() == "audio/opus"), None
        )
        if opus is None:
            raise SignalingError("remote offer's audio section does not offer Opus")
        supported = {uri for _, uri in OFFERED_EXTENSIONS}
        local_direction = _reverse(audio.direction or "sendrecv")
        if not self.config.audio and local_direction == "sendrecv":
            local_direction = "recvonly"
        self.negotiated = Negotiated(
            mid=audio.rtp.muxId or "0",
            payload_type=_payload_type(opus),
            extensions=[
                (h.id, h.uri) for h in audio.rtp.headerExtensions if h.uri in supported
            ],
            local_direction=local_direction,
            remote_ssrc=audio.ssrc[0].ssrc if audio.ssrc else None,
        )

    def _check_reoffer(self, audio: sdp.MediaDescription) -> None:
        """A re-offer must keep what was negotiated (mid, Opus payload type)."""
        assert self.negotiated is not None
        if (audio.rtp.muxId or "0") != self.negotiated.mid:
            raise SignalingError(
                f"remote re-offer changed the audio mid to {audio.rtp.muxId!r}"
            )
        pts = {c.payloadType for c in audio.rtp.codecs}
        if self.negotiated.payload_type not in pts:
            raise SignalingError(
                "remote re-offer dropped the negotiated Opus payload type "
                f"{self.negotiated.payload_type}"
            )
        if audio.ssrc:
            self.negotiated.remote_ssrc = audio.ssrc[0].ssrc

    def _resolve_glare(self) -> None:
        """Both sides offered at once (JSEP §4.1.8.2 rollback).

        The peer that did not make the first offer is "polite": it rolls its own
        offer back and takes the far end's. The other refuses the far end's offer;
        the far end, being polite, rolls back.
        """
        if self._is_offerer:
            raise SignalingError("glare: an offer arrived while ours is pending")
        self._local_offer_pending = False
        self._rolled_back = True
        pending = self.pending
        if pending is not None:
            self.pending = None
            self.generations.remove(pending)
            self._listener.on_ice_restart_ended(pending.number, "rolled_back", None)
            self._spawn(pending.transport.stop())

    async def accept_answer(self, answer_sdp: str) -> None:
        """Apply the remote answer to our offer; the offered generation connects."""
        if self.negotiated is None or not self._local_offer_pending:
            raise SignalingError("received an answer without having sent an offer")
        answer = parse_sdp(answer_sdp, "answer")
        audio = next((m for m in answer.media if m.kind == "audio"), None)
        if audio is None or audio.port == 0:
            raise SignalingError("remote answer rejected the audio m-section")
        self._check_transport(audio, "answer")
        if audio.dtls is None or audio.dtls.role not in ("client", "server"):
            raise SignalingError(
                "remote answer must say a=setup:active or a=setup:passive"
            )
        answer_pts = {_payload_type(c) for c in audio.rtp.codecs}
        if self.negotiated.payload_type not in answer_pts:
            raise SignalingError(
                "remote answer dropped Opus payload type "
                f"{self.negotiated.payload_type}"
            )
        self._local_offer_pending = False
        generation = self._negotiating
        if generation.number == 0 and self.current is None:
            self.negotiated.local_direction = _answered_direction(
                self.negotiated.local_direction, audio.direction or "sendrecv"
            )
            self.negotiated.dtls_role = (
                "server" if audio.dtls.role == "client" else "client"
            )
        if audio.ssrc:
            self.negotiated.remote_ssrc = audio.ssrc[0].ssrc
        await self._apply_remote_transport(generation, audio)
        self._set_remote_dtls(audio)
        self._start_generation(generation)

    def _check_transport(self, media: sdp.MediaDescription, kind: str) -> None:
        if (
            media.ice is None
            or not media.ice.usernameFragment
            or not media.ice.password
        ):
            raise SignalingError(f"remote {kind} has no ICE ufrag/pwd")
        if media.dtls is None or not media.dtls.fingerprints:
            raise SignalingError(f"remote {kind} has no DTLS fingerprint")
        if not media.rtcp_mux:
            raise SignalingError(f"remote {kind} does not use rtcp-mux (RFC 8858)")

    def _set_remote_dtls(self, media: sdp.MediaDescription) -> None:
        assert media.dtls is not None
        self._remote_dtls = RTCDtlsParameters(
            fingerprints=list(media.dtls.fingerprints)
        )

    async def _apply_remote_transport(
        self, generation: IceGeneration, media: sdp.MediaDescription
    ) -> None:
        assert media.ice is not None
        generation.remote = RTCIceParameters(
            usernameFragment=media.ice.usernameFragment,
            password=media.ice.password,
        )
        for candidate in media.ice_candidates:
            await generation.transport.addRemoteCandidate(candidate)
        if media.ice_candidates_complete:
            await generation.transport.addRemoteCandidate(None)

    async def accept_ice_restart(
        self, ufrag: str, pwd: str, candidates: list[str], *, end: bool = False
    ) -> tuple[str, str, list[str]]:
        """Apply a remote ICE restart (e.g. a WHIP PATCH sdpfrag, RFC 9725 §4.4).

        Returns our new local ufrag, pwd and candidate lines (``candidate:...``).
        """
        if self.negotiated is None:
            raise SignalingError("ICE restart before the call was negotiated")
        generation = self._new_generation(("remote", "remote", None))
        generation.remote = RTCIceParameters(usernameFragment=ufrag, password=pwd)
        for line in candidates:
            await self._add_candidate(generation, line)
        await generation.gatherer.gather()
        if end:
            # After our own gathering: aioice's end-of-candidates must not
            # cut our local candidates short.
            await generation.transport.addRemoteCandidate(None)
        self._start_generation(generation)
        local = generation.gatherer.getLocalParameters()
        lines = [
            "candidate:" + sdp.candidate_to_sdp(c)
            for c in generation.gatherer.getLocalCandidates()
        ]
        return str(local.usernameFragment), str(local.password), lines

    async def add_remote_candidate(self, candidate_line: str | None) -> None:
        """Trickle one remote candidate (``a=candidate`` value) or end-of-candidates."""
        await self._add_candidate(self._negotiating, candidate_line)

    async def _add_candidate(
        self, generation: IceGeneration, candidate_line: str | None
    ) -> None:
        if candidate_line is None:
            await generation.transport.addRemoteCandidate(None)
            return
        try:
            candidate = sdp.candidate_from_sdp(
                candidate_line.strip().removeprefix("a=").removeprefix("candidate:")
            )
        except (ValueError, IndexError, AssertionError) as exc:
            # aiortc's parser asserts on short lines: still the far end's error.
            raise SignalingError(
                f"bad remote ICE candidate: {candidate_line!r}"
            ) from exc
        await generation.transport.addRemoteCandidate(candidate)

    def _describe(self, kind: str, *, setup: str) -> str:
        """Our SDP; negotiated values are reused verbatim so re-offers match."""
        assert self.negotiated is not None
        neg = self.negotiated
        self._session_version += 1
        description = sdp.SessionDescription()
        description.origin = (
            f"- {self._session_id} {self._session_version} IN IP4 0.0.0.0"
        )
        description.msid_semantic.append(
            sdp.GroupDescription(semantic="WMS", items=["*"])
        )
        description.type = kind
        audio = self._audio_section(setup)
        sections: list[sdp.MediaDescription] = []
        if kind == "answer":
            for remote in self._offer_order:
                if remote.kind == "audio" and (remote.rtp.muxId or "0") == neg.mid:
                    sections.append(audio)
                else:
                    sections.append(self._rejected_section(remote))
        else:
            sections.append(audio)
        description.media = sections
        description.group.append(
            sdp.GroupDescription(semantic="BUNDLE", items=[neg.mid])
        )
        return str(description)

    def _audio_section(self, setup: str) -> sdp.MediaDescription:
        assert self.negotiated is not None
        neg = self.negotiated
        media = sdp.MediaDescription(
            kind="audio",
            port=DISCARD_PORT,
            profile="UDP/TLS/RTP/SAVPF",
            fmt=[neg.payload_type],
        )
        media.direction = neg.local_direction
        media.rtp.muxId = neg.mid
        media.rtp.codecs = [
            RTCRtpCodecParameters(
                mimeType="audio/opus",
                clockRate=OPUS_CLOCK_RATE,
                channels=2,
                payloadType=neg.payload_type,
                parameters={"minptime": 10, "useinbandfec": 1},
            )
        ]
        media.rtp.headerExtensions = [
            RTCRtpHeaderExtensionParameters(id=i, uri=uri) for i, uri in neg.extensions
        ]
        media.rtcp_host = DISCARD_HOST
        media.rtcp_port = DISCARD_PORT
        media.rtcp_mux = True
        if neg.sends:
            media.msid = f"{self.cname} audio-{self.ssrc}"
            media.ssrc = [sdp.SsrcDescription(ssrc=self.ssrc, cname=self.cname)]
        self._add_transport(media, setup)
        return media

    def _rejected_section(self, remote: sdp.MediaDescription) -> sdp.MediaDescription:
        media = sdp.MediaDescription(
            kind=remote.kind, port=0, profile=remote.profile, fmt=list(remote.fmt)
        )
        media.direction = "inactive"
        media.rtp.muxId = remote.rtp.muxId
        media.rtp.codecs = list(remote.rtp.codecs)
        media.rtcp_mux = remote.rtcp_mux
        media.sctp_port = remote.sctp_port
        assert self.negotiated is not None
        self._add_transport(media, self.negotiated.dtls_role)
        return media

    def _add_transport(self, media: sdp.MediaDescription, setup: str) -> None:
        gatherer = self._negotiating.gatherer
        candidates = gatherer.getLocalCandidates()
        media.ice_candidates = candidates
        media.ice_candidates_complete = gatherer.state == "completed"
        media.ice = gatherer.getLocalParameters()
        media.ice_options = "trickle"
        if candidates and media.port != 0:
            media.host = candidates[0].ip
            media.port = candidates[0].port
        else:
            media.host = DISCARD_HOST
        media.dtls = RTCDtlsParameters(
            fingerprints=self.dtls.local_fingerprints(), role=setup
        )

    # -- DTLS rehandshake ------------------------------------------------------
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
        if self.negotiated is None or self.dtls.state != "connected":
            raise CallError(f"{self.name}: DTLS is not connected, cannot rehandshake")
        if self.dtls.pending is not None:
            return False
        self.dtls.begin_rehandshake("local", trigger, cause)
        if not rotate_certificate and not ice_restart:
            return await self._association_done(self.dtls.start_association("client"))
        if self.renegotiate is None:
            self.dtls.abort_rehandshake("no signalling channel for the re-offer")
            raise CallError(f"{self.name}: no signalling channel to re-offer over")
        if rotate_certificate:
            self._use_certificate(make_certificate(DEFAULT_CERT_LIFETIME_S), trigger)
        role = self.negotiated.dtls_role
        association: DtlsAssociation | None = None
        if role == "server":
            # Ready before the far end can answer and send its ClientHello.
            association = self.dtls.start_association("server")
        try:
            offer = await self.create_offer(
                ice_restart=ice_restart, trigger=trigger, cause=cause
            )
            answer = await asyncio.wait_for(
                self.renegotiate(offer), timeout=self.config.restart_timeout_s
            )
            await self.accept_answer(answer)
        except (SignalingError, TimeoutError, ConnectionError) as exc:
            self._local_offer_pending = False
            if self.pending is not None:
                self._fail_restart(self.pending, f"renegotiation failed: {exc}")
            self.dtls.abort_rehandshake(f"re-offer failed: {exc}")
            return False
        if role == "client":
            association = self.dtls.start_association("client")
        return await self._association_done(association)

    async def _association_done(self, association: DtlsAssociation | None) -> bool:
        if association is None:
            self.dtls.abort_rehandshake("another association is being set up")
            return False
        await asyncio.wait_for(
            association.settled.wait(), self.dtls.handshake_timeout_s + 1.0
        )
        return self.dtls.current is association

    async def fail_over(
        self, *, ice_restart: bool = True, cause: str = "sbc_failover"
    ) -> bool:
        """Act as a backup SBC taking over this side of the call: new
        certificate, no DTLS state (media under the old keys stops at once),
        optionally a new ICE generation, and a re-offer; a new handshake follows."""
        self.dtls.drop_state()
        return await self.rehandshake_dtls(
            rotate_certificate=True,
            ice_restart=ice_restart,
            trigger="failover",
            cause=cause,
        )

    def _use_certificate(self, certificate: RTCCertificate, reason: str) -> None:
        self.certificate = certificate
        self.dtls.certificate = certificate
        self._record_certificate(certificate, reason)
        self._watch_certificate()

    def _record_certificate(self, certificate: RTCCertificate, reason: str) -> None:
        info = certificate_info(certificate)
        info.update(reason=reason, in_use_from_ms=round(self._clock_ms(), 1))
        self.certificates.append(info)
        self._listener.on_certificate(info)

    def _watch_certificate(self) -> None:
        """Act when the certificate in use expires (RFC 5280 notAfter)."""
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        remaining = (
            self.certificate.expires - datetime.datetime.now(datetime.UTC)
        ).total_seconds()
        if remaining < 7 * 86400:
            self._expiry = loop.call_later(
                max(remaining, 0.0), self._certificate_expired
            )

    def _certificate_expired(self) -> None:
        self._expiry = None
        fingerprint = sha256_fingerprint(self.certificate)
        if (
            self.certificates
            and self.certificates[-1]["fingerprint_sha256"] == fingerprint
        ):
            self.certificates[-1]["expired_at_ms"] = round(self._clock_ms(), 1)
        if self._closing:
            return
        if self.config.cert_expiry is CertExpiryPolicy.KEEP:
            self._listener.on_certificate(
                {"fingerprint_sha256": fingerprint, "expired": True, "kept": True}
            )
            return
        self._spawn(self._rotate_expired())

    async def _rotate_expired(self) -> None:
        try:
            await self.rehandshake_dtls(
                rotate_certificate=True, trigger="cert_expiry", cause="cert_expiry"
            )
        except (CallError, SignalingError, TimeoutError) as exc:
            logger.info(
                "%s: rotating the expired certificate failed: %s", self.name, exc
            )

    def _far_end_rehandshake(self, trigger: str, cause: str) -> None:
        """The configured far-end profile reacts to an ICE or path change."""
        if self.dtls.state != "connected" or self.dtls.pending is not None:
            return

        async def rehandshake() -> None:
            try:
                await self.rehandshake_dtls(
                    rotate_certificate=False, trigger=trigger, cause=cause
                )
            except (CallError, SignalingError, TimeoutError) as exc:
                logger.info("%s: profile rehandshake failed: %s", self.name, exc)

        self._spawn(rehandshake())

    # -- ICE restart ---------------------------------------------------------
    async def restart_ice(
        self, *, trigger: str = "step", cause: str | None = None
    ) -> bool:
        """Restart ICE from this side: re-offer with new credentials, apply the
        answer, and return whether the new generation got a selected pair.

        Make-before-break: media stays on the current generation meanwhile.
        """
        if self.renegotiate is None:
            raise CallError(f"{self.name}: no signalling channel to restart ICE over")
        if self.pending is not None:
            return False  # a restart is already under way
        self._rolled_back = False
        offer = await self.create_offer(ice_restart=True, trigger=trigger, cause=cause)
        generation = self.pending
        assert generation is not None
        try:
            answer = await asyncio.wait_for(
                self.renegotiate(offer), timeout=self.config.restart_timeout_s
            )
            await self.accept_answer(answer)
        except (SignalingError, TimeoutError, ConnectionError) as exc:
            self._local_offer_pending = False
            if self._rolled_back:
                return False  # glare: the far end's restart won
            self._fail_restart(generation, f"renegotiation failed: {exc}")
            return False
        assert generation.task is not None
        await asyncio.shield(generation.task)
        return self.current is generation

    def _fail_restart(self, generation: IceGeneration, why: str) -> None:
        logger.info(
            "%s: ICE restart (generation %d) failed: %s",
            self.name,
            generation.number,
            why,
        )
        if self.pending is generation:
            self.pending = None
        self._listener.on_ice_restart_ended(generation.number, "failed", None)
        self._spawn(generation.transport.stop())
        if self._liveness is PeerState.FAILED:
            # Nothing left to recover with.
            self.ended.set()

    def _start_generation(self, generation: IceGeneration) -> None:
        if generation.task is None:
            generation.task = asyncio.create_task(
                self._connect_generation(generation),
                name=f"{self.name}-ice{generation.number}",
            )

    async def _connect_generation(self, generation: IceGeneration) -> None:
        assert generation.remote is not None
        try:
            if generation.restart is None:
                await generation.transport.start(generation.remote)
            else:
                await asyncio.wait_for(
                    generation.transport.start(generation.remote),
                    timeout=self.config.restart_timeout_s,
                )
        except TimeoutError:
            self._fail_restart(generation, "no pair selected in time")
            return
        if generation.transport.state != "completed":
            if generation.restart is not None:
                self._fail_restart(generation, f"ICE {generation.transport.state}")
            return
        previous = self.current
        self.current = generation
        self.mux.use(generation.connection)
        if generation.restart is not None:
            self.pending = None
            self._liveness = PeerState.CONNECTED
            self._listener.on_ice_restart_ended(
                generation.number, "completed", generation.connection.selected_pair
            )
            self._update_state()
            if self.config.dtls_profile is FarEndProfile.ON_ICE_RESTART:
                self._far_end_rehandshake("ice_restart", "ice_restart")
        if previous is not None:
            self._spawn(self._retire(previous))
        else:
            await self._start_media()

    async def _retire(self, generation: IceGeneration) -> None:
        await asyncio.sleep(RETIRE_AFTER_S)
        self.mux.detach(generation.connection)
        await generation.transport.stop()

    async def _start_media(self) -> None:
        assert self.negotiated is not None and self._remote_dtls is not None
        neg = self.negotiated
        try:
            if neg.receives:
                self.receiver = RtpAudioReceiver(
                    listener=self._listener.on_rtp,
                    clock_ms=self._clock_ms,
                    decode=self.config.decode,
                )
                self.dtls.set_receiver(self.receiver, self._receive_parameters())
            await self.dtls.start(neg.dtls_role, self._remote_dtls.fingerprints)
            if self.dtls.state != "connected":
                return
            self._watch_certificate()
            if neg.sends:
                self.sender = RtpAudioSender(
                    send=self.dtls.send_rtp,
                    ssrc=self.ssrc,
                    payload_type=neg.payload_type,
                    packet_ms=self.config.packet_ms,
                    rng=self.config.rng,
                )
                self.sender.start()
            self._spawn(self._monitor_liveness())
        except ConnectionError:
            raise
        except Exception as exc:  # aiortc internals: report, do not crash the run
            logger.exception("%s: connecting failed", self.name)
            self.error = f"connecting failed: {exc}"
            self._set_state(PeerState.FAILED)

    def _receive_parameters(self) -> RTCRtpReceiveParameters:
        assert self.negotiated is not None
        neg = self.negotiated
        params = RTCRtpReceiveParameters(
            codecs=[
                RTCRtpCodecParameters(
                    mimeType="audio/opus",
                    clockRate=OPUS_CLOCK_RATE,
                    channels=2,
                    payloadType=neg.payload_type,
                )
            ],
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri)
                for i, uri in neg.extensions
            ],
            muxId=neg.mid,
        )
        if neg.remote_ssrc is not None:
            params.encodings = [
                RTCRtpDecodingParameters(
                    ssrc=neg.remote_ssrc, payloadType=neg.payload_type
                )
            ]
        return params

    # -- liveness: disconnected / failed like a browser ---------------------
    async def _monitor_liveness(self) -> None:
        """``disconnected`` when nothing arrives for ``disconnected_after_s``,
        back to ``connected`` when traffic resumes, ``failed`` when consent
        expires (RFC 7675 §5.1) — the states aiortc 1.16 does not have."""
        loop = asyncio.get_running_loop()
        limit = self.config.disconnected_after_s
        while not self._closing:
            await asyncio.sleep(LIVENESS_TICK_S)
            generation = self.current
            if generation is None:
                continue
            connection = generation.connection
            now = loop.time()
            last = connection.last_received
            silent = last is None or now - last >= limit
            if connection.consent_expired.is_set():
                liveness = PeerState.FAILED
            elif silent:
                liveness = PeerState.DISCONNECTED
            else:
                liveness = PeerState.CONNECTED
            if liveness is not self._liveness:
                self._liveness = liveness
                self._update_state()
                self._maybe_recover(liveness)

    def _maybe_recover(self, liveness: PeerState) -> None:
        policy = self.config.recovery
        wanted = (
            policy is RecoveryPolicy.RESTART_ON_DISCONNECTED
            and liveness is PeerState.DISCONNECTED
        ) or (policy is not RecoveryPolicy.NONE and liveness is PeerState.FAILED)
        if wanted and self.pending is None and self.renegotiate is not None:
            trigger = "disconnected" if liveness is PeerState.DISCONNECTED else "failed"
            self._spawn(self._recover(trigger))

    async def _recover(self, trigger: str) -> None:
        try:
            await self.restart_ice(trigger=trigger)
        except (CallError, SignalingError) as exc:
            logger.info("%s: recovery restart failed: %s", self.name, exc)

    # -- states ----------------------------------------------------------
    def _on_ice_state(self, generation: IceGeneration) -> None:
        self._listener.on_ice_state(generation.transport.state, generation.number)
        if generation is (self.current or self.generations[0]):
            self._update_state()

    # -- DtlsListener (from SrtpTransport) ------------------------------------
    def on_dtls_state(self, state: str) -> None:
        self._listener.on_dtls_state(state)
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
        ice, dtls = self.ice.state, self.dtls.state
        if dtls == "failed" or (ice == "failed" and self.pending is None):
            state = PeerState.FAILED
        elif dtls == "closed" or ice == "closed":
            state = PeerState.CLOSED
        elif ice == "completed" and dtls == "connected":
            state = self._liveness
        elif ice == "new" and dtls == "new":
            state = PeerState.NEW
        else:
            state = PeerState.CONNECTING
        self._set_state(state)

    def _set_state(self, state: PeerState) -> None:
        if state is self.state:
            return
        self.state = state
        self._listener.on_connection_state(state)
        if state is PeerState.CONNECTED:
            self.connected.set()
        elif state is PeerState.CLOSED:
            self.ended.set()
        elif state is PeerState.FAILED and (
            self.config.recovery is RecoveryPolicy.NONE
            or self.renegotiate is None
            or not self.connected.is_set()
        ):
            # Terminal unless a recovery restart may still bring it back.
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
        if self._expiry is not None:
            self._expiry.cancel()
        if self.sender is not None:
            await self.sender.stop()
        for task in list(self._tasks):
            task.cancel()
        for generation in self.generations:
            if generation.task is not None and not generation.task.done():
                generation.task.cancel()
        await asyncio.gather(
            *self._tasks,
            *(g.task for g in self.generations if g.task is not None),
            return_exceptions=True,
        )
        await self.dtls.stop()
        self.mux.close()
        for generation in self.generations:
            await generation.transport.stop()
        self._set_state(PeerState.CLOSED)

    @property
    def selected_pair(self) -> SelectedPair | None:
        return None if self.current is None else self.current.connection.selected_pair


def _answered_direction(offered: str, answered: str) -> str:
    """Our direction after the far end answered ``answered`` to our ``offered``."""
    if answered == "inactive":
        return "inactive"
    return {
        ("sendrecv", "recvonly"): "sendonly",
        ("sendrecv", "sendonly"): "recvonly",
    }.get((offered, answered), offered)


def certificate_info(certificate: RTCCertificate) -> dict[str, Any]:
    """Fingerprint and validity window of a certificate, for the report."""
    cert = certificate._cert
    return {
        "fingerprint_sha256": sha256_fingerprint(certificate),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
