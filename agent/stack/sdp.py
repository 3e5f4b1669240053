"""Our SDP: reading the far end's and writing ours, with no I/O.

One peer = one BUNDLEd transport carrying one Opus audio m-section (RFC 8843
BUNDLE, RFC 5761 rtcp-mux, RFC 8829/9429 JSEP). Sections we do not support in a
remote offer (video, data) are rejected with port 0 as JSEP §5.3.1 prescribes.
The values fixed at the first negotiation (:class:`Negotiated`: mid, payload
type, extmap IDs, SSRC) are written verbatim into every later offer or answer:
Chromium rejects, or silently stops media on, a re-offer that renumbers them.

aiortc's parser (``aiortc.sdp``) is used for the grammar. It fails in many ways
on bad input (``ValueError``, ``KeyError``, ``StopIteration`` for an
``a=fmtp:111`` without ``a=rtpmap:111``, ``RecursionError``, assertions…);
:func:`parse_sdp` and :func:`parse_candidate` are the one boundary where every
one of them becomes a :class:`SignalingError`: bad SDP is the far end's fault,
never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import (
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCIceCandidate,
    RTCIceParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    sdp,
)
from aiortc.rtcrtpparameters import (
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)

from agent.errors import SignalingError
from agent.stack.media import OPUS_CLOCK_RATE

#: Header extensions we offer, with IDs fixed for the life of a peer.
OFFERED_EXTENSIONS = (
    (1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (2, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
)
#: Chromium's customary Opus payload type; ours when we offer.
OPUS_PAYLOAD_TYPE = 111
DISCARD_HOST = "0.0.0.0"
DISCARD_PORT = 9

SessionDescription = sdp.SessionDescription
MediaDescription = sdp.MediaDescription


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


@dataclass(frozen=True)
class LocalTransport:
    """What our ICE generation and DTLS transport put in a description."""

    ice: RTCIceParameters
    candidates: list[RTCIceCandidate]
    complete: bool
    fingerprints: list[RTCDtlsFingerprint]


@dataclass(frozen=True)
class LocalSource:
    """Our outgoing audio stream's identity (RFC 7941 cname, RFC 8830 msid)."""

    ssrc: int
    cname: str


def parse_sdp(text: str, kind: str) -> SessionDescription:
    """Parse remote SDP, turning every parser failure into one clear sentence."""
    if not isinstance(text, str) or not text.strip():
        raise SignalingError(f"remote {kind} is empty")
    if not text.lstrip().startswith("v=0"):
        raise SignalingError(f"remote {kind} is not SDP (it must start with 'v=0')")
    try:
        description = sdp.SessionDescription.parse(text)
    # Every failure of the parser is the far end's bad input (see above).
    except Exception as exc:
        reason = str(exc) or f"a line does not have the expected form ({exc!r})"
        raise SignalingError(f"remote {kind} SDP is malformed: {reason}") from exc
    description.type = kind
    return description


def parse_candidate(line: str) -> RTCIceCandidate:
    """One remote ``a=candidate`` value (trickled, or from an sdpfrag)."""
    try:
        return sdp.candidate_from_sdp(
            line.strip().removeprefix("a=").removeprefix("candidate:")
        )
    except Exception as exc:  # short lines trip asserts, etc.
        raise SignalingError(f"bad remote ICE candidate: {line!r}") from exc


def audio_section(description: SessionDescription) -> MediaDescription | None:
    return next((m for m in description.media if m.kind == "audio"), None)


def check_transport(media: MediaDescription, kind: str) -> None:
    """A remote section must carry ICE credentials, a fingerprint, rtcp-mux."""
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        raise SignalingError(f"remote {kind} has no ICE ufrag/pwd")
    if media.dtls is None or not media.dtls.fingerprints:
        raise SignalingError(f"remote {kind} has no DTLS fingerprint")
    if not media.rtcp_mux:
        raise SignalingError(f"remote {kind} does not use rtcp-mux (RFC 8858)")


def payload_type(codec: RTCRtpCodecParameters) -> int:
    if codec.payloadType is None:
        raise SignalingError(f"remote codec {codec.mimeType} has no payload type")
    return int(codec.payloadType)


