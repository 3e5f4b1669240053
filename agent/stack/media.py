"""The cheap media path: pre-encoded Opus out, RTP analysed in, nothing decoded.

Plain aiortc encodes every 20 ms audio frame in a worker thread and decodes every
received frame in another; the thread hand-offs, not the crypto, cap one process at
about 14 calls. A test call needs real, decodable media on the wire but not fresh
audio, so :class:`OpusPackets` encodes one second of a tone once per process and
:class:`RtpAudioSender` loops those packets with correct RTP sequence numbers and
timestamps (RFC 3550 §5.1, RFC 7587 for Opus), every sender of the process on
one timer (:mod:`agent.stack.mediaclock`), each packet's header packed with
``struct``, or written, protected and sent in one C call on the fast lane
(:mod:`agent.stack.fastroute`) while its route holds.
:class:`RtpAudioReceiver` is the DTLS-SRTP transport's RTP sink and hands
each packet's (seq, timestamp, arrival) to a listener — optionally
decoding the payload with aiortc's Opus decoder when a scenario asks for it.

Each received packet's arrival is the kernel's receive time when the socket
layer knows it (handed along with the datagram, :mod:`agent.stack.icenet`),
moved to the call clock; otherwise the time the socket was read. Each sender records its
own lateness: :attr:`RtpAudioSender.max_late_ms` (when packets really left vs
when they were due) and :attr:`RtpAudioSender.late` (each time the sender
itself went quiet for longer than its packet time, because this process was
busy). Such a pause makes a gap at the far end that is the agent's doing, not
the network's; it is compared with the far end's gaps as they are, spacing
against spacing, since a sender that is late by a steady amount makes none.

The pre-encoded loop costs ~145 ms of CPU; :func:`prepare_opus` builds it in a
worker thread before a call starts, so it never runs in the shared event loop
on the call path (it delayed the first call's handshake, issue 10 item 8).
"""

from __future__ import annotations

import array
import asyncio
import fractions
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable

import av
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import (
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpSenderInfo,
    RtcpSrPacket,
)

from agent.stack import fastroute
from agent.stack.dtls import RTP_HEADER
from agent.stack.fastroute import Route
from agent.stack.mediaclock import MediaClock, media_clock

logger = logging.getLogger(__name__)

OPUS_CLOCK_RATE = 48000
#: one second of tone is looped; long enough that Opus sees real signal changes
_LOOP_SECONDS = 1
_TONE_HZ = 440.0
_RTCP_INTERVAL_S = 1.0

RtpListener = Callable[[int, int, int, float], None]
"""(ssrc, sequence number, RTP timestamp, arrival time in ms on the call clock)."""


