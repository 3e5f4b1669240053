"""The one DTLS record parser: the stack's transport and the observer's wire tap.

A datagram whose first byte is 20..63 is DTLS (RFC 7983 §7 demultiplexing; STUN
is 0..3, SRTP/SRTCP 128..191). :func:`parse_records` splits such a datagram into
its records (a datagram may carry several, RFC 6347 §4.1.1) and reads what can be
read without keys. DTLS 1.0/1.2 records have a 13-byte header in the clear:
content type, version, epoch, 48-bit sequence number, length (RFC 6347 §4.1).
Epoch 0 is plaintext, so its handshake messages (RFC 6347 §4.2.2 header) and
alerts can be read; the 32-byte random of a ClientHello or ServerHello sits right
after the 2-byte version in the first fragment. DTLS 1.3 ciphertext uses the
unified header (RFC 9147 §4, first byte ``0b001CSLEE``): it is reported as an
opaque ``application_data`` record with ``unified_header=True``. Records with a
connection ID (RFC 9146) cannot be delimited without the negotiated CID length
and end the parse; WebRTC does not negotiate CIDs. Garbage never raises: parsing
stops at the first record that does not fit and returns what was read.

Two users, one reading of the bytes: :mod:`agent.stack.dtls` packs OpenSSL's
output into datagrams record by record (:func:`split_records`) and spots a far
end's new ClientHello (:func:`client_hello_random`); the observer's
:mod:`agent.observe.dtlswire` counts handshake starts from the same records.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

DTLS_FIRST_BYTE_MIN = 20
DTLS_FIRST_BYTE_MAX = 63

RECORD_HEADER_LEN = 13  # RFC 6347 §4.1
HANDSHAKE_HEADER_LEN = 12  # RFC 6347 §4.2.2
RANDOM_LEN = 32
VERSION_LEN = 2

DTLS_1_0 = 0xFEFF
DTLS_1_2 = 0xFEFD
DTLS_1_3 = 0xFEFC

#: RFC 9147 §4: unified header bits.
_UNIFIED_MASK = 0b1110_0000
_UNIFIED_PREFIX = 0b0010_0000
_UNIFIED_CID = 0b0001_0000
_UNIFIED_SEQ16 = 0b0000_1000
_UNIFIED_LENGTH = 0b0000_0100
_UNIFIED_EPOCH = 0b0000_0011

#: RFC 8446 §4.1.3: the ServerHello.random that marks a HelloRetryRequest.
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)


class ContentType(enum.IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24
    TLS12_CID = 25  # RFC 9146
    ACK = 26  # RFC 9147 §7


class HandshakeType(enum.IntEnum):
    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3
    NEW_SESSION_TICKET = 4
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


class AlertLevel(enum.IntEnum):
    WARNING = 1
    FATAL = 2


class AlertDescription(enum.IntEnum):
    """The alerts a WebRTC call is likely to show (RFC 5246 §7.2)."""

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    HANDSHAKE_FAILURE = 40
    BAD_CERTIFICATE = 42
    CERTIFICATE_EXPIRED = 45
    ILLEGAL_PARAMETER = 47
    DECRYPT_ERROR = 51
    PROTOCOL_VERSION = 70
    INTERNAL_ERROR = 80
    NO_RENEGOTIATION = 100


@dataclass(frozen=True)
class DtlsRecord:
    content_type: int
    version: int
    epoch: int
    sequence: int
    #: length of the record's fragment (payload), from its header
    length: int
    #: plaintext (epoch 0) handshake records: their first message's header
    handshake_type: int | None = None
    message_seq: int | None = None
    #: ClientHello / ServerHello randoms, from a first fragment holding them
    client_random: bytes | None = None
    server_random: bytes | None = None
    #: plaintext (epoch 0) alerts
    alert_level: int | None = None
    alert_description: int | None = None
    #: DTLS 1.3 unified header: type opaque, epoch low bits, sequence encrypted
    unified_header: bool = False
    #: the whole record on the wire, header included (where the next one starts)
    wire_length: int = field(default=0, compare=False)

    @property
    def encrypted(self) -> bool:
        return self.epoch > 0 or self.unified_header


def is_dtls(datagram: bytes) -> bool:
    """RFC 7983 §7: does this datagram on an ICE transport carry DTLS?"""
    return bool(datagram) and DTLS_FIRST_BYTE_MIN <= datagram[0] <= DTLS_FIRST_BYTE_MAX


def parse_records(datagram: bytes) -> list[DtlsRecord]:
    """The DTLS records in one datagram, in order; never raises on garbage."""
    records: list[DtlsRecord] = []
    if not is_dtls(datagram):
        return records
    view = memoryview(datagram)
    pos = 0
    while pos < len(view):
        first = view[pos]
        if first & _UNIFIED_MASK == _UNIFIED_PREFIX:
            parsed = _parse_unified(view, pos)
        elif DTLS_FIRST_BYTE_MIN <= first < _UNIFIED_PREFIX:
            parsed = _parse_plaintext_header(view, pos)
        else:
            parsed = None
        if parsed is None:
            break
        record, pos = parsed
        records.append(record)
    return records


def _parse_plaintext_header(
    view: memoryview, pos: int
) -> tuple[DtlsRecord, int] | None:
    content_type = view[pos]
    # RFC 9146: the CID's length is not on the wire; nothing after it is
    # delimitable.
    if content_type == ContentType.TLS12_CID:
        return None
    if len(view) - pos < RECORD_HEADER_LEN:
        return None
    version = int.from_bytes(view[pos + 1 : pos + 3])
    # 0xFE.. for DTLS 1.x; rejecting others keeps stray bytes from parsing.
    if version >> 8 != 0xFE:
        return None
    epoch = int.from_bytes(view[pos + 3 : pos + 5])
    sequence = int.from_bytes(view[pos + 5 : pos + 11])
    length = int.from_bytes(view[pos + 11 : pos + 13])
    end = pos + RECORD_HEADER_LEN + length
    if end > len(view):
        return None
    fragment = view[pos + RECORD_HEADER_LEN : end]

    handshake_type = message_seq = None
    client_random = server_random = None
    alert_level = alert_description = None
    if epoch == 0 and content_type == ContentType.HANDSHAKE:
        if len(fragment) >= HANDSHAKE_HEADER_LEN:
            handshake_type = fragment[0]
            message_seq = int.from_bytes(fragment[4:6])
            fragment_offset = int.from_bytes(fragment[6:9])
            random = _hello_random(fragment, fragment_offset)
            if handshake_type == HandshakeType.CLIENT_HELLO:
                client_random = random
            elif handshake_type == HandshakeType.SERVER_HELLO:
                server_random = random
    elif epoch == 0 and content_type == ContentType.ALERT and len(fragment) >= 2:
        alert_level, alert_description = fragment[0], fragment[1]

    record = DtlsRecord(
        content_type=content_type,
        version=version,
        epoch=epoch,
        sequence=sequence,
        length=length,
        handshake_type=handshake_type,
        message_seq=message_seq,
        client_random=client_random,
        server_random=server_random,
        alert_level=alert_level,
        alert_description=alert_description,
        wire_length=end - pos,
    )
    return record, end


def _hello_random(fragment: memoryview, fragment_offset: int) -> bytes | None:
    # ClientHello and ServerHello both open with version(2) + random(32); only
    # a first fragment that holds all of it can be read.
    start = HANDSHAKE_HEADER_LEN + VERSION_LEN
    if fragment_offset != 0 or len(fragment) < start + RANDOM_LEN:
        return None
    return bytes(fragment[start : start + RANDOM_LEN])


def _parse_unified(view: memoryview, pos: int) -> tuple[DtlsRecord, int] | None:
    flags = view[pos]
    if flags & _UNIFIED_CID:
        return None
    seq_len = 2 if flags & _UNIFIED_SEQ16 else 1
    header_len = 1 + seq_len + (2 if flags & _UNIFIED_LENGTH else 0)
    if len(view) - pos < header_len:
        return None
    sequence = int.from_bytes(view[pos + 1 : pos + 1 + seq_len])
    if flags & _UNIFIED_LENGTH:
        length = int.from_bytes(view[pos + 1 + seq_len : pos + header_len])
    else:
        # No length field: the record runs to the end of the datagram.
        length = len(view) - pos - header_len
    end = pos + header_len + length
    if end > len(view):
        return None
    record = DtlsRecord(
        # TLS 1.3 ciphertext's outer type is application_data (RFC 8446 §5.2).
        content_type=ContentType.APPLICATION_DATA,
        version=DTLS_1_3,
        epoch=flags & _UNIFIED_EPOCH,
        sequence=sequence,
        length=length,
        unified_header=True,
        wire_length=end - pos,
    )
    return record, end


def split_records(data: bytes) -> Iterator[bytes]:
    """Whole DTLS records of a buffer, as bytes, in order."""
    offset = 0
    for record in parse_records(data):
        yield data[offset : offset + record.wire_length]
        offset += record.wire_length


def client_hello_random(datagram: bytes) -> bytes | None:
    """The 32-byte random of a plaintext ClientHello opening ``datagram``, else None
    (only a first fragment holding the whole random can be read)."""
    records = parse_records(datagram)
    if not records or records[0].handshake_type != HandshakeType.CLIENT_HELLO:
        return None
    return records[0].client_random


__all__ = [
    "DTLS_1_0",
    "DTLS_1_2",
    "DTLS_1_3",
    "DTLS_FIRST_BYTE_MAX",
    "DTLS_FIRST_BYTE_MIN",
    "HANDSHAKE_HEADER_LEN",
    "HELLO_RETRY_REQUEST_RANDOM",
    "RANDOM_LEN",
    "RECORD_HEADER_LEN",
    "VERSION_LEN",
    "AlertDescription",
    "AlertLevel",
    "ContentType",
    "DtlsRecord",
    "HandshakeType",
    "client_hello_random",
    "is_dtls",
    "parse_records",
    "split_records",
]
