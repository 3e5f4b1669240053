"""SDP fragments (RFC 8840 §9) and the WHIP client's answer rewrite: pure code."""

from __future__ import annotations

import pytest

from agent.errors import SignalingError
from agent.signaling.sdpfrag import build_sdpfrag, parse_sdpfrag
from agent.signaling.session import IceCredentials
from agent.signaling.whip_client import answer_with_ice
from agent.signaling.whip_server import if_match_allows

CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"
PWD = "abcdefghijklmnopqrstuvwx"


def test_build_then_parse_round_trips() -> None:
    text = build_sdpfrag(ufrag="EsAw", pwd=PWD, candidates=[CANDIDATE], mid="0")
    assert text.endswith("\r\n") and "a=end-of-candidates" in text
    frag = parse_sdpfrag(text)
    assert (frag.ufrag, frag.pwd, frag.mid) == ("EsAw", PWD, "0")
    assert frag.candidates == (CANDIDATE,) and frag.end_of_candidates
    assert frag.has_credentials


def test_trickle_fragment_without_credentials_and_lf_line_ends() -> None:
    frag = parse_sdpfrag(f"a=mid:0\na={CANDIDATE}\n")
    assert not frag.has_credentials and frag.candidates == (CANDIDATE,)
    assert not frag.end_of_candidates


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=ice-ufrag:EsAw\r\n", "without a=ice-pwd"),
        (f"a=ice-ufrag:E\r\na=ice-pwd:{PWD}\r\n", "4-256"),
        ("a=ice-ufrag:EsAw\r\na=ice-pwd:short\r\n", "22-256"),
        ("hello\r\n", "not an a= or m= line"),
        ("a=candidate:1 1 udp\r\n", "malformed candidate"),
        ("m=audio 9 X 0\r\nm=video 9 X 0\r\n", "more than one m= line"),
        (f"a=end-of-candidates\r\na={CANDIDATE}\r\n", "after a=end-of-candidates"),
    ],
)
def test_bad_fragments_are_one_sentence_errors(text: str, message: str) -> None:
    with pytest.raises(SignalingError, match=message):
        parse_sdpfrag(text)


def test_answer_with_ice_replaces_credentials_and_candidates() -> None:
    answer = (
        "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        "a=ice-ufrag:old1\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\n"
        "a=candidate:9 1 udp 1 127.0.0.9 9 typ host\r\na=end-of-candidates\r\n"
        "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
    )
    new = answer_with_ice(answer, IceCredentials("new1", PWD, (CANDIDATE,)))
    assert "old" not in new and "127.0.0.9" not in new
    audio, video = new.split("m=video")
    assert f"a=ice-ufrag:new1\r\na=ice-pwd:{PWD}" in audio
    assert f"a={CANDIDATE}\r\na=end-of-candidates" in audio
    assert "candidate" not in video


def test_if_match() -> None:
    assert if_match_allows("*", '"a"')
    assert if_match_allows('"b", "a"', '"a"')
    assert not if_match_allows('W/"a"', '"a"')  # strong comparison
    assert not if_match_allows('"b"', '"a"')
