"""DTLS record classification for the wire tap: which handshakes *start*, when.

Theory of operation
-------------------
The wire tap sees every UDP datagram of an ICE transport in both directions. A
datagram whose first byte is 20..63 is DTLS (RFC 7983 §7 demultiplexing; STUN
is 0..3, SRTP/SRTCP 128..191). :func:`parse_records` splits such a datagram into
its records (a datagram may carry several, RFC 6347 §4.1.1) and reads what can be
read without keys; :class:`HandshakeTracker` turns the records into the two
facts the ``dtls_rehandshakes`` metric needs, whether or not our own DTLS stack
reacted to them: a handshake *started* (:class:`HandshakeStart`) and an alert
went by (:class:`AlertSeen`).

Records (parsed by :mod:`agent.stack.dtlsrecord`, shared with the stack)
    DTLS 1.0/1.2 records have a 13-byte header in the clear: content type,
    version, epoch, 48-bit sequence number, length (RFC 6347 §4.1). Epoch 0 is
    plaintext, so its handshake messages (RFC 6347 §4.2.2 header: type, length,
    message_seq, fragment offset/length) and alerts can be read; the 32-byte
    random of a ClientHello or ServerHello sits right after the 2-byte version
    in the first fragment. Records at epoch >= 1 are encrypted: only the header
    is known. DTLS 1.3 ciphertext uses the unified header (RFC 9147 §4, first
    byte ``0b001CSLEE``): it is reported as an opaque ``application_data``
    record with ``unified_header=True``; its epoch field holds only the low two
    bits and its sequence number is itself encrypted (RFC 9147 §4.2.3).
    Records with a connection ID (RFC 9146 ``tls12_cid``, or the unified
    header's C bit) cannot be delimited without the negotiated CID length and
    end the parse; WebRTC does not negotiate CIDs. Garbage never raises: parsing
    stops at the first record that does not fit and returns what was read.

When a handshake starts
    * A ClientHello with a client random not seen before starts a handshake. The
      same random again is the same handshake: a retransmitted flight, or the
      second ClientHello after a HelloVerifyRequest cookie exchange (RFC 6347
      §4.2.1), which must repeat the random. (For DTLS 1.3, RFC 9147 §5.1 and
      RFC 8446 §4.1.2 keep the random across a HelloRetryRequest too.)
    * A plaintext HelloRequest starts one; the ClientHello that answers it
      belongs to it, and a repeated HelloRequest before that answer does too.
    * A ServerHello with a new random while no plaintext handshake is under way
      means the tap missed its ClientHello (attached late, first fragment
      lost): a start of kind ``server_hello``, initiated from the other
      direction. The DTLS 1.3 HelloRetryRequest random (RFC 8446 §4.1.3) is not
      a ServerHello random.
    * Renegotiation (RFC 5746, DTLS 1.2 only) runs under the current keys, so its
      HelloRequest and ClientHello are epoch >= 1 handshake records: unreadable,
      and the same shape as a retransmitted Finished. The tracker separates
      them like this (kind ``encrypted``):

      - Each handshake ends with Finished, the first handshake message under
        the keys it negotiated, i.e. at its carrying epoch + 1 (RFC 5246
        §7.4.9). The tracker sees a handshake complete when such records have
        gone both ways; its keys' epoch becomes the *session epoch*.
      - While a handshake is under way, records at its carrying epoch belong to
        it, never a new start.
      - After completion, the side that sent the last flight must answer a
        retransmission of the peer's last flight for twice the TCP MSL
        (RFC 6347 §4.2.4), so Finished-sized records (<= ``max_finished_len``
        bytes; a Finished is 40-64 bytes with the WebRTC cipher suites) at the
        session epoch are retransmissions for ``finished_window_ms`` (240 s)
        after completion. A larger one (a renegotiation ClientHello, ~180 bytes
        with use_srtp and renegotiation_info) is a start at once; any one after
        the window is a start.
      - Records at an epoch below the session epoch are stale retransmissions.

      A small encrypted HelloRequest inside the window is therefore not
      counted; the ClientHello answering it is. A HelloRequest the client
      refuses (a ``no_renegotiation`` alert) started nothing, which is right.

    Completion is also taken from :meth:`HandshakeTracker.mark_established`,
    the observer's word that its DTLS transport is connected (it may be called
    without a time: the last datagram's time is used). A handshake that starts
    before any completion is ``is_initial``: a first attempt and its retries
    are the initial handshake (DESIGN.md counts only starts after the initial
    handshake completed); every start after it is a rehandshake.

Alerts
    Every alert record is reported (RFC 5246 §7.2): level and description when
    plaintext (epoch 0), ``None`` when encrypted. Chromium restarting DTLS sends
    an encrypted close_notify and then a new epoch-0 ClientHello; the tap
    reports both. An alert also ends the handshake under way (a refused
    renegotiation, a fatal failure), so the next one is counted.
    ChangeCipherSpec is not reported: it belongs to a handshake flight whose
    start (or retransmission) is already accounted for.

DTLS 1.3 ciphertext never counts: after a DTLS 1.3 handshake the content type
is hidden, KeyUpdate is not a handshake, and a new handshake needs a new
plaintext ClientHello, which is counted.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeAlias

# The record parser is the stack's: one parser for the transport and the tap.
# Its names are re-exported (``__all__``) for callers that import them from here.
from agent.stack.dtlsrecord import (
    DTLS_1_0,
    DTLS_1_2,
    DTLS_1_3,
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    AlertLevel,
    ContentType,
    DtlsRecord,
    HandshakeType,
    is_dtls,
    parse_records,
)

#: Finished records up to this many bytes may be retransmissions (see above).
MAX_FINISHED_RECORD_LEN = 128
#: RFC 6347 §4.2.4: last-flight retransmissions are answered for 2 x MSL.
FINISHED_WINDOW_MS = 240_000.0
#: Randoms remembered per direction kind; a call sees a handful.
MAX_REMEMBERED_RANDOMS = 64


class Direction(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"

    @property
    def other(self) -> Direction:
        return Direction.OUTBOUND if self is Direction.INBOUND else Direction.INBOUND


class StartKind(enum.StrEnum):
    CLIENT_HELLO = "client_hello"
    HELLO_REQUEST = "hello_request"
    #: a new ServerHello whose ClientHello the tap did not see
    SERVER_HELLO = "server_hello"
    #: an encrypted (epoch >= 1) handshake record that can only be a new handshake
    ENCRYPTED = "encrypted"


@dataclass(frozen=True)
class HandshakeStart:
    #: the direction the initiating side sent in: OUTBOUND means we started it
    direction: Direction
    t_ms: float
    kind: StartKind
    client_random: bytes | None
    #: started before any handshake completed (not a rehandshake)
    is_initial: bool
    #: epoch of the record that revealed the start (0: plaintext)
    epoch: int = 0


@dataclass(frozen=True)
class AlertSeen:
    direction: Direction
    t_ms: float
    epoch: int
    #: None when the alert was encrypted
    level: int | None
    description: int | None

    @property
    def encrypted(self) -> bool:
        return self.epoch > 0

    @property
    def is_close_notify(self) -> bool:
        return self.description == AlertDescription.CLOSE_NOTIFY

    @property
    def is_fatal(self) -> bool:
        return self.level == AlertLevel.FATAL


TrackerEvent: TypeAlias = HandshakeStart | AlertSeen


class _Randoms:
    """A bounded set of 32-byte randoms, oldest forgotten first."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def add(self, random: bytes) -> bool:
        """Remember ``random``; return whether it was new."""
        if random in self._seen:
            return False
        self._seen[random] = None
        if len(self._seen) > MAX_REMEMBERED_RANDOMS:
            self._seen.popitem(last=False)
        return True