def reverse(direction: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)


def _directions(direction: str) -> tuple[bool, bool]:
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


def intersect(a: str, b: str) -> str:
    """What both allow: sends only if both send, receives only if both receive
    (JSEP §5.3.1: an answer's direction within the offer's and our own)."""
    (send_a, recv_a), (send_b, recv_b) = _directions(a), _directions(b)
    send, recv = send_a and send_b, recv_a and recv_b
    return {
        (True, True): "sendrecv",
        (True, False): "sendonly",
        (False, True): "recvonly",
    }.get((send, recv), "inactive")


def answered_direction(offered: str, answered: str) -> str:
    """Our direction after the far end answered ``answered`` to our ``offered``."""
    return intersect(offered, reverse(answered))


def fingerprints_differ(
    old: list[RTCDtlsFingerprint], new: list[RTCDtlsFingerprint]
) -> bool:
    def normal(prints: list[RTCDtlsFingerprint]) -> set[tuple[str, str]]:
        return {(f.algorithm.lower(), f.value.upper()) for f in prints}

    return normal(old) != normal(new)


def build_description(
    kind: str,
    neg: Negotiated,
    *,
    origin: str,
    setup: str,
    transport: LocalTransport,
    source: LocalSource,
    offer_order: list[MediaDescription] | None = None,
) -> str:
    """Our offer or answer. An answer has one section per offered section, in
    the offer's order: ours for the audio mid, rejected ones for the rest."""
    description = sdp.SessionDescription()
    description.origin = origin
    description.msid_semantic.append(sdp.GroupDescription(semantic="WMS", items=["*"]))
    description.type = kind
    audio = _audio(neg, setup, transport, source)
    sections: list[MediaDescription] = []
    if kind == "answer":
        for remote in offer_order or []:
            if remote.kind == "audio" and (remote.rtp.muxId or "0") == neg.mid:
                sections.append(audio)
            else:
                sections.append(_rejected(remote, neg.dtls_role, transport))
    else:
        sections.append(audio)
    description.media = sections
    description.group.append(sdp.GroupDescription(semantic="BUNDLE", items=[neg.mid]))
    return str(description)


def _audio(
    neg: Negotiated, setup: str, transport: LocalTransport, source: LocalSource
) -> MediaDescription:
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
        media.msid = f"{source.cname} audio-{source.ssrc}"
        media.ssrc = [sdp.SsrcDescription(ssrc=source.ssrc, cname=source.cname)]
    _add_transport(media, setup, transport)
    return media


def _rejected(
    remote: MediaDescription, setup: str, transport: LocalTransport
) -> MediaDescription:
    media = sdp.MediaDescription(
        kind=remote.kind, port=0, profile=remote.profile, fmt=list(remote.fmt)
    )
    media.direction = "inactive"
    media.rtp.muxId = remote.rtp.muxId
    media.rtp.codecs = list(remote.rtp.codecs)
    media.rtcp_mux = remote.rtcp_mux
    media.sctp_port = remote.sctp_port
    _add_transport(media, setup, transport)
    return media


def _add_transport(
    media: MediaDescription, setup: str, transport: LocalTransport
) -> None:
    candidates = transport.candidates
    media.ice_candidates = list(candidates)
    media.ice_candidates_complete = transport.complete
    media.ice = transport.ice
    media.ice_options = "trickle"
    if candidates and media.port != 0:
        media.host = candidates[0].ip
        media.port = candidates[0].port
    else:
        media.host = DISCARD_HOST
    media.dtls = RTCDtlsParameters(
        fingerprints=list(transport.fingerprints), role=setup
    )


def receive_parameters(neg: Negotiated) -> RTCRtpReceiveParameters:
    """What our SRTP transport's receiver decodes, from the negotiated values."""
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
            RTCRtpHeaderExtensionParameters(id=i, uri=uri) for i, uri in neg.extensions
        ],
        muxId=neg.mid,
    )
    if neg.remote_ssrc is not None:
        params.encodings = [
            RTCRtpDecodingParameters(ssrc=neg.remote_ssrc, payloadType=neg.payload_type)
        ]
    return params
