"""The wire cross-check: reports agree with a tcpdump of their call, and the
check catches a report that does not.

The live tests capture real calls (``python -m benchmarks.wirecheck``'s own
path: a network namespace, tcpdump, ``callagent run``); the doctored-report
test then changes one figure of each kind in a real report and expects exactly
those checks to disagree with the same real capture. The pcap tests feed the
reader a file written here byte by byte, to pin the RFC 7983 demultiplexing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.wirecheck import (
    ScenarioCheck,
    check_capture,
    format_result,
    run_captured,
)
from benchmarks.wirecheck_compare import fault_windows
from benchmarks.wirecheck_facts import wire_facts
from benchmarks.wirecheck_pcap import (
    Datagram,
    Rtp,
    Stun,
    Unreachable,
    classify,
    read_capture,
)

REPO = Path(__file__).resolve().parents[2]
LIVE = ("baseline", "ice_restart_caller")

needs_capture = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("tcpdump") is None
    or shutil.which("unshare") is None,
    reason="needs root, tcpdump and unshare (scripts/setup.sh --dev)",
)


@pytest.fixture(scope="module")
def captured(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, ScenarioCheck]]:
    out = tmp_path_factory.mktemp("wire")
    return {
        name: (out, run_captured(REPO / "scenarios" / f"{name}.yaml", out))
        for name in LIVE
    }


@pytest.mark.wire
@needs_capture
@pytest.mark.parametrize("name", LIVE)
def test_report_agrees_with_the_wire(
    captured: dict[str, tuple[Path, ScenarioCheck]], name: str
) -> None:
    _, result = captured[name]
    assert result.error is None, result.error
    assert result.agrees, format_result(result)


@pytest.mark.wire
@needs_capture
def test_a_doctored_report_disagrees_exactly_where_doctored(
    captured: dict[str, tuple[Path, ScenarioCheck]], tmp_path: Path
) -> None:
    out, _ = captured["ice_restart_caller"]
    report, pcap = out / "ice_restart_caller.json", out / "ice_restart_caller.pcap"
    honest = {c.name: c.agrees for c in check_capture(report, pcap).checks}
    # Counts are exact on loopback whatever the load: these must agree first,
    # or flipping them below would prove nothing.
    exact = {
        "handshakes",
        "ufrags.caller",
        "ufrags.callee",
        "srtp_sent.caller_to_callee",
    }
    assert exact <= {name for name, ok in honest.items() if ok}, honest
    doc: dict[str, Any] = json.loads(report.read_text())
    call = doc["calls"][0]
    call["metrics"]["dtls_rehandshakes"]["total"] += 1
    call["metrics"]["ice_restarts"]["total"] += 1
    call["media"]["caller_to_callee"]["packets_sent"] += 4
    call["media"]["callee_to_caller"]["max_gap_ms"] += 50.0
    call["media"]["callee_to_caller"]["gaps"].append(
        {
            "start_ms": 3000.0,
            "length_ms": 400.0,
            "packets_missing": 19,
            "sender_paused": False,
        }
    )
    call["setup_ms"] += 60.0
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(doc))

    result = check_capture(doctored, pcap)

    changed = {
        "handshakes",
        "ufrags.caller",
        "ufrags.callee",
        "srtp_sent.caller_to_callee",
        "max_gap_ms.callee_to_caller",
        "gaps.callee_to_caller",
        "setup_ms",
    }
    flipped = {c.name for c in result.checks if honest[c.name] and not c.agrees}
    assert flipped == {name for name in changed if honest[name]}, format_result(result)
    assert all(
        honest[c.name] == c.agrees for c in result.checks if c.name not in changed
    )
    assert not result.agrees
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.wirecheck",
            "--compare",
            str(doctored),
            str(pcap),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert re.search(r"DIFF +srtp_sent\.caller_to_callee", cli.stdout), cli.stdout


def test_a_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: soon\n")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.wirecheck", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# -- the reader, on a capture written here ------------------------------------


def _ipv4(src: str, dst: str, proto: int, body: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64, proto, 0,
        bytes(int(b) for b in src.split(".")), bytes(int(b) for b in dst.split(".")),
    )  # fmt: skip
    return header + body


def _udp(src: str, dst: str, payload: bytes) -> bytes:
    (sip, sport), (dip, dport) = src.split(":"), dst.split(":")
    return _ipv4(
        sip,
        dip,
        17,
        struct.pack("!HHHH", int(sport), int(dport), 8 + len(payload), 0) + payload,
    )


def _write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for t, ip in packets:
        frame = b"\x00" * 12 + b"\x08\x00" + ip  # Ethernet, as tcpdump -i lo writes
        out.append(
            struct.pack("<IIII", int(t), round(t % 1 * 1e6), len(frame), len(frame))
            + frame
        )
    path.write_bytes(b"".join(out))


def _binding_request(username: str) -> bytes:
    value = username.encode()
    attr = struct.pack("!HH", 0x0006, len(value)) + value + b"\x00" * (-len(value) % 4)
    return struct.pack("!HHI", 0x0001, len(attr), 0x2112A442) + b"\x01" * 12 + attr


def _client_hello(random: bytes) -> bytes:
    body = b"\xfe\xfd" + random + b"\x00" * 8
    handshake = bytes([1]) + len(body).to_bytes(3, "big") + b"\x00\x00" + b"\x00" * 3
    handshake += len(body).to_bytes(3, "big") + body
    return (
        bytes([22])
        + b"\xfe\xff"
        + b"\x00\x00"
        + b"\x00" * 6
        + struct.pack("!H", len(handshake))
        + handshake
    )


def _rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + b"\xaa" * 40


def test_reader_demultiplexes_by_first_byte_and_finds_each_fact(tmp_path: Path) -> None:
    a, b, stun_server = "127.0.0.1:5000", "127.0.0.2:6000", "127.0.0.4:3478"
    hello = _client_hello(b"\x07" * 32)
    rtcp = struct.pack("!BBHI", 0x80, 200, 6, 0xABC) + b"\x00" * 20
    refused = _rtp(3, 0xABC)
    icmp = _ipv4(
        "127.0.0.2",
        "127.0.0.2",
        1,
        b"\x03\x03\x00\x00\x00\x00\x00\x00" + _udp(a, b, refused),
    )
    packets = [
        (
            100.000,
            _udp(a, stun_server, struct.pack("!HHI", 1, 0, 0x2112A442) + b"\x00" * 12),
        ),
        (100.010, _udp(a, b, _binding_request("BBBB:AAAA"))),
        (100.011, _udp(b, a, _binding_request("AAAA:BBBB"))),
        (100.020, _udp(b, a, hello)),
        (100.120, _udp(b, a, hello)),  # a retransmission: the same handshake
        (100.200, _udp(a, b, _rtp(1, 0xABC))),
        (100.220, _udp(a, b, _rtp(2, 0xABC))),
        (100.240, _udp(a, b, refused)),
        (100.240, icmp),
        (100.250, _udp(a, b, rtcp)),
        (100.900, _udp(a, b, _rtp(4, 0xABC))),
    ]
    path = tmp_path / "made.pcap"
    _write_pcap(path, packets)

    read = list(read_capture(path))

    assert isinstance(read[-3], Unreachable) and read[-3].datagram.payload == refused
    first = read[1]
    assert isinstance(first, Datagram) and first.src == a and first.dst == b
    assert classify(first.payload) == Stun(True, "BBBB:AAAA")
    assert classify(_rtp(9, 5)) == Rtp(False, 5, 9)
    assert classify(rtcp) == Rtp(True, 0xABC, None)
    facts = wire_facts(read, {a: "caller", b: "callee"})
    assert facts.ufrags == {"caller": ["AAAA"], "callee": ["BBBB"]}
    assert len(facts.handshakes) == 1 and facts.handshakes[0].transmissions == 2
    assert facts.handshakes[0].client_side == "callee"
    media = facts.media["caller_to_callee"]
    assert (media.packets, media.undelivered, media.rtcp_packets) == (4, 1, 1)
    # The refused packet is not an arrival: the silence runs from seq 2 to 4.
    assert max(length for _, length in media.intervals()) == pytest.approx(
        0.680, abs=1e-3
    )
    assert facts.first_check_t == pytest.approx(
        100.010
    )  # not the STUN server's request
    assert facts.excluded == {(a, stun_server): 1}


def test_a_receivers_failover_is_a_window_the_wire_is_blind_to() -> None:
    # sbc_failover: the callee dropped its keys, so the caller's SRTP on the
    # wire was no media to it until the new handshake: a report gap there
    # with no wire silence is blindness, not a disagreement.
    call: dict[str, Any] = {
        "events": [
            {
                "type": "dtls_rehandshake",
                "t_ms": 4522.9,
                "side": "callee",
                "initiator": "local",
                "detail": {"trigger": "failover", "duration_ms": 188.2},
            },
            {
                "type": "dtls_rehandshake",
                "t_ms": 4563.8,
                "side": "caller",
                "initiator": "remote",
                "detail": {"trigger": "fingerprint_change", "duration_ms": 128.9},
            },
        ]
    }
    (window,) = fault_windows(call)
    assert window.hides_inbound("callee", 4522.0, 4711.0)
    assert not window.hides_inbound("caller", 4522.0, 4711.0)
    assert not window.hides_inbound("callee", 4800.0, 4900.0)
