"""DTLS record parsing and handshake-start tracking.

Two kinds of input: datagrams built byte by byte (every corner of the rules),
and datagrams captured from real OpenSSL DTLS 1.2 endpoints talking through
memory BIOs (the wire the tap really sees: cookie exchange, retransmitted
flights, a new association, renegotiation, close_notify, a failed handshake).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL

from agent.observe.dtlswire import (
    DTLS_1_0,
    DTLS_1_2,
    DTLS_1_3,
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    AlertLevel,
    AlertSeen,
    ContentType,
    Direction,
    DtlsRecord,
    HandshakeStart,
    HandshakeTracker,
    HandshakeType,
    StartKind,
    TrackerEvent,
    is_dtls,
    parse_records,
)

OUT = Direction.OUTBOUND
IN = Direction.INBOUND

# -- byte-level builders (RFC 6347 §4.1, §4.2.2) -----------------------------


def record(
    content_type: int,
    payload: bytes,
    *,
    epoch: int = 0,
    seq: int = 0,
    version: int = DTLS_1_2,
) -> bytes:
    return (
        bytes([content_type])
        + version.to_bytes(2)
        + epoch.to_bytes(2)
        + seq.to_bytes(6)
        + len(payload).to_bytes(2)
        + payload
    )


def handshake(
    msg_type: int,
    body: bytes,
    *,
    message_seq: int = 0,
    fragment_offset: int = 0,
    total_len: int | None = None,
) -> bytes:
    total = len(body) if total_len is None else total_len
    return (
        bytes([msg_type])
        + total.to_bytes(3)
        + message_seq.to_bytes(2)
        + fragment_offset.to_bytes(3)
        + len(body).to_bytes(3)
        + body
    )


def hello_body(random: bytes, cookie: bytes | None = None) -> bytes:
    body = DTLS_1_2.to_bytes(2) + random + b"\x00"  # empty session id
    if cookie is not None:
        body += bytes([len(cookie)]) + cookie
    return body + b"\x00\x02\xc0\x2b\x01\x00"  # one suite, null compression


def client_hello(
    random: bytes, *, cookie: bytes = b"", message_seq: int = 0, seq: int = 0
) -> bytes:
    return record(
        ContentType.HANDSHAKE,
        handshake(
            HandshakeType.CLIENT_HELLO,
            hello_body(random, cookie),
            message_seq=message_seq,
        ),
        seq=seq,
        version=DTLS_1_0,
    )


def server_hello(random: bytes) -> bytes:
    return record(
        ContentType.HANDSHAKE,
        handshake(HandshakeType.SERVER_HELLO, hello_body(random)),
    )


def hello_verify_request(cookie: bytes) -> bytes:
    body = DTLS_1_0.to_bytes(2) + bytes([len(cookie)]) + cookie
    return record(
        ContentType.HANDSHAKE, handshake(HandshakeType.HELLO_VERIFY_REQUEST, body)
    )


def hello_request() -> bytes:
    return record(ContentType.HANDSHAKE, handshake(HandshakeType.HELLO_REQUEST, b""))


def plaintext_alert(level: int, description: int) -> bytes:
    return record(ContentType.ALERT, bytes([level, description]))


def encrypted(content_type: int, size: int, *, epoch: int = 1, seq: int = 0) -> bytes:
    return record(content_type, b"\xaa" * size, epoch=epoch, seq=seq)


def unified(
    payload: bytes, *, epoch_bits: int = 3, seq16: bool = True, length: bool = True
) -> bytes:
    flags = 0b0010_0000 | (0b1000 if seq16 else 0) | (0b100 if length else 0)
    flags |= epoch_bits & 0b11
    header = bytes([flags]) + (b"\x12\x34" if seq16 else b"\x56")
    if length:
        header += len(payload).to_bytes(2)
    return header + payload


def starts(events: list[TrackerEvent]) -> list[HandshakeStart]:
    return [e for e in events if isinstance(e, HandshakeStart)]


def alerts(events: list[TrackerEvent]) -> list[AlertSeen]:
    return [e for e in events if isinstance(e, AlertSeen)]


R1 = bytes([1]) * 32
R2 = bytes([2]) * 32
R3 = bytes([3]) * 32
FINISHED_GCM = 12 + 12 + 24  # handshake header + verify_data + nonce/tag
RENEG_CLIENT_HELLO = 184  # as captured from OpenSSL below

# -- parse_records -------------------------------------------------------------


def test_client_hello_fields() -> None:
    (rec,) = parse_records(client_hello(R1, message_seq=1, seq=7))

    assert rec.content_type == ContentType.HANDSHAKE
    assert rec.version == DTLS_1_0
    assert rec.epoch == 0
    assert rec.sequence == 7
    assert rec.length == len(client_hello(R1)) - 13
    assert rec.handshake_type == HandshakeType.CLIENT_HELLO
    assert rec.message_seq == 1
    assert rec.client_random == R1
    assert rec.server_random is None
    assert not rec.encrypted


def test_server_hello_random_is_read() -> None:
    (rec,) = parse_records(server_hello(R2))

    assert rec.handshake_type == HandshakeType.SERVER_HELLO
    assert rec.server_random == R2
    assert rec.client_random is None


def test_several_records_in_one_datagram() -> None:
    datagram = (
        record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        + encrypted(ContentType.HANDSHAKE, FINISHED_GCM, epoch=1, seq=0)
        + encrypted(ContentType.APPLICATION_DATA, 100, epoch=1, seq=1)
    )
    recs = parse_records(datagram)

    assert [(r.content_type, r.epoch, r.sequence) for r in recs] == [
        (ContentType.CHANGE_CIPHER_SPEC, 0, 0),
        (ContentType.HANDSHAKE, 1, 0),
        (ContentType.APPLICATION_DATA, 1, 1),
    ]
    assert recs[1].encrypted
    assert recs[1].handshake_type is None  # encrypted: unreadable
    assert recs[1].length == FINISHED_GCM


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x00\x01\x00\x00" + bytes(16), b"\x80\x6f" + bytes(20), b"\x13abc"],
    ids=["empty", "stun", "rtp", "below-20"],
)
def test_non_dtls_datagrams_yield_nothing(datagram: bytes) -> None:
    assert parse_records(datagram) == []


def test_is_dtls_follows_rfc7983() -> None:
    assert [b for b in range(256) if is_dtls(bytes([b]))] == list(range(20, 64))


def test_truncated_record_ends_the_parse_keeping_earlier_ones() -> None:
    whole = hello_request()
    datagram = whole + client_hello(R1)[:-5]

    assert [r.handshake_type for r in parse_records(datagram)] == [
        HandshakeType.HELLO_REQUEST
    ]


def test_wrong_version_ends_the_parse() -> None:
    datagram = hello_request() + record(ContentType.HANDSHAKE, b"x", version=0x0303)

    assert len(parse_records(datagram)) == 1


def test_connection_id_record_ends_the_parse() -> None:
    # RFC 9146: without the negotiated CID length the record cannot be cut out.
    datagram = hello_request() + record(ContentType.TLS12_CID, b"x" * 20, epoch=1)

    assert len(parse_records(datagram)) == 1


def test_later_client_hello_fragment_has_no_random() -> None:
    body = hello_body(R1)
    first = record(
        ContentType.HANDSHAKE,
        handshake(HandshakeType.CLIENT_HELLO, body[:20], total_len=len(body)),
    )
    later = record(
        ContentType.HANDSHAKE,
        handshake(
            HandshakeType.CLIENT_HELLO,
            body[20:],
            fragment_offset=20,
            total_len=len(body),
        ),
    )

    (rec_first,) = parse_records(first)
    (rec_later,) = parse_records(later)
    assert rec_first.handshake_type == rec_later.handshake_type == 1
    assert rec_first.client_random is None  # random not complete in 20 bytes
    assert rec_later.client_random is None


def test_plaintext_and_encrypted_alerts() -> None:
    (plain,) = parse_records(plaintext_alert(2, 40))
    (hidden,) = parse_records(encrypted(ContentType.ALERT, 26))

    assert (plain.alert_level, plain.alert_description) == (2, 40)
    assert (hidden.alert_level, hidden.alert_description) == (None, None)
    assert hidden.encrypted


def test_dtls13_unified_headers_are_opaque_records() -> None:
    datagram = (
        unified(b"\x00" * 30, epoch_bits=3)
        + unified(b"\x00" * 10, epoch_bits=2, seq16=False)
        + unified(b"\x00" * 17, length=False)  # runs to the end
    )
    recs = parse_records(datagram)

    assert [(r.epoch, r.length, r.sequence) for r in recs] == [
        (3, 30, 0x1234),
        (2, 10, 0x56),
        (3, 17, 0x1234),
    ]
    assert all(r.unified_header and r.encrypted for r in recs)
    assert all(r.content_type == ContentType.APPLICATION_DATA for r in recs)
    assert all(r.version == DTLS_1_3 for r in recs)


def test_dtls13_connection_id_bit_ends_the_parse() -> None:
    assert parse_records(bytes([0b0011_1100]) + bytes(40)) == []


def _record_strategy() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(min_size=32, max_size=32).map(client_hello),
        st.binary(min_size=32, max_size=32).map(server_hello),
        st.just(hello_request()),
        st.tuples(st.integers(1, 2), st.integers(0, 255)).map(
            lambda a: plaintext_alert(*a)
        ),
        st.tuples(
            st.sampled_from([20, 21, 22, 23]),
            st.integers(0, 300),
            st.integers(1, 3),
        ).map(lambda a: encrypted(a[0], a[1], epoch=a[2])),
    )


@given(st.lists(_record_strategy(), min_size=1, max_size=6))
def test_concatenated_records_all_parse(records: list[bytes]) -> None:
    recs = parse_records(b"".join(records))

    assert len(recs) == len(records)
    assert [r.length + 13 for r in recs] == [len(r) for r in records]


@given(st.binary(max_size=400))
def test_garbage_never_raises(datagram: bytes) -> None:
    recs = parse_records(datagram)

    assert sum(r.length for r in recs) <= len(datagram)
    assert all(isinstance(r, DtlsRecord) for r in recs)


@given(st.binary(max_size=200))
def test_garbage_after_good_records_keeps_the_good_ones(tail: bytes) -> None:
    recs = parse_records(client_hello(R1) + hello_request() + tail)

    assert [r.handshake_type for r in recs[:2]] == [1, 0]


@given(st.lists(st.tuples(st.sampled_from(Direction), st.binary(max_size=300))))
def test_tracker_takes_any_datagrams(datagrams: list[tuple[Direction, bytes]]) -> None:
    tracker = HandshakeTracker()
    for i, (direction, datagram) in enumerate(datagrams):
        for event in tracker.feed(direction, datagram, float(i)):
            assert isinstance(event, HandshakeStart | AlertSeen)


@given(
    st.lists(
        st.tuples(st.sampled_from(Direction), st.sampled_from([R1, R2, R3])),
        min_size=1,
    )
)
def test_one_start_per_distinct_client_random(
    hellos: list[tuple[Direction, bytes]],
) -> None:
    tracker = HandshakeTracker()
    found: list[HandshakeStart] = []
    for i, (direction, random) in enumerate(hellos):
        found += starts(tracker.feed(direction, client_hello(random, seq=i), float(i)))
        if i == 0:
            tracker.mark_established()

    first_seen = list(dict.fromkeys(random for _, random in hellos))
    assert [s.client_random for s in found] == first_seen
    assert [s.is_initial for s in found] == [True] + [False] * (len(found) - 1)


# -- HandshakeTracker, hand-made wire -----------------------------------------------


def initial_handshake(
    tracker: HandshakeTracker, t_ms: float = 0.0
) -> list[TrackerEvent]:
    """We are the DTLS client: CH, HVR, CH+cookie, server flight, our Finished,
    their Finished (AES-GCM sizes)."""
    wire = [
        (OUT, client_hello(R1)),
        (IN, hello_verify_request(b"c00kie")),
        (OUT, client_hello(R1, cookie=b"c00kie", message_seq=1, seq=1)),
        (IN, server_hello(R2)),
        (
            OUT,
            record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
            + encrypted(ContentType.HANDSHAKE, FINISHED_GCM, epoch=1),
        ),
        (
            IN,
            record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
            + encrypted(ContentType.HANDSHAKE, FINISHED_GCM, epoch=1),
        ),
    ]
    events: list[TrackerEvent] = []
    for i, (direction, datagram) in enumerate(wire):
        events += tracker.feed(direction, datagram, t_ms + i)
    return events


def test_initial_handshake_with_cookie_exchange_is_one_initial_start() -> None:
    tracker = HandshakeTracker()
    events = initial_handshake(tracker)

    assert events == [
        HandshakeStart(OUT, 0.0, StartKind.CLIENT_HELLO, R1, is_initial=True)
    ]
    assert tracker.established  # both Finished seen on the wire


def test_retransmitted_client_hello_and_finished_are_not_starts() -> None:
    tracker = HandshakeTracker()
    initial_handshake(tracker)
    tracker.mark_established(10.0)

    again = tracker.feed(OUT, client_hello(R1, seq=9), 1000.0)
    again += tracker.feed(IN, encrypted(ContentType.HANDSHAKE, FINISHED_GCM), 3000.0)
    again += tracker.feed(OUT, encrypted(ContentType.HANDSHAKE, FINISHED_GCM), 3001.0)

    assert again == []


def test_new_client_hello_after_established_is_a_rehandshake() -> None:
    tracker = HandshakeTracker()
    initial_handshake(tracker)
    tracker.mark_established()

    events = tracker.feed(IN, client_hello(R3), 5000.0)

    assert events == [
        HandshakeStart(IN, 5000.0, StartKind.CLIENT_HELLO, R3, is_initial=False)
    ]
    # and its retransmission is not another one
    assert tracker.feed(IN, client_hello(R3, seq=1), 6000.0) == []


def test_retry_before_anything_completed_is_still_initial() -> None:
    tracker = HandshakeTracker()
    first = tracker.feed(OUT, client_hello(R1), 0.0)
    retry = tracker.feed(OUT, client_hello(R2), 3000.0)

    assert [s.is_initial for s in starts(first + retry)] == [True, True]


def test_chromium_dtls_restart_close_notify_then_new_client_hello() -> None:
    tracker = HandshakeTracker()
    initial_handshake(tracker)
    tracker.mark_established()

    events = tracker.feed(IN, encrypted(ContentType.ALERT, 26), 9000.0)
    events += tracker.feed(IN, client_hello(R3), 9001.0)

    assert events == [
        AlertSeen(IN, 9000.0, 1, None, None),
        HandshakeStart(IN, 9001.0, StartKind.CLIENT_HELLO, R3, is_initial=False),
    ]
    assert events[0].encrypted and not events[0].is_close_notify  # type: ignore[union-attr]


def test_plaintext_alert_is_reported_with_level_and_description() -> None:
    tracker = HandshakeTracker()
    tracker.feed(OUT, client_hello(R1), 0.0)
    (alert,) = tracker.feed(IN, plaintext_alert(2, 40), 1.0)

    assert alert == AlertSeen(IN, 1.0, 0, AlertLevel.FATAL, 40)
    assert isinstance(alert, AlertSeen)
    assert alert.is_fatal and not alert.encrypted
    assert alert.description == AlertDescription.HANDSHAKE_FAILURE


def test_plaintext_hello_request_and_its_answer_are_one_start() -> None:
    tracker = HandshakeTracker()
    initial_handshake(tracker)

    events = tracker.feed(IN, hello_request(), 100.0)
    events += tracker.feed(IN, hello_request(), 1100.0)  # retransmitted
    events += tracker.feed(OUT, client_hello(R3), 1101.0)  # the answer
    events += tracker.feed(IN, server_hello(bytes([4]) * 32), 1102.0)

    assert events == [
        HandshakeStart(IN, 100.0, StartKind.HELLO_REQUEST, None, is_initial=False)
    ]


def test_server_hello_without_a_seen_client_hello_is_a_start() -> None:
    tracker = HandshakeTracker()
    initial_handshake(tracker)

    events = tracker.feed(IN, server_hello(R3), 100.0)
    events += tracker.feed(IN, server_hello(R3), 1100.0)  # its retransmission

    # the server answered a ClientHello we must have sent
    assert events == [
        HandshakeStart(OUT, 100.0, StartKind.SERVER_HELLO, None, is_initial=False)
    ]


def test_hello_retry_request_is_not_a_server_hello() -> None:
    tracker = HandshakeTracker()
    initial_handshake(tracker)

    assert tracker.feed(IN, server_hello(HELLO_RETRY_REQUEST_RANDOM), 100.0) == []


# -- encrypted handshake records ------------------------------------------------------


def established_tracker(**kwargs: float) -> HandshakeTracker:
    tracker = HandshakeTracker(**kwargs)  # type: ignore[arg-type]
    initial_handshake(tracker)  # completes at t = 5 ms
    tracker.mark_established(5.0)
    return tracker


def reneg_flight(
    tracker: HandshakeTracker, t_ms: float, epoch: int
) -> list[TrackerEvent]:
    """A whole renegotiation under ``epoch``: our ClientHello, their flight,
    our flight + Finished under epoch + 1, their Finished."""
    wire = [
        (OUT, encrypted(ContentType.HANDSHAKE, RENEG_CLIENT_HELLO, epoch=epoch)),
        (IN, encrypted(ContentType.HANDSHAKE, 900, epoch=epoch)),
        (
            OUT,
            encrypted(ContentType.HANDSHAKE, 600, epoch=epoch)
            + encrypted(ContentType.CHANGE_CIPHER_SPEC, 25, epoch=epoch)
            + encrypted(ContentType.HANDSHAKE, FINISHED_GCM, epoch=epoch + 1),
        ),
        (
            IN,
            encrypted(ContentType.CHANGE_CIPHER_SPEC, 25, epoch=epoch)
            + encrypted(ContentType.HANDSHAKE, FINISHED_GCM, epoch=epoch + 1),
        ),
    ]
    events: list[TrackerEvent] = []
    for i, (direction, datagram) in enumerate(wire):
        events += tracker.feed(direction, datagram, t_ms + i)
    return events


def test_encrypted_renegotiation_is_one_start_per_handshake() -> None:
    tracker = established_tracker()

    first = reneg_flight(tracker, 10_000.0, epoch=1)
    # its Finished retransmitted, under the new epoch
    quiet = tracker.feed(
        IN, encrypted(ContentType.HANDSHAKE, FINISHED_GCM, epoch=2), 11_000.0
    )
    # an old-epoch straggler
    quiet += tracker.feed(IN, encrypted(ContentType.HANDSHAKE, 300, epoch=1), 11_001.0)
    second = reneg_flight(tracker, 20_000.0, epoch=2)

    assert first == [
        HandshakeStart(OUT, 10_000.0, StartKind.ENCRYPTED, None, False, epoch=1)
    ]
    assert quiet == []
    assert second == [
        HandshakeStart(OUT, 20_000.0, StartKind.ENCRYPTED, None, False, epoch=2)
    ]


def test_small_encrypted_record_is_a_finished_retransmission_inside_the_window() -> (
    None
):
    tracker = established_tracker(finished_window_ms=60_000.0)

    inside = tracker.feed(IN, encrypted(ContentType.HANDSHAKE, FINISHED_GCM), 60_005.0)
    after = tracker.feed(IN, encrypted(ContentType.HANDSHAKE, FINISHED_GCM), 60_006.0)

    assert inside == []
    assert starts(after) == [
        HandshakeStart(IN, 60_006.0, StartKind.ENCRYPTED, None, False, epoch=1)
    ]


def test_large_encrypted_record_is_a_start_even_inside_the_window() -> None:
    tracker = established_tracker()

    events = tracker.feed(IN, encrypted(ContentType.HANDSHAKE, 129), 6.0)

    assert [s.kind for s in starts(events)] == [StartKind.ENCRYPTED]


def test_refused_renegotiation_then_a_new_one_counts_twice() -> None:
    tracker = established_tracker()

    events = tracker.feed(
        OUT, encrypted(ContentType.HANDSHAKE, RENEG_CLIENT_HELLO), 1e4
    )
    # no_renegotiation warning, encrypted
    events += tracker.feed(IN, encrypted(ContentType.ALERT, 26), 1e4 + 1)
    events += tracker.feed(
        OUT, encrypted(ContentType.HANDSHAKE, RENEG_CLIENT_HELLO), 2e4
    )

    assert [type(e).__name__ for e in events] == [
        "HandshakeStart",
        "AlertSeen",
        "HandshakeStart",
    ]


def test_encrypted_records_before_established_are_not_starts() -> None:
    # the tap attached after the initial ClientHello went by
    tracker = HandshakeTracker()

    events = tracker.feed(OUT, encrypted(ContentType.HANDSHAKE, 400), 0.0)

    assert events == []


def test_mark_established_without_a_start_seen_anchors_the_window() -> None:
    tracker = HandshakeTracker(finished_window_ms=1000.0)
    tracker.feed(IN, encrypted(ContentType.APPLICATION_DATA, 100), 500.0)
    tracker.mark_established()  # at the last datagram's time, 500 ms

    inside = tracker.feed(IN, encrypted(ContentType.HANDSHAKE, FINISHED_GCM), 1500.0)
    after = tracker.feed(IN, encrypted(ContentType.HANDSHAKE, FINISHED_GCM), 1501.0)

    assert inside == []
    assert [s.is_initial for s in starts(after)] == [False]


def test_dtls13_ciphertext_never_starts_anything() -> None:
    tracker = HandshakeTracker()
    events = tracker.feed(OUT, client_hello(R1), 0.0)
    tracker.mark_established(10.0)
    for i in range(50):
        events += tracker.feed(IN, unified(bytes(200), epoch_bits=i % 4), 10.0 + i)

    assert len(starts(events)) == 1


def test_application_data_and_change_cipher_spec_are_silent() -> None:
    tracker = established_tracker()

    events = tracker.feed(IN, encrypted(ContentType.APPLICATION_DATA, 1000), 7.0)
    events += tracker.feed(IN, record(ContentType.CHANGE_CIPHER_SPEC, b"\x01"), 8.0)

    assert events == []


def test_many_handshakes_each_count_and_memory_stays_bounded() -> None:
    tracker = established_tracker()
    events: list[TrackerEvent] = []
    for i in range(500):
        events += tracker.feed(IN, client_hello(i.to_bytes(32)), 1000.0 + i)

    assert len(starts(events)) == 500
    assert not any(s.is_initial for s in starts(events))


# -- real OpenSSL DTLS 1.2 endpoints ------------------------------------------------


def make_context(*, ciphers: bytes = b"ECDHE-ECDSA-AES128-GCM-SHA256") -> SSL.Context:
    """An endpoint configured like aiortc's (ECDSA P-256 self-signed, DTLS,
    use_srtp, no tickets, any peer certificate accepted)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callagent-test")])
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
    return ctx