@functools.cache
def opus_packets(packet_ms: int) -> tuple[bytes, ...]:
    """One second of a 440 Hz tone encoded as Opus frames of ``packet_ms``."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = OPUS_CLOCK_RATE
    codec.format = "s16"
    codec.layout = "mono"
    codec.bit_rate = 32000
    codec.time_base = fractions.Fraction(1, OPUS_CLOCK_RATE)
    codec.options = {"application": "voip", "frame_duration": str(packet_ms)}
    samples = OPUS_CLOCK_RATE * packet_ms // 1000
    packets: list[bytes] = []
    frames = _LOOP_SECONDS * 1000 // packet_ms
    for i in range(frames):
        pcm = array.array(
            "h",
            (
                int(6000 * math.sin(2 * math.pi * _TONE_HZ * (i * samples + k) / 48000))
                for k in range(samples)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = OPUS_CLOCK_RATE
        frame.pts = i * samples
        frame.time_base = codec.time_base
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return tuple(packets[:frames])


_opus_lock = threading.Lock()


def _build_opus(packet_ms: int) -> tuple[bytes, ...]:
    # One builder at a time: calls starting together wait for the first one
    # (blocked on the lock, not competing for the GIL) and then hit the cache.
    with _opus_lock:
        return opus_packets(packet_ms)


async def prepare_opus(packet_ms: int) -> None:
    """Build the pre-encoded loop off the event loop (once per process)."""
    await asyncio.to_thread(_build_opus, packet_ms)


#: the sender's own pause, beyond its packet time, that is recorded
LATE_MS = 30.0
#: pauses kept per sender
MAX_LATE_RUNS = 1000
#: a sender this far behind its schedule (the loop stalled: debugger,
#: overload) starts afresh rather than bursting the missed packets
_RESYNC_S = 1.0

#: packets sent the ordinary way between two tries to resolve a fast route
_RESOLVE_EVERY = 10


def _no_fast_lane(
    route: Route, second: int, seq: int, timestamp: int, ssrc: int, payload: bytes
) -> bool | None:
    return None  # never called: no route is resolved without the extension


#: sends on a fast route: True, or None when the ordinary path must
#: (see :mod:`agent.stack.fastroute`)
send_rtp = _no_fast_lane if fastroute.native is None else fastroute.native.send_rtp


SendRtp = Callable[[bytes], None]
"""Protect and send one RTP/RTCP packet now; ``ConnectionError`` when nothing
could go out (the DTLS transport's ``send_rtp``)."""


class RtpAudioSender:
    """Sends pre-encoded Opus at a steady pace, with RTCP sender reports.

    Driven by the loop's :class:`~agent.stack.mediaclock.MediaClock` (one
    timer for every sender of the process), against an absolute schedule, so
    one late wake-up does not shift every later packet (which would itself
    look like a media gap to the far end). Sending stops quietly while the
    transport is not connected (``ConnectionError``) and resumes when it is:
    a paused transport is exactly what the far end's gap analysis must see,
    not an agent crash.
    """

    def __init__(
        self,
        *,
        send: SendRtp,
        ssrc: int,
        payload_type: int,
        packet_ms: int = 20,
        rng: random.Random | None = None,
        clock_ms: Callable[[], float] | None = None,
    ) -> None:
        rng = rng or random.Random()
        self._send = send
        #: resolves the C fast lane's route for what ``send`` would do (None:
        #: never); a packet whose route no longer holds goes through ``send``
        self._fast_route = fastroute.send_route_for(send)
        self._route: Route | None = None
        self._resolve_at = 0
        self._clock_ms = clock_ms
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.packet_ms = packet_ms
        self._interval = packet_ms / 1000
        self._payloads = opus_packets(packet_ms)
        self._loop_length = len(self._payloads)
        self._samples = OPUS_CLOCK_RATE * packet_ms // 1000
        self._seq = rng.randrange(0, 1 << 16)
        self._timestamp = rng.randrange(0, 1 << 32)
        self._clock: MediaClock | None = None
        self._loop_time: Callable[[], float] = time.monotonic
        self._index = 0
        self._next_rtcp = 0.0
        self._last_sent_ms: float | None = None
        #: loop time the sender was stopped (its RTP clock runs on)
        self._stopped_at: float | None = None
        self.packets_sent = 0
        self.octets_sent = 0
        self.send_errors = 0
        #: RTP packets numbered but refused by the transport (no ICE pair, DTLS
        #: down, a retired socket): their sequence numbers are holes at the
        #: receiver that no network made
        self.packets_unsent = 0
        #: (when, how long) in call-clock ms of each pause of this sender: the
        #: send before it, and the time to the next send (packet time + late)
        self.late: list[tuple[float, float]] = []
        #: the most any packet left after it was due
        self.max_late_ms = 0.0

    def start(self) -> None:
        if self._clock is None:
            loop = asyncio.get_running_loop()
            if self._stopped_at is not None:
                # Resumed (a re-offer put media back on): the RTP clock kept
                # running while nothing was sent (RFC 3550 §5.1).
                paused_s = loop.time() - self._stopped_at
                ticks = int(paused_s * OPUS_CLOCK_RATE)
                self._timestamp = (self._timestamp + ticks) & 0xFFFFFFFF
                self._stopped_at = None
                # The pause was asked for, not a late send: spacing starts anew.
                self._last_sent_ms = None
            self._loop_time = loop.time
            self._clock = media_clock()
            first = self._clock.add(self)
            self._next_rtcp = first + _RTCP_INTERVAL_S

    async def stop(self) -> None:
        if self._clock is not None:
            self._stopped_at = self._loop_time()
            self._clock.remove(self)
            self._clock = None
            self._note_late_at_stop()

    def _note_late_at_stop(self) -> None:
        """A sender stopped (hang-up, hold) while behind its schedule never
        sent the packets due since its last send: the far end's silence up to
        the stop is the agent's pause, recorded as any other late run."""
        clock, last = self._clock_ms, self._last_sent_ms
        if clock is None or last is None:
            return
        spacing = clock() - last
        if spacing >= self.packet_ms + LATE_MS and len(self.late) < MAX_LATE_RUNS:
            self.late.append((round(last, 1), round(spacing, 1)))

    def send_due(self, due: float) -> float | None:
        """Send the packet due at ``due`` (loop seconds); the next due time."""
        clock = self._clock_ms
        loop_now = self._loop_time()
        index = self._index
        payload = self._payloads[index % self._loop_length]
        second = (0x80 if index == 0 else 0) | self.payload_type  # marker, PT
        route = self._route
        if route is None and self._fast_route is not None and index >= self._resolve_at:
            route = self._route = self._fast_route()
            if route is None:  # the ordinary path's for now: ask again later
                self._resolve_at = index + _RESOLVE_EVERY
        if (
            route is not None
            and send_rtp(route, second, self._seq, self._timestamp, self.ssrc, payload)
            is True
        ):
            sent = True
        else:
            self._route = None  # no longer holds: resolved at the next packet
            header = RTP_HEADER.pack(
                0x80,  # version 2, no padding, extension or CSRC (RFC 3550 §5.1)
                second,
                self._seq,
                self._timestamp,
                self.ssrc,
            )
            sent = self._transmit(header + payload)
        if sent:
            # Counted only when it went out: unsent is not lost.
            self.packets_sent += 1
            self.octets_sent += len(payload)
        else:
            self.packets_unsent += 1
        if clock is not None:
            sent_ms = clock()
            late_ms = (loop_now - due) * 1000
            if late_ms > self.max_late_ms:
                self.max_late_ms = late_ms
            last = self._last_sent_ms
            if last is not None:
                spacing = sent_ms - last
                if (
                    spacing >= self.packet_ms + LATE_MS
                    and len(self.late) < MAX_LATE_RUNS
                ):
                    self.late.append((round(last, 1), round(spacing, 1)))
            self._last_sent_ms = sent_ms
        self._index = index + 1
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + self._samples) & 0xFFFFFFFF
        if loop_now >= self._next_rtcp:
            self._send_sender_report()
            self._next_rtcp += _RTCP_INTERVAL_S
        following = due + self._interval
        if loop_now - following > _RESYNC_S:
            # Start afresh from now rather than burst a second of packets.
            following = loop_now
            self._next_rtcp = max(self._next_rtcp, loop_now)
        return following

    def _transmit(self, data: bytes) -> bool:
        """Send; False when the transport refused (nothing went out)."""
        try:
            self._send(data)
        except ConnectionError:
            self.send_errors += 1
            return False
        return True

    def _send_sender_report(self) -> None:
        ntp = _ntp_now()
        report = RtcpSrPacket(
            ssrc=self.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=self._timestamp,
                packet_count=self.packets_sent & 0xFFFFFFFF,
                octet_count=self.octets_sent & 0xFFFFFFFF,
            ),
        )
        self._transmit(bytes(report))


