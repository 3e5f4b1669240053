"""Issue 11, "Done when": a seeded, bounded fuzz of ``serve`` on loopback.

At least 2,000 hostile requests — bad methods, paths, headers and bodies,
mutated offers and sdpfrags, raw bytes that are not HTTP, and ``/ws``
frames — go to one server while a real call is up on it. Asserted: no 5xx,
no traceback or error in the server's log, and the call's audio kept flowing
the whole time (the far end received what was due).

Every random choice comes from one seeded generator; a failure prints the
seed and the request, so ``CALLAGENT_FUZZ_SEED=<seed>`` replays it. Nothing
is sent outside 127.0.0.0/8: candidate addresses in mutated SDP are rewritten
to loopback before sending (no mDNS names either, which would multicast).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from agent.signaling.guard import Limits
from agent.signaling.sdpfrag import build_sdpfrag
from tests.signaling.test_whip_server import FRAG, SDP, connected_call
from tests.support.whip import Served, far_end, serve_agent

SEED = int(os.environ.get("CALLAGENT_FUZZ_SEED", "20261130"))
HTTP_REQUESTS = 1500
RAW_REQUESTS = 300
WS_FRAMES = 400
BATCH = 16
#: A request head or body that stalls is cut after 1 s (default 10 s), so the
#: raw requests that are cut short do not hold the test up.
LIMITS = Limits(header_timeout_s=1.0, body_timeout_s=1.0)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "FOO"]
PATHS = ["/whip", "/whip/", "/whip/nope", "/calls", "/metrics", "/ws", "/", "/x" * 50]
CONTENT_TYPES = [SDP, FRAG, "text/plain", "application/json", "", "application/sdp;x"]


@dataclass
class Tally:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)

    def count(self, status: int | None, what: str) -> None:
        self.sent += 1
        if status is None:
            return  # the server closed the connection: not a 5xx
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            self.server_errors.append(f"{status}: {what[:300]!r}")


def loopback_only(sdp: str) -> str:
    """Candidate addresses a mutation produced are rewritten to 127.0.0.2."""
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            fields = line.split(" ")
            for index in [4] + [i + 1 for i, f in enumerate(fields) if f == "raddr"]:
                if index < len(fields) and not _is_loopback(fields[index]):
                    fields[index] = "127.0.0.2"
            line = " ".join(fields)
        out.append(line)
    return "\r\n".join(out)


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def junk(rng: random.Random) -> str:
    return rng.choice(
        [
            "",
            "-1",
            "99999",
            "4294967296",
            "9" * 400,
            "\x00",
            "\xff\xfe",
            "é",
            " ",
            "a" * 300,
            "NaN",
            "0x10",
            ":",
            "%s%n",
            rng.randbytes(8).decode("latin-1"),
        ]
    )


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    lines = sdp.strip().split("\r\n")
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        op = rng.randrange(8)
        at = rng.randrange(len(lines))
        if op == 0:
            del lines[at]
        elif op == 1:
            lines.insert(at, lines[rng.randrange(len(lines))])
        elif op == 2:
            tokens = lines[at].split(" ")
            tokens[rng.randrange(len(tokens))] = junk(rng)
            lines[at] = " ".join(tokens)
        elif op == 3:
            lines.insert(
                at,
                rng.choice(
                    [
                        "a=fmtp:111 minptime=10",
                        "a=rtpmap:111",
                        "a=rtpmap:300 opus/48000/2",
                        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                        "a=candidate:1 1 udp 1 127.0.0.2 99999 typ host",
                        "a=setup:nonsense",
                        "a=fingerprint:sha-256 00",
                        "a=ice-ufrag:",
                        "a=group:BUNDLE 0 1 2",
                        "a=ssrc:-5 cname:x",
                        "a=extmap:999999 urn:x",
                        "c=IN IP4",
                    ]
                ),
            )
        elif op == 4:
            lines = lines[: rng.randrange(len(lines) + 1)]
        elif op == 5:
            rng.shuffle(lines)
        elif op == 6:
            lines[at] = lines[at][: rng.randrange(len(lines[at]) + 1)]
        else:
            lines[at] = lines[at].replace("111", junk(rng))
    return loopback_only("\r\n".join(lines) + "\r\n")


def mutate_frag(rng: random.Random, ufrag: str, pwd: str) -> str:
    candidates = [
        f"candidate:{rng.randrange(99)} 1 udp {rng.randrange(1, 1 << 31)} "
        f"127.0.0.{rng.randrange(2, 9)} {rng.randrange(1024, 65536)} typ host"
        for _ in range(rng.randrange(3))
    ]
    frag = build_sdpfrag(
        ufrag=ufrag, pwd=pwd, candidates=candidates, end_of_candidates=False
    )
    return mutate_sdp(rng, frag) if rng.random() < 0.7 else frag


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: str | bytes | None,
    headers: dict[str, str],
) -> int | None:
    try:
        async with http.request(
            method, url, data=body, headers=headers, allow_redirects=False
        ) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, ValueError, UnicodeError):
        # The client refused to send it, or the server hung up on it.
        return None


async def one_http(
    rng: random.Random,
    http: aiohttp.ClientSession,
    served: Served,
    offer: str,
    live: tuple[str, str, str],
    tally: Tally,
) -> None:
    resource, ufrag, pwd = live
    method = rng.choice(METHODS)
    path = rng.choice([*PATHS, resource, resource + "x"])
    if path == resource and method == "DELETE":
        method = "GET"  # hanging up the live call is no attack on it
    headers: dict[str, str] = {}
    if rng.random() < 0.8:
        headers["Content-Type"] = rng.choice(CONTENT_TYPES)
    if rng.random() < 0.1:
        headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "zz"])
    if rng.random() < 0.1:
        headers["Authorization"] = "Bearer " + junk(rng)
    if rng.random() < 0.1:
        headers["Origin"] = rng.choice(["http://evil.example", "null", served.base_url])
    if rng.random() < 0.15:
        # Never If-Match: * or the live ETag: a real restart is not hostile.
        headers["If-Match"] = rng.choice(['"stale"', junk(rng), "W/x"])
    if rng.random() < 0.03:
        headers["X-Big"] = "x" * rng.choice([100, 9000, 20000])
    kind = rng.randrange(5)
    body: str | bytes | None
    if kind == 0:
        body = mutate_sdp(rng, offer)
        method, path = "POST", "/whip"
        headers["Content-Type"] = SDP
    elif kind == 1:
        body = mutate_frag(rng, ufrag, pwd)
        method, path = "PATCH", resource
        headers["Content-Type"] = FRAG
    elif kind == 2:
        body = rng.randbytes(rng.randrange(0, 3000))
    elif kind == 3:
        body = junk(rng) * rng.randrange(1, 50)
    else:
        body = None
    url = served.base_url + path
    what = f"{method} {path} {headers} {body!r}"
    status = await send(http, method, url, body, headers)
    tally.count(status, what)
    if status == 201 and method == "POST":
        # A mutation that is still an offer opened a call: hang it up again.
        for session in list(served.server.resources.values()):
            if f"/whip/{session.id}" != resource:
                status = await send(
                    http, "DELETE", f"{served.whip}/{session.id}", None, {}
                )
                tally.count(status, "DELETE of a fuzz call")


RAW = [
    b"\x00\x01\x02\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /calls HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /whip HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /whip HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /whip HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/sdp\r\n\r\nZZ\r\nv=0\r\n0\r\n\r\n",
    b"POST /whip HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    b"GET /calls HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"GET /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    b"PATCH /whip/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
    b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nv=0\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nonsense\r\n\r\n",
    b"G\x00T /calls HTTP/1.1\r\n\r\n",
    b"GET " + b"/a" * 5000 + b" HTTP/1.1\r\n\r\n",
]


async def one_raw(rng: random.Random, port: int, tally: Tally) -> None:
    data = rng.choice(RAW) if rng.random() < 0.7 else rng.randbytes(rng.randrange(200))
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data) + 1)]  # cut short, then we leave
    status: int | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data + (b"" if rng.random() < 0.5 else b"\r\n\r\n"))
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 3)
            parts = line.split(b" ")
            if line.startswith(b"HTTP/") and len(parts) > 1 and parts[1].isdigit():
                status = int(parts[1])
        finally:
            writer.close()
    except (TimeoutError, ConnectionError):
        pass  # held open waiting for more, or hung up on: both fine
    tally.count(status, f"raw {data[:200]!r}")


def ws_frame(rng: random.Random, offer: str) -> str:
    return rng.choice(
        [
            "[" * rng.randrange(100, 3000),
            '{"type":' * rng.randrange(10, 2000),
            "not json",
            "null",
            "[]",
            json.dumps({"type": junk(rng)}),
            json.dumps({"type": "candidate", "candidate": junk(rng)}),
            json.dumps({"type": "candidate", "candidate": 5}),
            json.dumps({"type": "answer", "sdp": "v=0"}),
            json.dumps({"type": "error", "message": "x"}),
            json.dumps({"type": "offer", "sdp": mutate_sdp(rng, offer)}),
            json.dumps({"type": "offer", "sdp": 1}),
            json.dumps({"type": "offer"}),
        ]
    )


async def ws_fuzz(
    rng: random.Random,
    http: aiohttp.ClientSession,
    served: Served,
    offer: str,
    tally: Tally,
) -> None:
    sent = 0
    while sent < WS_FRAMES:
        async with http.ws_connect(f"{served.base_url}/ws") as socket:
            while sent < WS_FRAMES and not socket.closed:
                frame = ws_frame(rng, offer)
                sent += 1
                if rng.random() < 0.05:
                    await socket.send_bytes(frame.encode())
                else:
                    await socket.send_str(frame)
                reply = await socket.receive(timeout=10)
                if reply.type is not aiohttp.WSMsgType.TEXT:
                    tally.count(None, frame)
                    break
                message = json.loads(reply.data)
                code = int(message.get("code", 400))
                tally.count(code, f"ws {frame[:300]}")
                if message["type"] == "answer":
                    # A mutated offer still worked: end that call, new socket.
                    await socket.send_str(json.dumps({"type": "bye"}))
                    break


async def test_fuzz_serve_with_a_live_call(
    server_log: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(SEED)
    async with (
        serve_agent(max_calls=100, max_body=16 * 1024, limits=LIMITS) as served,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
    ):
        peer, listener, resource_url, _ = await connected_call(http, served)
        resource = resource_url.removeprefix(served.base_url)
        params = peer.gatherer.getLocalParameters()
        live = (resource, str(params.usernameFragment), str(params.password))
        (live_call_id,) = served.backend.calls
        template, _ = far_end(seed=77)
        offer = await template.create_offer()
        await template.close()
        await listener.until(lambda: listener.rtp >= 10, 10)
        rtp_before, started = listener.rtp, time.monotonic()
        port = int(served.base_url.rsplit(":", 1)[1])
        tally = Tally()

        async def batches(make: Callable[[], Awaitable[None]], total: int) -> None:
            for start in range(0, total, BATCH):
                await asyncio.gather(
                    *(make() for _ in range(min(BATCH, total - start)))
                )

        await asyncio.gather(
            batches(
                lambda: one_http(rng, http, served, offer, live, tally), HTTP_REQUESTS
            ),
            batches(lambda: one_raw(rng, port, tally), RAW_REQUESTS),
            ws_fuzz(rng, http, served, offer, tally),
        )
        elapsed = time.monotonic() - started
        received = listener.rtp - rtp_before
        live_view = served.backend.calls[live_call_id].live()
        await peer.close()

    assert tally.sent >= 2000, tally
    assert not tally.server_errors, (SEED, tally.server_errors[:10])
    # 50 packets a second were due to the far end all along (20 ms ptime).
    due = elapsed * 50
    assert received >= 0.8 * due, (received, due, elapsed)
    assert live_view["sides"]["callee"]["final_state"] == "connected"
    assert live_view["media"]["caller_to_callee"]["packets_received"] > due * 0.8
    print(
        f"fuzz seed {SEED}: {tally.sent} requests in {elapsed:.1f} s, {tally.statuses}"
    )