class Wire:
    """A client and a server joined by an in-memory path, with the wire tap of
    each side (OUTBOUND is what that side sent). Time is a counter: 1 ms per
    datagram."""

    def __init__(self, client: SSL.Connection, server: SSL.Connection) -> None:
        self.client = client
        self.server = server
        self.client_tap = HandshakeTracker()
        self.server_tap = HandshakeTracker()
        self.client_events: list[TrackerEvent] = []
        self.server_events: list[TrackerEvent] = []
        self.sent_by_client: list[bytes] = []
        self.sent_by_server: list[bytes] = []
        self.t_ms = 0.0

    def rejoin(self, client: SSL.Connection, server: SSL.Connection) -> None:
        """New endpoints on the same path (same taps): a new DTLS association."""
        self.client, self.server = client, server

    def pump(self, *, drop_to_client: bool = False) -> bool:
        moved = False
        for datagram in drain(self.client):
            moved = True
            self.t_ms += 1
            self.sent_by_client.append(datagram)
            self.client_events += self.client_tap.feed(OUT, datagram, self.t_ms)
            self.server_events += self.server_tap.feed(IN, datagram, self.t_ms)
            self.server.bio_write(datagram)
        for datagram in drain(self.server):
            moved = True
            self.t_ms += 1
            self.sent_by_server.append(datagram)
            self.server_events += self.server_tap.feed(OUT, datagram, self.t_ms)
            if drop_to_client:
                continue  # lost on the path: the client's tap never sees it
            self.client_events += self.client_tap.feed(IN, datagram, self.t_ms)
            self.client.bio_write(datagram)
        return moved

    def handshake(self, *, lose_server_last_flight: bool = False) -> tuple[bool, bool]:
        done = (False, False)
        for _ in range(20):
            done = (
                attempt(self.client.do_handshake),
                attempt(self.server.do_handshake),
            )
            # once the server is done, what it sends is its last flight
            moved = self.pump(drop_to_client=lose_server_last_flight and done[1])
            if done == (True, True) and not moved:
                break
        return done

    def service(self) -> None:
        """Let both sides process whatever arrived (renegotiation, alerts)."""
        for _ in range(20):
            attempt(lambda: self.client.recv(4096))
            attempt(lambda: self.server.recv(4096))
            if not self.pump():
                return


