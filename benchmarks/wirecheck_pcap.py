"""Read a loopback capture and sort its UDP payloads the way a WebRTC stack does.

Two pure parts, no I/O beyond reading one file:

* :func:`read_capture` reads a *classic* pcap file (what ``tcpdump -w`` writes; not
  pcapng) with :mod:`struct`: the 24-byte global header, then a 16-byte record
  header per packet. The link layer is Ethernet (``tcpdump -i lo`` on Linux),
  Linux cooked capture v1 or raw IPv4; it yields unfragmented UDP over IPv4,
  and each ICMP port unreachable with the datagram it quotes (RFC 792; Linux
  quotes the whole datagram up to 576 bytes, so an RTP header is in it): the
  kernel's word that a datagram reached a closed port and nobody received it.
  Everything else is skipped. Forty lines of format are cheaper to own than a dependency
  (``dpkt`` is not in the venv, and the format has not changed since 1998).
* :func:`classify` demultiplexes one payload by its first byte, RFC 7983 §7
  (which updates RFC 5764 §5.1.2): 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP
  (RTCP told apart by payload type, RFC 5761 §4); and decodes the few fields
  the cross-check needs: the STUN USERNAME (RFC 8445 §7.2.2: ``receiver
  ufrag:sender ufrag``), each DTLS record's type and epoch and a ClientHello's
  random (RFC 6347 §4.2.1: a retransmitted ClientHello, and the one resent
  with the cookie, carry the same random, so one random is one handshake),
  and the RTP header's SSRC and sequence number.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Datagram",
    "DtlsRecord",
    "PcapError",
    "Rtp",
    "Stun",
    "Unreachable",
    "classify",
    "read_capture",
]

#: classic pcap magic numbers: microsecond and nanosecond timestamps
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_LINK_ETHERNET = 1
_LINK_RAW = 101
_LINK_LINUX_SLL = 113
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_ICMP = 1
_IPPROTO_UDP = 17
_ICMP_UNREACHABLE = 3
_ICMP_PORT_UNREACHABLE = 3

_STUN_MAGIC_COOKIE = 0x2112A442
_STUN_BINDING_REQUEST = 0x0001
_STUN_USERNAME = 0x0006
_DTLS_HANDSHAKE = 22
_DTLS_CLIENT_HELLO = 1


class PcapError(Exception):
    """The file is not a classic pcap this reader understands."""


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram on the wire, as ``ip:port`` endpoints."""

    #: capture time, seconds since the epoch (the kernel's clock)
    t: float
    src: str
    dst: str
    payload: bytes


@dataclass(frozen=True)
class Unreachable:
    """An ICMP port unreachable: ``datagram`` reached a closed port."""

    t: float
    datagram: Datagram


@dataclass(frozen=True)
class Stun:
    """A STUN message; ``username`` only on requests that carry one."""

    is_binding_request: bool
    username: str | None


@dataclass(frozen=True)
class DtlsRecord:
    content_type: int
    epoch: int
    #: set on a ClientHello's first fragment: the handshake's identity
    client_hello_random: bytes | None


@dataclass(frozen=True)
class Rtp:
    is_rtcp: bool
    ssrc: int
    #: RTP sequence number (None for RTCP)
    seq: int | None


Classified = Stun | list[DtlsRecord] | Rtp | None


