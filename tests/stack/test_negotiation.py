"""The negotiation core without sockets: offer/answer, re-offers, glare and
rollback, illegal transitions, and the SDP boundary (unit tier: no I/O)."""

from __future__ import annotations

import itertools

import pytest
from aiortc import RTCDtlsFingerprint, RTCIceCandidate, RTCIceParameters

from agent.errors import SignalingError
from agent.stack.negotiation import (
    SIGNALING_TRANSITIONS,
    Glare,
    IllegalTransition,
    Negotiator,
    SignalingEvent,
    SignalingState,
)
from agent.stack.sdp import LocalSource, LocalTransport, parse_sdp

_ufrags = itertools.count(1)


def transport(host: str, fingerprint: str = "AB") -> LocalTransport:
    """What a gathered ICE generation would offer, made by hand."""
    n = next(_ufrags)
    candidate = RTCIceCandidate(
        component=1,
        foundation="1",
        ip=host,
        port=40000 + n,
        priority=1,
        protocol="udp",
        type="host",
    )
    return LocalTransport(
        ice=RTCIceParameters(usernameFragment=f"u{n:04d}", password=f"p{n:022d}"),
        candidates=[candidate],
        complete=True,
        fingerprints=[RTCDtlsFingerprint("sha-256", ":".join([fingerprint] * 32))],
    )


SOURCE_A = LocalSource(ssrc=1111, cname="a")
SOURCE_B = LocalSource(ssrc=2222, cname="b")


def state(peer: Negotiator) -> SignalingState:
    """Read afresh (mypy would otherwise keep an earlier assert's narrowing)."""
    return peer.state


def media_lines(text: str) -> list[str]:
    keep = ("a=rtpmap", "a=fmtp", "a=extmap", "a=mid", "m=audio")
    return [
        line.split(" ", 1)[0] if line.startswith("m=") else line
        for line in text.splitlines()
        if line.startswith(keep)
    ]


def ufrag(text: str) -> str:
    return next(x for x in text.splitlines() if x.startswith("a=ice-ufrag:"))


def offer_from(peer: Negotiator, host: str, fingerprint: str = "AB") -> str:
    peer.create_offer()
    return peer.offer(transport(host, fingerprint), SOURCE_A)


def answer_to(peer: Negotiator, offer: str, host: str, fingerprint: str = "CD") -> str:
    remote = peer.receive_offer(offer)
    current = None
    if peer.negotiated is not None:
        current = RTCIceParameters(usernameFragment="old", password="old")
    peer.apply_offer(remote, current)
    return peer.answer(transport(host, fingerprint), SOURCE_B)


def negotiated_pair() -> tuple[Negotiator, Negotiator]:
    a = Negotiator(audio=True, session_id=1)
    b = Negotiator(audio=True, session_id=2)
    a.receive_answer(answer_to(b, offer_from(a, "127.0.0.1"), "127.0.0.2"))
    return a, b


def test_offer_then_answer_settles_both_sides() -> None:
    a = Negotiator(audio=True, session_id=1)
    b = Negotiator(audio=True, session_id=2)
    offer = offer_from(a, "127.0.0.1")
    assert state(a) is SignalingState.HAVE_LOCAL_OFFER
    assert "a=setup:actpass" in offer and "a=rtpmap:111 opus/48000/2" in offer
    remote = b.receive_offer(offer)
    assert state(b) is SignalingState.HAVE_REMOTE_OFFER
    meaning = b.apply_offer(remote, None)
    assert meaning.initial and not meaning.ice_restart
    answer = b.answer(transport("127.0.0.2"), SOURCE_B)
    # The answerer takes the DTLS client role, as browsers do (RFC 8842 §5.3).
    assert "a=setup:active" in answer and state(b) is SignalingState.STABLE
    a.receive_answer(answer)
    assert state(a) is SignalingState.STABLE
    assert a.negotiated is not None and b.negotiated is not None
    assert (a.negotiated.dtls_role, b.negotiated.dtls_role) == ("server", "client")
    assert a.negotiated.remote_ssrc == SOURCE_B.ssrc
    assert b.negotiated.remote_ssrc == SOURCE_A.ssrc