def drain(conn: SSL.Connection) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            data = conn.bio_read(65536)
        except SSL.WantReadError:
            return out
        if not data:
            return out
        out.append(data)


def attempt(op: Callable[[], object]) -> bool:
    try:
        op()
    except (SSL.WantReadError, SSL.ZeroReturnError):
        return False
    return True


def new_pair(
    server_ctx: SSL.Context | None = None,
) -> tuple[SSL.Connection, SSL.Connection]:
    client = SSL.Connection(make_context())
    client.set_connect_state()
    server = SSL.Connection(server_ctx or make_context())
    server.set_accept_state()
    return client, server


def cookie_server_context() -> SSL.Context:
    ctx = make_context()
    cookie_exchange = SSL.OP_COOKIE_EXCHANGE
    assert cookie_exchange is not None  # None only in OpenSSL builds without DTLS
    ctx.set_options(cookie_exchange)
    ctx.set_cookie_generate_callback(lambda conn: b"callagent-cookie")
    ctx.set_cookie_verify_callback(lambda conn, cookie: cookie == b"callagent-cookie")
    return ctx


def established_wire() -> Wire:
    wire = Wire(*new_pair(cookie_server_context()))
    assert wire.handshake() == (True, True)
    wire.client_tap.mark_established()
    wire.server_tap.mark_established()
    return wire


