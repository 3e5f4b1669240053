"""Where the CPU goes per RTP packet: a cProfile of steady-state media.

```sh
.venv/bin/python -m benchmarks.profile_media --calls 100 --seconds 10
```

Starts ``--calls`` loopback calls (:class:`agent.call.calls.LoopbackCall`: both
sides in this process, full observation, audio both ways) at ``--rate`` per
second, waits until every call is connected and ``--warmup`` more, then
profiles ``--seconds`` of the steady state only (no setup, no teardown). It
prints the CPU per RTP packet received (all of this process's work divided by
the packets the observers saw in the window) split into stages, by the module
each function lives in, and the top functions by own time.

A stage's µs/packet is the own time (cProfile ``tottime``) of its functions
divided by the packets received; cProfile inflates every Python call, so the
total is above the unprofiled cost (printed too, measured first without the
profiler over the same window length).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import pstats
import resource
import time
from collections import defaultdict

from agent.call.calls import CallConfig, LoopbackCall

#: (stage, substrings of a cProfile "file:line(function)" key), first match wins
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SRTP protect/unprotect (pylibsrtp)", ("pylibsrtp", "protect")),
    ("socket syscalls (sendto, recvmsg)", ("sendto' of", "recvmsg' of", "'send'")),
    ("RTP/RTCP objects (aiortc.rtp)", ("aiortc/rtp.py",)),
    ("aioice (STUN demux, queue, send)", ("aioice/",)),
    (
        "our ICE socket layer (icenet, ice, icemux)",
        ("stack/icenet", "stack/ice.py", "stack/icemux", "stack/icemedia"),
    ),
    ("our DTLS-SRTP transport (dtls)", ("stack/dtls.py",)),
    (
        "our RTP sender/receiver (stack/media, mediaclock)",
        ("stack/media", "stack/mediaclock"),
    ),
    ("observers (observe/)", ("observe/",)),
    (
        "asyncio loop, tasks, queues, timers",
        (
            "asyncio/",
            "selectors",
            "select.epoll",
            "_asyncio",
            "method 'run' of '_contextvars",
        ),
    ),
    ("time and clocks", ("time.monotonic", "time.time", "calls.py:157(__call__)")),
    ("logging", ("logging/",)),
)


def _stage(key: tuple[str, int, str]) -> str:
    text = f"{key[0]}:{key[1]}({key[2]})"
    for stage, needles in STAGES:
        if any(n in text for n in needles):
            return stage
    return "other"


def _received(calls: list[LoopbackCall]) -> int:
    total = 0
    for call in calls:
        for observer in call.observers.values():
            stats = observer.media_stats()
            if stats is not None:
                total += stats.packets_received
    return total


def _sent(calls: list[LoopbackCall]) -> int:
    return sum(
        p.sender.packets_sent
        for c in calls
        for p in c.peers.values()
        if p.sender is not None
    )


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def _window(
    calls: list[LoopbackCall], seconds: float
) -> tuple[int, int, float, float]:
    """Packets received and sent, user and system CPU seconds, in a window."""
    received, sent, (user, system) = _received(calls), _sent(calls), _cpu()
    await asyncio.sleep(seconds)
    user_after, system_after = _cpu()
    return (
        _received(calls) - received,
        _sent(calls) - sent,
        user_after - user,
        system_after - system,
    )


async def run(args: argparse.Namespace) -> None:
    calls = [
        LoopbackCall(CallConfig(call_id=f"p#{i}", seed=i)) for i in range(args.calls)
    ]

    async def start(i: int, call: LoopbackCall) -> None:
        await asyncio.sleep(i / args.rate)
        await call.connect()

    t0 = time.monotonic()
    await asyncio.gather(*(start(i, c) for i, c in enumerate(calls)))
    print(f"{args.calls} calls connected in {time.monotonic() - t0:.1f} s")
    await asyncio.sleep(args.warmup)
    received, sent, user, system = await _window(calls, args.seconds)
    n = max(received, 1)
    print(
        f"unprofiled: {received / args.seconds:.0f} packets/s received "
        f"({received / args.seconds / (2 * args.calls):.1f}/50 per direction), "
        f"{sent / args.seconds:.0f} sent, {(user + system) / args.seconds:.2f} "
        f"cores, {(user + system) / n * 1e6:.1f} µs CPU per packet (sent + "
        f"received; user {user / n * 1e6:.1f}, kernel {system / n * 1e6:.1f})"
    )
    # CPU time, not wall time: other processes on the host must not count.
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    received, sent, _, _ = await _window(calls, args.seconds)
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_stage: dict[str, float] = defaultdict(float)
    raw = stats.stats  # type: ignore[attr-defined]
    for key, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        by_stage[_stage(key)] += tottime
    total = sum(by_stage.values())
    n = max(received, 1)
    print(
        f"profiled: {received} packets received, {sent} sent in {args.seconds:.0f} s;"
        f" {total / n * 1e6:.1f} µs profiled CPU per packet"
    )
    print(f"{'stage':52} {'µs/packet':>9} {'share':>6}")
    for stage, seconds in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"{stage:52} {seconds / n * 1e6:9.1f} {seconds / total:6.1%}")
    if args.top:
        print()
        stats.sort_stats("tottime").print_stats(args.top)
    if args.out:
        stats.dump_stats(args.out)
    await asyncio.gather(*(call.close() for call in calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=50.0, help="calls started per s")
    parser.add_argument("--top", type=int, default=25, help="top functions (0: none)")
    parser.add_argument("--out", help="also write the pstats file here")
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop (pip install uvloop)"
    )
    args = parser.parse_args()
    if args.uvloop:
        # Measured, not a dependency (benchmarks/README.md): pip install uvloop.
        uvloop = importlib.import_module("uvloop")
        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
