"""The C fast lane (agent/stack/fastroute.py, _fastmedia.c): built, taken by a
real call both ways, left for the ordinary path whenever a guard no longer
holds (an impairment added mid-call), switched off by the environment, and
byte for byte what the ordinary path does with the same packet."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.stack import fastroute
from agent.stack.dtls import RTP_HEADER
from agent.stack.icenet import SO_TIMESTAMPNS, SocketTap, WireDirection
from agent.stack.peer import Peer
from agent.stack.srtp import srtp_session
from tests.support.peers import connected_pair, packets_after

native: Any = fastroute.native
KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt
PROFILE = 1  # libsrtp's SRTP_AES128_CM_SHA1_80


def taps(peer: Peer) -> list[SocketTap]:
    assert peer.current is not None
    taps: list[SocketTap] = peer.current.connection._taps
    return taps


def fast_count(peer: Peer) -> int:
    return sum(tap.fast_reader.fast for tap in taps(peer) if tap.fast_reader)


def test_the_extension_is_built() -> None:
    # CI installs with a compiler: a broken build must fail here, not just
    # fall back to the slower path unnoticed.
    assert fastroute.available(), fastroute.describe()
    assert fastroute.describe() == "media path: C fast lane"
    # An editable install compiles in place: an edited source needs a rebuild
    # (scripts/setup.sh), or the old lane would run.
    source = Path(fastroute.__file__).with_name("_fastmedia.c")
    assert Path(native.__file__).stat().st_mtime >= source.stat().st_mtime


@dataclass
class Counter:
    """Passes everything; counts SRTP each way."""

    seen: dict[WireDirection, int] = field(default_factory=dict)

    def admit(
        self, direction: WireDirection, data: bytes, addr: tuple[str, int]
    ) -> bool:
        if data and 128 <= data[0] < 192:
            self.seen[direction] = self.seen.get(direction, 0) + 1
        return True


async def test_a_call_takes_the_fast_lane_both_ways() -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        await packets_after(rec_a, 50)
        await packets_after(rec_b, 50)
        for peer in (caller, callee):
            assert peer.sender is not None and peer.sender._route is not None
            assert fast_count(peer) >= 40
        # Every packet counted once, in order: the fast lane loses nothing.
        seqs = [seq for _, seq, _, _ in rec_b.rtp]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    finally:
        await caller.close()
        await callee.close()


async def test_an_impairment_added_mid_call_takes_media_off_the_lane() -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        await packets_after(rec_b, 25)
        counter = Counter()
        assert callee.current is not None
        callee.current.connection.filters.append(counter)
        before = fast_count(callee)
        await packets_after(rec_b, 25)
        await packets_after(rec_a, 25)
        # The filter saw the media both ways, and the lane took none of it.
        assert counter.seen.get(WireDirection.INBOUND, 0) >= 25
        assert counter.seen.get(WireDirection.OUTBOUND, 0) >= 25
        assert fast_count(callee) == before
        # Gone again: the lane resolves its routes and takes media again.
        callee.current.connection.filters.remove(counter)
        await packets_after(rec_b, 25)
        assert fast_count(callee) > before
    finally:
        await caller.close()
        await callee.close()


async def test_the_environment_switches_the_lane_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(fastroute.PURE_PYTHON_ENV, "1")
    assert not fastroute.enabled()
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        await packets_after(rec_b, 25)
        await packets_after(rec_a, 25)
        for peer in (caller, callee):
            assert fast_count(peer) == 0
            assert peer.sender is not None and peer.sender._route is None
    finally:
        await caller.close()
        await callee.close()


# -- the C calls on their own, against the ordinary path's results ---------


@dataclass
class Owner:
    value: Any = None
    items: dict[Any, Any] = field(default_factory=dict)


def test_guards_read_the_state_again_each_time() -> None:
    owner = Owner(value=[], items={1: "pair"})
    same = ((owner, "value", native.GUARD_FALSY, None, None),)
    assert native.check(same)
    owner.value.append(1)  # mutated in place: read again, now truthy
    assert not native.check(same)
    item = ((owner, "items", native.GUARD_ITEM_IS, "pair", 1),)
    assert native.check(item)
    owner.items[1] = "other"
    assert not native.check(item)
    marker = object()
    ident = ((owner, "value", native.GUARD_IS, marker, None),)
    assert not native.check(ident)
    owner.value = marker
    assert native.check(ident)
    assert not native.check(((owner, "missing", native.GUARD_IS, None, None),))
    with pytest.raises(TypeError):
        native.check(((owner, "value"),))


def rtp(seq: int, payload: bytes) -> bytes:
    return RTP_HEADER.pack(0x80, 111, seq, 960 * seq, 0x1234ABCD) + payload


def udp_pair() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    return a, b


async def test_send_rtp_puts_the_ordinary_paths_bytes_on_the_wire() -> None:
    ordinary = srtp_session(KEY, PROFILE, outbound=True)
    lane = srtp_session(KEY, PROFILE, outbound=True)
    a, b = udp_pair()
    errors: list[OSError] = []
    try:
        host, port = b.getsockname()
        route = (
            (),
            a.fileno(),
            native.sockaddr(host, port),
            fastroute._PROTECT,
            int(fastroute._ffi.cast("uintptr_t", lane.context)),
            lambda data, addr: pytest.fail("the socket was not full"),
            errors.append,
            (host, port),
        )
        payload = bytes(range(80))
        for seq in (7, 8):
            assert native.send_rtp(route, 111, seq, 960 * seq, 0x1234ABCD, payload)
            wire = await asyncio.wait_for(
                asyncio.get_running_loop().sock_recv(b, 2048), 2
            )
            assert wire == ordinary.protect(rtp(seq, payload))
        # A guard that fails: nothing is sent, the caller takes the packet.
        owner = Owner(value=True)
        guards = ((owner, "value", native.GUARD_FALSY, None, None),)
        failing = (guards, *route[1:])
        assert native.send_rtp(failing, 111, 9, 0, 1, payload) is None
        with pytest.raises(BlockingIOError):
            b.recv(2048)
        assert errors == []
    finally:
        a.close()
        b.close()


async def test_the_reader_takes_srtp_and_hands_the_rest_on() -> None:
    tx = srtp_session(KEY, PROFILE, outbound=True)
    rx = srtp_session(KEY, PROFILE, outbound=False)
    a, b = udp_pair()
    b.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    taken: list[tuple[Any, ...]] = []
    ordinary: list[tuple[bytes, tuple[str, int], float, bool]] = []
    liveness = Owner()
    received_on: dict[Any, float] = {}
    route = (
        (),
        None,
        received_on,
        5,
        liveness,
        fastroute._UNPROTECT,
        int(fastroute._ffi.cast("uintptr_t", rx.context)),
        lambda *args: taken.append(args),
    )
    reader = native.Reader(
        b.fileno(),
        lambda *args: ordinary.append(args),
        lambda: route,
        pytest.fail,
    )
    loop = asyncio.get_running_loop()
    got = asyncio.Event()

    def readable() -> None:
        reader()
        got.set()

    loop.add_reader(b.fileno(), readable)
    try:
        sent_at = time.monotonic()
        a.sendto(tx.protect(rtp(100, b"opus")), b.getsockname())
        await asyncio.wait_for(got.wait(), 2)
        assert len(taken) == 1
        packet, ssrc, seq, timestamp, at = taken[0]
        assert packet == rtp(100, b"opus")
        assert (ssrc, seq, timestamp) == (0x1234ABCD, 100, 96000)
        # The kernel's receive time, on the monotonic clock.
        assert sent_at - 0.05 < at <= time.monotonic()
        source = a.getsockname()
        assert received_on == {(5, source): at}
        assert liveness.last_received == at  # type: ignore[attr-defined]
        # STUN-like and forged SRTP datagrams: the ordinary path's, as read.
        for datagram in (b"\x00\x01" + bytes(18), rtp(101, b"forged" + bytes(10))):
            got.clear()
            a.sendto(datagram, b.getsockname())
            await asyncio.wait_for(got.wait(), 2)
            assert ordinary[-1][0] == datagram and ordinary[-1][1] == source
            assert ordinary[-1][3] is True
        assert (reader.fast, reader.ordinary, len(taken)) == (1, 2, 1)
    finally:
        loop.remove_reader(b.fileno())
        a.close()
        b.close()


async def test_a_group_reads_each_ready_socket_and_reports_one_that_raised() -> None:
    a, b = udp_pair()
    c, d = udp_pair()
    errors: list[BaseException] = []
    read: list[bytes] = []

    def broken(*args: object) -> None:
        raise RuntimeError("deliver failed")

    group = native.Group(lambda exc, reader: errors.append(exc))
    group.add(native.Reader(b.fileno(), broken, lambda: None, pytest.fail))
    group.add(
        native.Reader(
            d.fileno(), lambda data, *rest: read.append(data), lambda: None, pytest.fail
        )
    )
    loop = asyncio.get_running_loop()
    woke = asyncio.Event()

    def readable() -> None:
        group()
        woke.set()

    loop.add_reader(group.fileno(), readable)
    try:
        a.sendto(b"\x00" * 20, b.getsockname())
        c.sendto(b"\x01" * 20, d.getsockname())
        await asyncio.wait_for(woke.wait(), 2)
        while len(errors) + len(read) < 2:  # the two may be ready apart
            woke.clear()
            await asyncio.wait_for(woke.wait(), 2)
        # One socket's callback raised: reported, and the other still read.
        assert [str(e) for e in errors] == ["deliver failed"]
        assert read == [b"\x01" * 20]
        # A removed socket is no longer read, even with data waiting.
        group.remove(d.fileno())
        assert len(group) == 1
        # (Loopback queues it at the socket before sendto returns.)
        c.sendto(b"\x02" * 20, d.getsockname())
        group()
        assert read == [b"\x01" * 20]
        assert d.recv(64) == b"\x02" * 20
    finally:
        loop.remove_reader(group.fileno())
        group.close()
        for s in (a, b, c, d):
            s.close()


async def first_packets(count: int) -> list[tuple[int, int, int]]:
    caller, _, callee, rec_b = await connected_pair()
    try:
        await packets_after(rec_b, count)
        return [(ssrc, seq, ts) for ssrc, seq, ts, _ in rec_b.rtp[:count]]
    finally:
        await caller.close()
        await callee.close()


async def test_the_same_call_on_the_lane_and_off_it_carries_the_same_packets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Same seeds: same SSRC, sequence and timestamp origins, so the far end
    # sees the same fields for the same sequence number (the first one or two
    # may fall before its DTLS is up, either way: compared where both have it).
    on_lane = await first_packets(30)
    monkeypatch.setenv(fastroute.PURE_PYTHON_ENV, "1")
    ordinary = await first_packets(30)
    lane_by_seq = {seq: (ssrc, ts) for ssrc, seq, ts in on_lane}
    ordinary_by_seq = {seq: (ssrc, ts) for ssrc, seq, ts in ordinary}
    common = lane_by_seq.keys() & ordinary_by_seq.keys()
    assert len(common) >= 25
    assert {seq: lane_by_seq[seq] for seq in common} == {
        seq: ordinary_by_seq[seq] for seq in common
    }


async def test_the_loops_group_goes_when_its_last_socket_closes() -> None:
    loop = asyncio.get_running_loop()
    caller, rec_a, callee, _ = await connected_pair()
    try:
        await packets_after(rec_a, 10)
        group = fastroute._groups[loop]
        assert len(group) == len(taps(caller)) + len(taps(callee))
    finally:
        await caller.close()
        await callee.close()
    # Every socket's reader removed, the epoll descriptor closed with the
    # last: nothing of the lane outlives the calls.
    assert len(group) == 0
    assert group.fileno() == -1
    assert loop not in fastroute._groups