def test_real_initial_handshake_is_one_initial_start_on_each_side() -> None:
    wire = established_wire()

    # the cookie exchange really happened: two ClientHellos, one random
    hellos = [
        r
        for d in wire.sent_by_client
        for r in parse_records(d)
        if r.handshake_type == HandshakeType.CLIENT_HELLO
    ]
    assert len(hellos) == 2
    assert hellos[0].client_random == hellos[1].client_random is not None
    assert [r.handshake_type for r in parse_records(wire.sent_by_server[0])] == [
        HandshakeType.HELLO_VERIFY_REQUEST
    ]

    (client_start,) = wire.client_events
    (server_start,) = wire.server_events
    assert isinstance(client_start, HandshakeStart)
    assert isinstance(server_start, HandshakeStart)
    assert (client_start.direction, server_start.direction) == (OUT, IN)
    assert client_start.is_initial and server_start.is_initial
    assert client_start.kind is StartKind.CLIENT_HELLO
    assert client_start.client_random == hellos[0].client_random


def test_real_replayed_flights_are_not_new_handshakes() -> None:
    wire = established_wire()

    for datagram in wire.sent_by_client:
        assert wire.server_tap.feed(IN, datagram, wire.t_ms + 1) == []
        assert wire.client_tap.feed(OUT, datagram, wire.t_ms + 1) == []
    for datagram in wire.sent_by_server:
        assert wire.client_tap.feed(IN, datagram, wire.t_ms + 1) == []