def test_reoffers_keep_payload_type_and_extmap_ids() -> None:
    # The far end numbers Opus 109 and the extensions 3 and 5 (Firefox-like).
    a = Negotiator(audio=True, session_id=1)
    b = Negotiator(audio=True, session_id=2)
    offer = (
        offer_from(a, "127.0.0.1")
        .replace("111", "109")
        .replace("a=extmap:1 ", "a=extmap:3 ")
        .replace("a=extmap:2 ", "a=extmap:5 ")
    )
    first_answer = answer_to(b, offer, "127.0.0.2")
    assert b.negotiated is not None and b.negotiated.payload_type == 109
    b.create_offer()
    reoffer = b.offer(transport("127.0.0.2"), SOURCE_B)  # an ICE restart
    assert media_lines(reoffer) == media_lines(first_answer)
    assert "a=extmap:3 " in reoffer and "a=extmap:5 " in reoffer
    assert ufrag(reoffer) != ufrag(first_answer)
    # Ours too: a re-offer after the first exchange keeps 111 and 1/2, and the
    # DTLS role we have instead of actpass (JSEP §5.2.2).
    a2, _ = negotiated_pair()
    first = media_lines(offer_from(Negotiator(audio=True, session_id=3), "127.0.0.9"))
    a2.create_offer()
    again = a2.offer(transport("127.0.0.1"), SOURCE_A)
    assert media_lines(again) == first and "a=setup:passive" in again


def test_remote_ice_restart_and_new_fingerprint_are_recognised() -> None:
    a, b = negotiated_pair()
    reoffer = offer_from(a, "127.0.0.1", fingerprint="EF")
    remote = b.receive_offer(reoffer)
    meaning = b.apply_offer(
        remote, RTCIceParameters(usernameFragment="other", password="x" * 22)
    )
    assert meaning.ice_restart and meaning.fingerprint_changed
    assert not meaning.initial


def test_a_reoffer_that_drops_the_payload_type_is_refused_and_rolled_back() -> None:
    a, b = negotiated_pair()
    bad = offer_from(a, "127.0.0.1").replace("111", "96")
    remote = b.receive_offer(bad)
    with pytest.raises(SignalingError, match="dropped the negotiated Opus"):
        b.apply_offer(remote, None)
    assert state(b) is SignalingState.STABLE


def test_glare_the_first_offerer_stands_and_the_other_rolls_back() -> None:
    a, b = negotiated_pair()  # a made the call's first offer
    offer_a = offer_from(a, "127.0.0.1")
    offer_b = offer_from(b, "127.0.0.2")
    with pytest.raises(Glare):
        a.receive_offer(offer_b)
    assert state(a) is SignalingState.HAVE_LOCAL_OFFER  # ours still stands
    remote = b.receive_offer(offer_a)
    assert remote.rolled_back and state(b) is SignalingState.HAVE_REMOTE_OFFER
    b.apply_offer(remote, None)
    a.receive_answer(b.answer(transport("127.0.0.2"), SOURCE_B))
    assert state(a) is state(b) is SignalingState.STABLE


def test_illegal_transitions_raise_and_change_nothing() -> None:
    a = Negotiator(audio=True, session_id=1)
    with pytest.raises(IllegalTransition, match="answer without having sent an offer"):
        a.receive_answer("v=0\r\n")
    with pytest.raises(IllegalTransition):
        a.answer(transport("127.0.0.9"), SOURCE_A)
    assert state(a) is SignalingState.STABLE
    for start, event in itertools.product(SignalingState, SignalingEvent):
        a.state = start
        if (start, event) in SIGNALING_TRANSITIONS:
            assert a.handle(event) is SIGNALING_TRANSITIONS[start, event]
        else:
            with pytest.raises(IllegalTransition):
                a.handle(event)
            assert state(a) is start
    a.state = SignalingState.STABLE
    a.close()
    with pytest.raises(IllegalTransition):
        a.create_offer()


def test_an_offer_during_an_answer_is_illegal() -> None:
    a = Negotiator(audio=True, session_id=1)
    b = Negotiator(audio=True, session_id=2)
    offer = offer_from(a, "127.0.0.1")
    b.receive_offer(offer)
    with pytest.raises(IllegalTransition, match="another one is being answered"):
        b.receive_offer(offer)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        # aiortc raises StopIteration for an fmtp with no rtpmap
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=fmtp:111 x=1\r\n",
        "v=0\r\nm=audio notaport RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 X 0\r\n"
        "a=candidate:1 1 udp\r\n",
    ],
)
def test_every_parser_failure_is_a_signaling_error(text: str) -> None:
    with pytest.raises(SignalingError):
        parse_sdp(text, "offer")
