"""DTLS that meets far ends with either key: an RSA certificate on one side
(webrtcbin's default, many SBCs) handshakes with our ECDSA side whichever
DTLS role it has, and the negotiated suite is the one its key calls for."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.stack.association import DTLS_CIPHERS
from agent.stack.certs import make_certificate
from agent.stack.peer import CertificateKind, Peer
from tests.support.peers import Recorder, connect, make_peer, packets_after


def test_both_certificate_kinds_are_made() -> None:
    assert isinstance(
        make_certificate(kind=CertificateKind.RSA)._key, rsa.RSAPrivateKey
    )
    assert isinstance(make_certificate()._key, ec.EllipticCurvePrivateKey)


def test_the_suites_cover_both_keys_and_the_browsers_cbc_fallbacks() -> None:
    suites = DTLS_CIPHERS.split(":")
    for key in ("ECDSA", "RSA"):
        for cipher in ("AES128-GCM-SHA256", "CHACHA20-POLY1305", "AES128-SHA"):
            assert f"ECDHE-{key}-{cipher}" in suites


async def media_both_ways(rec_a: Recorder, rec_b: Recorder) -> None:
    for recorder in (rec_a, rec_b):
        await packets_after(recorder, 10)


@pytest.mark.parametrize(
    ("rsa_side", "rsa_role"),
    # The answerer takes a=setup:active (RFC 8842 §5.3): the callee is client.
    [("caller", "server"), ("callee", "client")],
)
async def test_an_rsa_side_connects_as_dtls_client_and_as_server(
    rsa_side: str, rsa_role: str
) -> None:
    rsa_kw = {"certificate": CertificateKind.RSA}
    caller, rec_a = make_peer(
        "127.0.0.1", 31, **(rsa_kw if rsa_side == "caller" else {})
    )
    callee, rec_b = make_peer(
        "127.0.0.2", 32, **(rsa_kw if rsa_side == "callee" else {})
    )
    try:
        await connect(caller, callee)
        await media_both_ways(rec_a, rec_b)
        rsa_peer: Peer = caller if rsa_side == "caller" else callee
        assert rsa_peer.dtls.current is not None
        assert rsa_peer.dtls.current.role == rsa_role
        # The suite follows the server's key: ECDHE-RSA when the RSA side
        # serves, ECDHE-ECDSA when it is the client (it then signs with RSA in
        # CertificateVerify).
        expected = "ECDHE-RSA" if rsa_role == "server" else "ECDHE-ECDSA"
        for peer in (caller, callee):
            current = peer.dtls.current
            assert current is not None
            assert str(current.cipher).startswith(expected), current.describe()
        assert {caller.dtls.current.role, callee.dtls.current.role} == {  # type: ignore[union-attr]
            "client",
            "server",
        }
    finally:
        await caller.close()
        await callee.close()


async def test_a_rotated_certificate_keeps_its_kind_and_the_report_data_its_suite() -> (
    None
):
    caller, rec_a = make_peer("127.0.0.1", 33, certificate=CertificateKind.RSA)
    callee, rec_b = make_peer("127.0.0.2", 34)
    caller.renegotiate = callee.accept_offer
    callee.renegotiate = caller.accept_offer
    try:
        await connect(caller, callee)
        assert await asyncio.wait_for(caller.rehandshake_dtls(), 15)
        assert isinstance(caller.certificate._key, rsa.RSAPrivateKey)
        # What the rehandshake event's "after" carries into the report.
        current = caller.dtls.current
        assert current is not None
        after = current.describe()
        assert after["association"] == 1
        assert after["role"] == "server"
        assert str(after["cipher"]).startswith("ECDHE-RSA-")
        await media_both_ways(rec_a, rec_b)
    finally:
        await caller.close()
        await callee.close()