def test_real_timer_retransmission_of_the_last_flight_is_not_a_start() -> None:
    # The server's CCS+Finished is lost: the server is established, the client
    # retransmits its last flight on its timer (RFC 6347 §4.2.4) and the server
    # answers with its own again. Neither is a new handshake.
    wire = Wire(*new_pair())
    done = wire.handshake(lose_server_last_flight=True)
    assert done == (False, True)
    wire.server_tap.mark_established()
    events_before = list(wire.server_events)
    sent_before = len(wire.sent_by_client)
    sent_by_server_before = len(wire.sent_by_server)

    deadline = time.monotonic() + 10.0
    while not wire.client.DTLSv1_handle_timeout():
        timeout = wire.client.DTLSv1_get_timeout()
        assert timeout is not None and time.monotonic() < deadline
        time.sleep(max(timeout, 0.01))  # the protocol's own timer, typically 1 s
    wire.pump()  # the retransmitted flight reaches the server ...
    attempt(lambda: wire.server.recv(4096))  # ... which sends its last flight again
    wire.pump()
    assert attempt(wire.client.do_handshake)
    wire.client_tap.mark_established()

    assert len(wire.sent_by_server) > sent_by_server_before
    assert len(wire.sent_by_client) > sent_before  # it did retransmit
    retransmitted = [
        r for d in wire.sent_by_client[sent_before:] for r in parse_records(d)
    ]
    assert any(
        r.content_type == ContentType.HANDSHAKE and r.epoch == 1 for r in retransmitted
    )
    assert wire.server_events == events_before
    assert [s.is_initial for s in starts(wire.client_events)] == [True]


