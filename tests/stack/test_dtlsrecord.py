"""The stack's uses of the one DTLS record parser (unit tier): packing OpenSSL's
output into datagrams record by record, and spotting a new ClientHello."""

from __future__ import annotations

from agent.stack.association import pack_datagrams
from agent.stack.dtlsrecord import client_hello_random, split_records


def record(content_type: int, epoch: int, body: bytes) -> bytes:
    """A DTLS 1.2 record: type, version, epoch, 48-bit sequence, length, body."""
    return (
        bytes([content_type])
        + b"\xfe\xfd"
        + epoch.to_bytes(2, "big")
        + (7).to_bytes(6, "big")
        + len(body).to_bytes(2, "big")
        + body
    )


def client_hello(random: bytes) -> bytes:
    # handshake header: type 1, length, message_seq, fragment offset 0, length
    body = b"\xfe\xfd" + random + b"\x00" * 10
    header = b"\x01" + len(body).to_bytes(3, "big") + b"\x00\x00"
    header += b"\x00\x00\x00" + len(body).to_bytes(3, "big")
    return record(22, 0, header + body)


def test_records_are_split_whole_and_packed_up_to_the_mtu() -> None:
    records = [
        record(22, 0, b"a" * 100),
        record(20, 0, b"\x01"),
        record(22, 1, b"b" * 60),
    ]
    flight = b"".join(records)
    assert list(split_records(flight)) == records
    # A truncated last record is not sent half.
    assert list(split_records(flight[:-1])) == records[:2]
    datagrams = pack_datagrams(flight, mtu=130)
    assert datagrams == [records[0] + records[1], records[2]]
    # One record larger than the MTU still goes, alone.
    assert pack_datagrams(records[0], mtu=50) == [records[0]]


def test_a_client_hello_random_is_read_from_a_first_fragment_only() -> None:
    random = bytes(range(32))
    assert client_hello_random(client_hello(random)) == random
    assert client_hello_random(record(22, 1, b"x" * 80)) is None  # encrypted
    assert client_hello_random(record(21, 0, b"\x02\x28")) is None  # an alert
    assert client_hello_random(b"\x80" + b"\x00" * 40) is None  # SRTP