def _ntp_now() -> int:
    now = time.time() + 2208988800  # NTP epoch is 1900 (RFC 5905 §6)
    return (int(now) << 32) | int((now % 1) * (1 << 32))


def rtp_payload(packet: bytes) -> bytes | None:
    """The payload of a clear-text RTP packet (RFC 3550 §5.1, §5.3.1: past the
    CSRC list and a header extension, without padding); None if malformed."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet)
    if packet[0] & 0x20 and end > offset:
        end -= packet[-1]
    return packet[offset:end] if end >= offset else None


class RtpAudioReceiver:
    """Takes the RTP the DTLS-SRTP transport authenticated (its ``RtpSink``).

    Each packet goes to the listener as (ssrc, seq, timestamp, arrival_ms);
    with ``decode`` the Opus payload is also decoded inline, which proves the
    media is real at the cost aiortc's receiver pays (minus its thread
    hand-off).
    """

    def __init__(
        self,
        *,
        listener: RtpListener,
        clock_ms: Callable[[], float],
        decode: bool = False,
        on_bye: Callable[[int], None] | None = None,
    ) -> None:
        self._listener = listener
        #: the far end said an SSRC stopped sending (RTCP BYE, RFC 3550 §6.6)
        self._on_bye = on_bye
        self._clock_ms = clock_ms
        self._decoder = OpusDecoder() if decode else None
        self.frames_decoded = 0
        self.decode_errors = 0
        self.rtcp_packets = 0
        self.disconnected = False

    def rtp_received(
        self, packet: bytes, ssrc: int, seq: int, timestamp: int, at: float
    ) -> None:
        """One RTP packet that reached the host at ``at`` (``time.monotonic``
        seconds: the kernel's receive time when the socket knew it)."""
        # The arrival on the call clock: now minus how long ago it was.
        waited = time.monotonic() - at
        arrival_ms = self._clock_ms() - (waited * 1000.0 if waited > 0.0 else 0.0)
        self._listener(ssrc, seq, timestamp, arrival_ms)
        if self._decoder is not None:
            payload = rtp_payload(packet)
            if payload is None:
                self.decode_errors += 1
                return
            try:
                frames = self._decoder.decode(
                    JitterFrame(data=payload, timestamp=timestamp)
                )
                self.frames_decoded += len(frames)
            except (av.FFmpegError, ValueError):
                self.decode_errors += 1

    def rtcp_received(self, packet: AnyRtcpPacket) -> None:
        self.rtcp_packets += 1
        if isinstance(packet, RtcpByePacket) and self._on_bye is not None:
            for ssrc in packet.sources:
                self._on_bye(ssrc)

    def _handle_disconnect(self) -> None:
        self.disconnected = True