def test_real_new_association_after_established_is_one_rehandshake() -> None:
    wire = established_wire()

    wire.rejoin(*new_pair())
    assert wire.handshake() == (True, True)

    for events, direction in ((wire.client_events, OUT), (wire.server_events, IN)):
        found = starts(events)
        assert [(s.is_initial, s.kind, s.direction) for s in found] == [
            (True, StartKind.CLIENT_HELLO, direction),
            (False, StartKind.CLIENT_HELLO, direction),
        ]
        assert found[0].client_random != found[1].client_random


def test_real_close_notify_is_an_encrypted_alert() -> None:
    wire = established_wire()

    wire.client.shutdown()
    wire.pump()

    (alert,) = wire.server_events[1:]
    assert isinstance(alert, AlertSeen)
    assert alert.direction is IN
    assert alert.epoch == 1
    assert alert.encrypted and alert.level is None


def test_real_server_initiated_renegotiation_is_one_start() -> None:
    wire = established_wire()

    assert wire.server.renegotiate()
    attempt(wire.server.do_handshake)
    wire.service()
    wire.client.send(b"after")
    wire.service()

    assert wire.client.total_renegotiations() == 1
    # The encrypted HelloRequest is Finished-sized; the client's encrypted
    # ClientHello is what reveals the renegotiation, on both taps.
    for events, direction in ((wire.client_events, OUT), (wire.server_events, IN)):
        found = starts(events)
        assert [(s.is_initial, s.kind, s.direction, s.epoch) for s in found] == [
            (True, StartKind.CLIENT_HELLO, direction, 0),
            (False, StartKind.ENCRYPTED, direction, 1),
        ]

    # after it, close_notify travels under the renegotiated epoch
    wire.client.shutdown()
    wire.pump()
    assert [(a.epoch, a.level) for a in alerts(wire.server_events)] == [(2, None)]


