"""The lean SRTP call gives pylibsrtp's bytes and pylibsrtp's errors."""

from __future__ import annotations

import gc
import struct

import pylibsrtp
import pytest

from agent.stack.srtp import SrtpSession, srtp_policy, srtp_session

KEY = bytes(range(30))
OTHER_KEY = bytes(range(1, 31))
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def rtp(seq: int, payload: bytes = b"\x01" * 80) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 0x1234) + payload


def rtcp_sr() -> bytes:
    # RFC 3550 §6.4.1 sender report, no report blocks (length 6 words).
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x1234, 1, 2, 3, 4, 5)


def reference(outbound: bool) -> pylibsrtp.Session:
    """pylibsrtp's own session, whose per-packet calls ours must match."""
    return pylibsrtp.Session(srtp_policy(KEY, PROFILE, outbound=outbound))


def test_protect_matches_pylibsrtp_and_round_trips() -> None:
    ours, theirs = srtp_session(KEY, PROFILE, outbound=True), reference(True)
    rx = srtp_session(KEY, PROFILE, outbound=False)
    for seq in range(100, 130):
        packet = rtp(seq, bytes([seq % 256]) * (40 + seq % 50))
        protected = ours.protect(packet)
        assert protected == theirs.protect(packet)
        assert protected != packet and len(protected) == len(packet) + 10
        assert rx.unprotect(protected) == packet
    report = rtcp_sr()
    protected = ours.protect_rtcp(report)
    assert protected == theirs.protect_rtcp(report)
    assert rx.unprotect_rtcp(protected) == report


def test_errors_are_pylibsrtps() -> None:
    tx = srtp_session(KEY, PROFILE, outbound=True)
    wrong = srtp_session(OTHER_KEY, PROFILE, outbound=False)
    rx = srtp_session(KEY, PROFILE, outbound=False)
    protected = tx.protect(rtp(7))
    with pytest.raises(pylibsrtp.Error, match="authentication failure"):
        wrong.unprotect(protected)
    assert rx.unprotect(protected) == rtp(7)
    with pytest.raises(pylibsrtp.Error, match="replay"):
        rx.unprotect(protected)  # the same packet again
    with pytest.raises(ValueError, match="too long"):
        tx.protect(rtp(8, b"\x00" * 1500))


def test_a_session_outlives_its_builder() -> None:
    # The srtp_t is freed with the pylibsrtp Session: ours must keep it.
    session = SrtpSession(reference(True))
    rx = srtp_session(KEY, PROFILE, outbound=False)
    gc.collect()
    assert rx.unprotect(session.protect(rtp(1))) == rtp(1)