def read_capture(path: Path) -> Iterator[Datagram | Unreachable]:
    """Every IPv4 UDP datagram and port unreachable in a classic pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        raise PcapError(f"{path}: too short for a pcap header")
    for endian in ("<", ">"):
        magic = struct.unpack(endian + "I", data[:4])[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise PcapError(f"{path}: not a classic pcap file (pcapng is not read)")
    divisor = 1e6 if magic == _MAGIC_US else 1e9
    link = struct.unpack(endian + "I", data[20:24])[0]
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(
            endian + "IIII", data[offset : offset + 16]
        )
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        ip = _ip_packet(link, frame)
        packet = None if ip is None else _packet(sec + frac / divisor, ip)
        if packet is not None:
            yield packet


def _ip_packet(link: int, frame: bytes) -> bytes | None:
    if link == _LINK_ETHERNET and len(frame) >= 14:
        ethertype, start = struct.unpack("!H", frame[12:14])[0], 14
    elif link == _LINK_LINUX_SLL and len(frame) >= 16:
        ethertype, start = struct.unpack("!H", frame[14:16])[0], 16
    elif link == _LINK_RAW:
        ethertype, start = _ETHERTYPE_IPV4, 0
    else:
        return None
    return frame[start:] if ethertype == _ETHERTYPE_IPV4 else None


def _packet(t: float, ip: bytes) -> Datagram | Unreachable | None:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    flags_fragment = struct.unpack("!H", ip[6:8])[0]
    if flags_fragment & 0x3FFF:  # a fragment: loopback never fragments our sizes
        return None
    body = ip[(ip[0] & 0x0F) * 4 :]
    if ip[9] == _IPPROTO_UDP:
        return _udp(t, ip, body)
    if ip[9] == _IPPROTO_ICMP and body[:2] == bytes(
        [_ICMP_UNREACHABLE, _ICMP_PORT_UNREACHABLE]
    ):
        quoted = body[8:]  # type, code, checksum, unused; then the datagram
        if len(quoted) >= 20 and quoted[9] == _IPPROTO_UDP:
            datagram = _udp(t, quoted, quoted[(quoted[0] & 0x0F) * 4 :])
            return None if datagram is None else Unreachable(t, datagram)
    return None


def _udp(t: float, ip: bytes, udp: bytes) -> Datagram | None:
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack("!HHH", udp[:6])
    src = ".".join(str(b) for b in ip[12:16])
    dst = ".".join(str(b) for b in ip[16:20])
    return Datagram(t, f"{src}:{sport}", f"{dst}:{dport}", udp[8:length])


def classify(payload: bytes) -> Classified:
    """STUN, DTLS records, RTP/RTCP, or None (anything else), RFC 7983 §7."""
    if not payload:
        return None
    first = payload[0]
    if first <= 3:
        return _stun(payload)
    if 20 <= first <= 63:
        return _dtls_records(payload)
    if 128 <= first <= 191 and len(payload) >= 12:
        # RFC 5761 §4: RTCP packet types 192-223 land on RTP payload types 64-95.
        if 64 <= payload[1] & 0x7F <= 95:
            return Rtp(True, struct.unpack("!I", payload[4:8])[0], None)
        seq, _, ssrc = struct.unpack("!HII", payload[2:12])
        return Rtp(False, ssrc, seq)
    return None


def _stun(payload: bytes) -> Stun | None:
    if len(payload) < 20:
        return None
    kind, length, cookie = struct.unpack("!HHI", payload[:8])
    if cookie != _STUN_MAGIC_COOKIE:
        return None
    username = None
    offset, end = 20, min(len(payload), 20 + length)
    while offset + 4 <= end:
        attr, attr_len = struct.unpack("!HH", payload[offset : offset + 4])
        if attr == _STUN_USERNAME:
            username = payload[offset + 4 : offset + 4 + attr_len].decode(
                "utf-8", "replace"
            )
        offset += 4 + (attr_len + 3) // 4 * 4  # attributes are padded to 4 bytes
    return Stun(kind == _STUN_BINDING_REQUEST, username)


def _dtls_records(payload: bytes) -> list[DtlsRecord]:
    records = []
    offset = 0
    # RFC 6347 §4.1: type(1) version(2) epoch(2) sequence_number(6) length(2)
    while offset + 13 <= len(payload):
        content_type = payload[offset]
        epoch = struct.unpack("!H", payload[offset + 3 : offset + 5])[0]
        length = struct.unpack("!H", payload[offset + 11 : offset + 13])[0]
        body = payload[offset + 13 : offset + 13 + length]
        records.append(
            DtlsRecord(
                content_type, epoch, _client_hello_random(content_type, epoch, body)
            )
        )
        offset += 13 + length
    return records


def _client_hello_random(content_type: int, epoch: int, body: bytes) -> bytes | None:
    # Handshake header, RFC 6347 §4.2.2: msg_type(1) length(3) message_seq(2)
    # fragment_offset(3) fragment_length(3); then client_version(2) random(32).
    if content_type != _DTLS_HANDSHAKE or epoch != 0 or len(body) < 12 + 2 + 32:
        return None
    if body[0] != _DTLS_CLIENT_HELLO or body[6:9] != b"\x00\x00\x00":
        return None
    return body[14:46]