def test_real_refused_client_renegotiation_is_a_start_and_an_alert() -> None:
    # OpenSSL servers refuse client-initiated renegotiation by default.
    wire = established_wire()

    assert wire.client.renegotiate()
    attempt(wire.client.do_handshake)
    wire.pump()
    with pytest.raises(SSL.Error):
        wire.server.recv(4096)  # processes the ClientHello, answers no_renegotiation
    wire.pump()

    rehandshakes = [s for s in starts(wire.server_events) if not s.is_initial]
    assert [(s.kind, s.direction) for s in rehandshakes] == [(StartKind.ENCRYPTED, IN)]
    assert [a.direction for a in alerts(wire.client_events)] == [IN]


def test_real_failed_handshake_shows_a_plaintext_fatal_alert() -> None:
    server_ctx = make_context(ciphers=b"ECDHE-ECDSA-CHACHA20-POLY1305")
    client = SSL.Connection(make_context(ciphers=b"ECDHE-ECDSA-AES128-GCM-SHA256"))
    client.set_connect_state()
    server = SSL.Connection(server_ctx)
    server.set_accept_state()
    wire = Wire(client, server)

    attempt(client.do_handshake)
    wire.pump()
    with pytest.raises(SSL.Error):
        server.do_handshake()
    wire.pump()

    (alert,) = alerts(wire.client_events)
    assert (alert.direction, alert.epoch) == (IN, 0)
    assert alert.is_fatal
    assert alert.description == AlertDescription.HANDSHAKE_FAILURE