class HandshakeTracker:
    """Detect DTLS handshake starts and alerts on one ICE transport's wire."""

    def __init__(
        self,
        *,
        finished_window_ms: float = FINISHED_WINDOW_MS,
        max_finished_len: int = MAX_FINISHED_RECORD_LEN,
    ) -> None:
        self._finished_window_ms = finished_window_ms
        self._max_finished_len = max_finished_len
        self._client_randoms = _Randoms()
        self._server_randoms = _Randoms()
        self._last_t_ms: float | None = None
        self._established = False
        # The handshake under way, if any, and the epoch its messages use.
        self._in_progress = False
        self._carrying_epoch = 0
        self._finished_from: set[Direction] = set()
        self._awaiting_client_hello = False
        # The last completed handshake: its keys' epoch and when it completed.
        self._session_epoch: int | None = None
        self._completed_at_ms: float | None = None

    @property
    def established(self) -> bool:
        return self._established

    def feed(
        self, direction: Direction, datagram: bytes, t_ms: float
    ) -> list[TrackerEvent]:
        """Account one datagram seen on the wire; return what it revealed."""
        self._last_t_ms = t_ms
        events: list[TrackerEvent] = []
        for record in parse_records(datagram):
            event = self._on_record(direction, record, t_ms)
            if event is not None:
                events.append(event)
        return events

    def mark_established(self, t_ms: float | None = None) -> None:
        """The observer's DTLS transport became connected (at ``t_ms``, or at
        the last datagram's time)."""
        if t_ms is None:
            t_ms = self._last_t_ms if self._last_t_ms is not None else 0.0
        if self._in_progress:
            self._complete(self._carrying_epoch + 1, t_ms)
        self._established = True
        if self._completed_at_ms is None:
            self._completed_at_ms = t_ms

    # -- records ----------------------------------------------------------

    def _on_record(
        self, direction: Direction, record: DtlsRecord, t_ms: float
    ) -> TrackerEvent | None:
        if record.unified_header:
            return None
        if record.content_type == ContentType.ALERT:
            self._in_progress = False
            self._awaiting_client_hello = False
            return AlertSeen(
                direction,
                t_ms,
                record.epoch,
                record.alert_level,
                record.alert_description,
            )
        if record.content_type != ContentType.HANDSHAKE:
            return None
        if record.epoch == 0:
            return self._on_plaintext_handshake(direction, record, t_ms)
        return self._on_encrypted_handshake(direction, record, t_ms)

    def _on_plaintext_handshake(
        self, direction: Direction, record: DtlsRecord, t_ms: float
    ) -> HandshakeStart | None:
        kind = record.handshake_type
        if kind == HandshakeType.CLIENT_HELLO:
            random = record.client_random
            if random is None or not self._client_randoms.add(random):
                return None
            if self._awaiting_client_hello:
                # The answer to a HelloRequest already counted.
                self._awaiting_client_hello = False
                return None
            return self._start(direction, t_ms, StartKind.CLIENT_HELLO, random, 0)
        if kind == HandshakeType.HELLO_REQUEST:
            if self._awaiting_client_hello:
                return None
            start = self._start(direction, t_ms, StartKind.HELLO_REQUEST, None, 0)
            self._awaiting_client_hello = True
            return start
        if kind == HandshakeType.SERVER_HELLO:
            random = record.server_random
            if random is None or random == HELLO_RETRY_REQUEST_RANDOM:
                return None
            if not self._server_randoms.add(random):
                return None
            if self._in_progress and self._carrying_epoch == 0:
                return None
            return self._start(direction.other, t_ms, StartKind.SERVER_HELLO, None, 0)
        return None

    def _on_encrypted_handshake(
        self, direction: Direction, record: DtlsRecord, t_ms: float
    ) -> HandshakeStart | None:
        epoch = record.epoch
        if self._in_progress:
            if epoch > self._carrying_epoch:
                # Under the new keys: this side's Finished.
                self._finished_from.add(direction)
                if len(self._finished_from) == len(Direction):
                    self._complete(epoch, t_ms)
            return None
        if self._session_epoch is None:
            if not self._established:
                # Part of an initial handshake whose start the tap missed.
                return None
            self._session_epoch = epoch
        if epoch < self._session_epoch:
            return None
        if (
            epoch == self._session_epoch
            and record.length <= self._max_finished_len
            and self._completed_at_ms is not None
            and t_ms - self._completed_at_ms <= self._finished_window_ms
        ):
            # RFC 6347 §4.2.4: a retransmitted last flight.
            return None
        return self._start(direction, t_ms, StartKind.ENCRYPTED, None, epoch)

    # -- handshake lifecycle ----------------------------------------------

    def _start(
        self,
        direction: Direction,
        t_ms: float,
        kind: StartKind,
        client_random: bytes | None,
        epoch: int,
    ) -> HandshakeStart:
        self._in_progress = True
        self._carrying_epoch = epoch
        self._finished_from.clear()
        self._awaiting_client_hello = False
        return HandshakeStart(
            direction=direction,
            t_ms=t_ms,
            kind=kind,
            client_random=client_random,
            is_initial=not self._established,
            epoch=epoch,
        )

    def _complete(self, epoch: int, t_ms: float) -> None:
        self._in_progress = False
        self._awaiting_client_hello = False
        self._session_epoch = epoch
        self._completed_at_ms = t_ms
        self._established = True


__all__ = [
    "DTLS_1_0",
    "DTLS_1_2",
    "DTLS_1_3",
    "FINISHED_WINDOW_MS",
    "HELLO_RETRY_REQUEST_RANDOM",
    "MAX_FINISHED_RECORD_LEN",
    "MAX_REMEMBERED_RANDOMS",
    "AlertDescription",
    "AlertLevel",
    "AlertSeen",
    "ContentType",
    "Direction",
    "DtlsRecord",
    "HandshakeStart",
    "HandshakeTracker",
    "HandshakeType",
    "StartKind",
    "TrackerEvent",
    "is_dtls",
    "parse_records",
]
