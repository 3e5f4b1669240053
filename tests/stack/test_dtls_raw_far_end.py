"""Our DTLS association against a far end nobody here wrote: a raw OpenSSL
(pyOpenSSL) DTLS 1.2 endpoint with an RSA certificate and a short, old-SBC
style cipher list, over real loopback UDP sockets, with us as client and as
server. aiortc's ECDSA-only list fails the first case with alert 40."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from aiortc import RTCDtlsFingerprint
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from agent.stack.association import AssociationRunner, DtlsAssociation
from agent.stack.certs import make_certificate

Address = tuple[str, int]


def rsa_context(ciphers: bytes) -> tuple[SSL.Context, str]:
    """A DTLS context with a self-signed RSA 2048 certificate, and its
    sha-256 fingerprint as SDP writes it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw-sbc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_verify(
        SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True
    )
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_cipher_list(ciphers)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return ctx, fingerprint


class Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.inbox.put_nowait(data)


async def bound(address: str) -> tuple[Socket, Address]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Socket, local_addr=(address, 0)
    )
    return protocol, transport.get_extra_info("sockname")[:2]


async def raw_far_end(ssl: SSL.Connection, sock: Socket, peer: Address) -> None:
    """Drive a raw OpenSSL DTLS endpoint by hand until its handshake is done."""
    assert sock.transport is not None

    def flush() -> None:
        while True:
            try:
                chunk = ssl.bio_read(65536)
            except SSL.WantReadError:
                return
            sock.transport.sendto(chunk, peer)  # type: ignore[union-attr]

    while True:
        try:
            ssl.do_handshake()
            flush()
            return
        except SSL.WantReadError:
            flush()
        timeout = ssl.DTLSv1_get_timeout()
        try:
            data = await asyncio.wait_for(sock.inbox.get(), timeout or 5)
        except TimeoutError:
            ssl.DTLSv1_handle_timeout()
            continue
        ssl.bio_write(data)


@pytest.mark.parametrize(
    ("our_role", "far_ciphers", "negotiated"),
    [
        # The far end serves with RSA and takes one CBC suite (an old SBC).
        ("client", b"ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-SHA"),
        ("client", b"ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("client", b"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
        # We serve (ECDSA); the far end is an RSA client with CBC suites only.
        (
            "server",
            b"ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA",
            "ECDHE-ECDSA-AES256-SHA",
        ),
    ],
)
async def test_a_raw_openssl_far_end_with_an_rsa_certificate_connects(
    our_role: str, far_ciphers: bytes, negotiated: str
) -> None:
    ours, our_addr = await bound("127.0.0.1")
    theirs, their_addr = await bound("127.0.0.2")
    context, fingerprint = rsa_context(far_ciphers)
    far = SSL.Connection(context, None)
    if our_role == "client":
        far.set_accept_state()
    else:
        far.set_connect_state()
    association = DtlsAssociation(
        number=0,
        role=our_role,
        certificate=make_certificate(),
        remote_fingerprints=[RTCDtlsFingerprint("sha-256", fingerprint)],
    )
    association.inbox = ours.inbox

    async def send(data: bytes) -> None:
        assert ours.transport is not None
        ours.transport.sendto(data, their_addr)

    runner = AssociationRunner(association, send, 1200, lambda _a: None)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(raw_far_end(far, theirs, our_addr), 10)
        await asyncio.wait_for(association.established.wait(), 10)
        assert association.error is None
        assert association.cipher == far.get_cipher_name() == negotiated
        assert association.srtp_profile == "SRTP_AES128_CM_SHA1_80"
        assert association.version == "DTLSv1.2"
    finally:
        task.cancel()
        for sock in (ours, theirs):
            assert sock.transport is not None
            sock.transport.close()
