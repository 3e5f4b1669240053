"""The offer/answer core of a peer: JSEP signaling as a state machine, no I/O.

Theory of operation (in the spirit of h11): :class:`Negotiator` is fed remote
descriptions as text and asked for ours; it never gathers, binds or waits.
:class:`agent.stack.peer.Peer` does the I/O around it (gathering candidates,
starting ICE generations, DTLS) and asks it what each description means.

Signaling states are JSEP's (RFC 8829/9429 §3.2, ``RTCSignalingState``), and
every change goes through one table, :data:`SIGNALING_TRANSITIONS`; an event the
table does not allow in the current state raises :class:`IllegalTransition` (a
:class:`SignalingError`: a far end that answers without an offer is told so in
one sentence)::

                 send_offer            receive_answer
    STABLE ------------------> HAVE_LOCAL_OFFER ---------> STABLE
    STABLE ------------------> HAVE_REMOTE_OFFER --------> STABLE
                receive_offer             send_answer
    HAVE_LOCAL_OFFER --send_offer--> HAVE_LOCAL_OFFER   (a new offer replaces it)
    HAVE_*_OFFER --rollback--> STABLE                   (JSEP §4.1.8.2)
    any --close--> CLOSED

Glare (both sides offer at once, JSEP §4.1.8.2 rollback): the side that did not
make the first offer of the call is "polite": an offer arriving while its own is
pending rolls its own back and is taken. The side that made the first offer
refuses the far end's; the far end, being polite, rolls back.

Re-offer invariants: the mid, the Opus payload type and the extmap IDs are fixed
by the first offer/answer (:class:`Negotiated`) and written verbatim into every
later description; a remote re-offer that changes the mid or drops the payload
type is refused. A remote offer with new ICE credentials is an ICE restart (RFC
8839 §4.4.1.1.1); one with a new fingerprint is a new DTLS association.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiortc import RTCDtlsFingerprint, RTCIceParameters

from agent.errors import SignalingError
from agent.stack.sdp import (
    OFFERED_EXTENSIONS,
    OPUS_PAYLOAD_TYPE,
    LocalSource,
    LocalTransport,
    MediaDescription,
    Negotiated,
    answered_direction,
    audio_section,
    build_description,
    check_transport,
    fingerprints_differ,
    intersect,
    parse_sdp,
    payload_type,
    reverse,
)


class SignalingState(enum.StrEnum):
    STABLE = "stable"
    HAVE_LOCAL_OFFER = "have-local-offer"
    HAVE_REMOTE_OFFER = "have-remote-offer"
    CLOSED = "closed"


class SignalingEvent(enum.StrEnum):
    SEND_OFFER = "send_offer"
    RECEIVE_ANSWER = "receive_answer"
    RECEIVE_OFFER = "receive_offer"
    SEND_ANSWER = "send_answer"
    ROLLBACK = "rollback"
    CLOSE = "close"


_S, _E = SignalingState, SignalingEvent

#: (state, event) -> next state; a missing pair is illegal. CLOSE is allowed
#: from every state and added below.
SIGNALING_TRANSITIONS: dict[tuple[SignalingState, SignalingEvent], SignalingState] = {
    (_S.STABLE, _E.SEND_OFFER): _S.HAVE_LOCAL_OFFER,
    (_S.STABLE, _E.RECEIVE_OFFER): _S.HAVE_REMOTE_OFFER,
    (_S.HAVE_LOCAL_OFFER, _E.SEND_OFFER): _S.HAVE_LOCAL_OFFER,
    (_S.HAVE_LOCAL_OFFER, _E.RECEIVE_ANSWER): _S.STABLE,
    (_S.HAVE_LOCAL_OFFER, _E.ROLLBACK): _S.STABLE,
    (_S.HAVE_REMOTE_OFFER, _E.SEND_ANSWER): _S.STABLE,
    (_S.HAVE_REMOTE_OFFER, _E.ROLLBACK): _S.STABLE,
} | {(state, _E.CLOSE): _S.CLOSED for state in SignalingState}

#: What an illegal event means, in the far end's terms where it is theirs.
_ILLEGAL = {
    _E.RECEIVE_ANSWER: "received an answer without having sent an offer",
    _E.RECEIVE_OFFER: "received an offer while another one is being answered",
}


class IllegalTransition(SignalingError):
    """An event the signaling state machine does not allow in its state."""

    def __init__(self, state: SignalingState, event: SignalingEvent) -> None:
        self.state = state
        self.event = event
        reason = _ILLEGAL.get(event, f"{event} is not allowed")
        super().__init__(f"{reason} (signaling state {state})")


class Glare(SignalingError):
    """Both sides offered at once and ours stands (we made the first offer)."""


@dataclass(frozen=True)
class RemoteOffer:
    """A remote offer taken in: its audio section, and whether taking it rolled
    back our own pending offer (glare, we being the polite side)."""

    audio: MediaDescription
    offer_order: list[MediaDescription]
    rolled_back: bool


@dataclass(frozen=True)
class OfferMeaning:
    """What an applied remote offer asks of the peer's transports."""

    initial: bool
    #: the far end restarted ICE: answer with a new generation
    ice_restart: bool
    #: the far end's certificate changed: a new DTLS association
    fingerprint_changed: bool


class Negotiator:
    """Offer/answer for one peer: signaling state and the negotiated values."""

    def __init__(self, *, audio: bool, session_id: int) -> None:
        self.audio = audio
        #: the direction this side wants (its transceiver's, JSEP §4.2.4):
        #: what it offers, and the most it answers; see :meth:`want_direction`
        self.wanted_direction = "sendrecv" if audio else "recvonly"
        self._direction_before_offer: str | None = None
        self.state = SignalingState.STABLE
        self.negotiated: Negotiated | None = None
        #: we made the first offer of the call (the impolite side in glare)
        self.is_offerer = False
        #: one offer/answer exchange has completed
        self.established = False
        self.remote_fingerprints: list[RTCDtlsFingerprint] = []
        self._offer_order: list[MediaDescription] = []
        self._session_id = session_id
        self._session_version = 0

    # -- the table ---------------------------------------------------------
    def handle(self, event: SignalingEvent) -> SignalingState:
        after = SIGNALING_TRANSITIONS.get((self.state, event))
        if after is None:
            raise IllegalTransition(self.state, event)
        self.state = after
        return after

    @property
    def local_offer_pending(self) -> bool:
        return self.state is SignalingState.HAVE_LOCAL_OFFER

    # -- our offer -----------------------------------------------------------
    def create_offer(self) -> bool:
        """Start an offer of ours; True when it is the call's first."""
        self.handle(SignalingEvent.SEND_OFFER)
        if self.negotiated is not None:
            return False
        self.is_offerer = True
        self.negotiated = Negotiated(
            mid="0",
            payload_type=OPUS_PAYLOAD_TYPE,
            extensions=list(OFFERED_EXTENSIONS),
            local_direction=self.wanted_direction,
        )
        return True

    def offer_setup(self) -> str:
        """a=setup of our offer: actpass first, then the role we have (JSEP
        §5.2.2), so a re-offer never swaps DTLS client and server."""
        if not self.established or self.negotiated is None:
            return "auto"
        return self.negotiated.dtls_role

    def abandon_local_offer(self) -> None:
        """Our offer got no usable answer: back to stable (if it still stands)."""
        if self.state is SignalingState.HAVE_LOCAL_OFFER:
            self.handle(SignalingEvent.ROLLBACK)
        self._restore_direction()

    def want_direction(self, direction: str) -> None:
        """Make the next offer ask for ``direction`` (a hold, a mute by
        re-offer); without audio to send, sending is never asked for."""
        if not self.audio:
            direction = intersect(direction, "recvonly")
        self.wanted_direction = direction

    def _restore_direction(self) -> None:
        if self._direction_before_offer is not None and self.negotiated is not None:
            self.negotiated.local_direction = self._direction_before_offer
        self._direction_before_offer = None

    def abandon_remote_offer(self) -> None:
        """Answering failed half-way (our own I/O): back to stable."""
        if self.state is SignalingState.HAVE_REMOTE_OFFER:
            self.handle(SignalingEvent.ROLLBACK)

    def receive_answer(self, text: str) -> MediaDescription:
        """Apply the far end's answer to our offer; returns its audio section."""
        if self.state is not SignalingState.HAVE_LOCAL_OFFER or self.negotiated is None:
            raise IllegalTransition(self.state, SignalingEvent.RECEIVE_ANSWER)
        neg = self.negotiated
        audio = audio_section(parse_sdp(text, "answer"))
        if audio is None or audio.port == 0:
            raise SignalingError("remote answer rejected the audio m-section")
        check_transport(audio, "answer")
        assert audio.dtls is not None
        if audio.dtls.role not in ("client", "server"):
            raise SignalingError(
                "remote answer must say a=setup:active or a=setup:passive"
            )
        if neg.payload_type not in {payload_type(c) for c in audio.rtp.codecs}:
            raise SignalingError(
                f"remote answer dropped Opus payload type {neg.payload_type}"
            )
        self.handle(SignalingEvent.RECEIVE_ANSWER)
        self._direction_before_offer = None
        # Every answer settles the direction, a re-offer's too (a hold).
        neg.local_direction = answered_direction(
            neg.local_direction, audio.direction or "sendrecv"
        )
        if not self.established:
            neg.dtls_role = "server" if audio.dtls.role == "client" else "client"
            self.established = True
        if audio.ssrc:
            neg.remote_ssrc = audio.ssrc[0].ssrc
        self.remote_fingerprints = list(audio.dtls.fingerprints)
        return audio

    # -- their offer -----------------------------------------------------------
    def receive_offer(self, text: str) -> RemoteOffer:
        """Take in a remote offer (resolving glare); :meth:`apply_offer` next."""
        offer = parse_sdp(text, "offer")
        audio = audio_section(offer)
        if audio is None:
            raise SignalingError("remote offer has no audio m-section")
        check_transport(audio, "offer")
        rolled_back = False
        if self.state is SignalingState.HAVE_LOCAL_OFFER:
            if self.is_offerer:
                raise Glare("glare: an offer arrived while ours is pending")
            self.handle(SignalingEvent.ROLLBACK)
            self._restore_direction()
            rolled_back = True
        self.handle(SignalingEvent.RECEIVE_OFFER)
        return RemoteOffer(audio, list(offer.media), rolled_back)

    def apply_offer(
        self, offer: RemoteOffer, current_remote_ice: RTCIceParameters | None
    ) -> OfferMeaning:
        """Check and apply a remote offer taken in by :meth:`receive_offer`.

        ``current_remote_ice`` is the far end's ICE credentials on the
        generation this offer renegotiates (None before the first). A refused
        offer rolls the state back to stable and raises."""
        try:
            return self._apply_offer(offer, current_remote_ice)
        except SignalingError:
            self.handle(SignalingEvent.ROLLBACK)
            raise

    def _apply_offer(
        self, offer: RemoteOffer, current_remote_ice: RTCIceParameters | None
    ) -> OfferMeaning:
        audio = offer.audio
        assert audio.ice is not None and audio.dtls is not None
        initial = self.negotiated is None
        ice_restart = False
        if self.negotiated is None:
            self.negotiated = self._negotiate_from_offer(audio)
            # The answerer picks the DTLS role; like browsers we take "client"
            # (a=setup:active, RFC 8842 §5.3) unless the offer forbids it.
            self.negotiated.dtls_role = (
                "server" if audio.dtls.role == "client" else "client"
            )
        else:
            self._check_reoffer(audio, self.negotiated)
            # A re-offer may change the direction (hold, resume): answer
            # within both the offer and what we want.
            self.negotiated.local_direction = intersect(
                reverse(audio.direction or "sendrecv"), self.wanted_direction
            )
            ice_restart = current_remote_ice is not None and (
                audio.ice.usernameFragment != current_remote_ice.usernameFragment
                or audio.ice.password != current_remote_ice.password
            )
        fingerprint_changed = not initial and fingerprints_differ(
            self.remote_fingerprints, list(audio.dtls.fingerprints)
        )
        self.remote_fingerprints = list(audio.dtls.fingerprints)
        self._offer_order = offer.offer_order
        return OfferMeaning(initial, ice_restart, fingerprint_changed)

    def _negotiate_from_offer(self, audio: MediaDescription) -> Negotiated:
        opus = next(
            (c for c in audio.rtp.codecs if c.mimeType.lower() == "audio/opus"), None
        )
        if opus is None:
            raise SignalingError("remote offer's audio section does not offer Opus")
        supported = {uri for _, uri in OFFERED_EXTENSIONS}
        local_direction = intersect(
            reverse(audio.direction or "sendrecv"), self.wanted_direction
        )
        return Negotiated(
            mid=audio.rtp.muxId or "0",
            payload_type=payload_type(opus),
            extensions=[
                (h.id, h.uri) for h in audio.rtp.headerExtensions if h.uri in supported
            ],
            local_direction=local_direction,
            remote_ssrc=audio.ssrc[0].ssrc if audio.ssrc else None,
        )

    @staticmethod
    def _check_reoffer(audio: MediaDescription, neg: Negotiated) -> None:
        """A re-offer must keep what was negotiated (mid, Opus payload type)."""
        if (audio.rtp.muxId or "0") != neg.mid:
            raise SignalingError(
                f"remote re-offer changed the audio mid to {audio.rtp.muxId!r}"
            )
        if neg.payload_type not in {c.payloadType for c in audio.rtp.codecs}:
            raise SignalingError(
                "remote re-offer dropped the negotiated Opus payload type "
                f"{neg.payload_type}"
            )
        if audio.ssrc:
            neg.remote_ssrc = audio.ssrc[0].ssrc

    def answer(self, transport: LocalTransport, source: LocalSource) -> str:
        """Our answer to the applied remote offer (stable again after it)."""
        self.handle(SignalingEvent.SEND_ANSWER)
        assert self.negotiated is not None  # apply_offer set it
        self.established = True
        return self._describe(
            "answer", self.negotiated.dtls_role, transport, source, self._offer_order
        )

    def offer(self, transport: LocalTransport, source: LocalSource) -> str:
        """Our offer, once :meth:`create_offer` started it and we gathered."""
        if self.state is not SignalingState.HAVE_LOCAL_OFFER:
            raise IllegalTransition(self.state, SignalingEvent.SEND_OFFER)
        assert self.negotiated is not None
        if self.established and self._direction_before_offer is None:
            # A re-offer asks for what we want now; the answer settles it.
            self._direction_before_offer = self.negotiated.local_direction
            self.negotiated.local_direction = self.wanted_direction
        return self._describe("offer", self.offer_setup(), transport, source, None)

    def close(self) -> None:
        self.handle(SignalingEvent.CLOSE)

    def _describe(
        self,
        kind: str,
        setup: str,
        transport: LocalTransport,
        source: LocalSource,
        offer_order: list[MediaDescription] | None,
    ) -> str:
        assert self.negotiated is not None
        self._session_version += 1
        return build_description(
            kind,
            self.negotiated,
            origin=f"- {self._session_id} {self._session_version} IN IP4 0.0.0.0",
            setup=setup,
            transport=transport,
            source=source,
            offer_order=offer_order,
        )
