"""Impairment filters: what passes, what is dropped, what is late; seeded."""

from __future__ import annotations

import random

from agent.net.filters import Blackhole, DelayFilter, Direction, Loss, MtuLimit
from agent.stack.ice import Delay, WireDirection

IN, OUT = WireDirection.INBOUND, WireDirection.OUTBOUND
FAR = ("127.0.0.2", 5000)


def test_blackhole_one_way_drops_only_that_way() -> None:
    hole = Blackhole(Direction.INBOUND)
    assert hole.admit(IN, b"x", FAR) is False
    assert hole.admit(OUT, b"x", FAR) is True
    assert hole.dropped == 1


def test_loss_is_seeded_and_near_its_rate() -> None:
    def run(seed: int) -> list[bool | Delay]:
        loss = Loss(0.2, random.Random(seed))
        return [loss.admit(OUT, b"x", FAR) for _ in range(2000)]

    first = run(1)
    assert first == run(1)  # replayable
    assert first != run(2)
    assert 300 < first.count(False) < 500


def test_delay_and_jitter_are_seeded_delays() -> None:
    fixed = DelayFilter(0.1)
    assert fixed.admit(OUT, b"x", FAR) == Delay(0.1)
    jitter = DelayFilter(0.0, 0.04, random.Random(3))
    delays = [jitter.admit(IN, b"x", FAR) for _ in range(100)]
    again = DelayFilter(0.0, 0.04, random.Random(3))
    assert delays == [again.admit(IN, b"x", FAR) for _ in range(100)]
    seconds = [d.seconds for d in delays if isinstance(d, Delay)]
    assert len(seconds) == 100 and all(0 <= s <= 0.04 for s in seconds)


def test_mtu_drops_only_big_datagrams() -> None:
    mtu = MtuLimit(548)
    assert mtu.admit(OUT, b"x" * 548, FAR) is True
    assert mtu.admit(OUT, b"x" * 549, FAR) is False
    assert (mtu.dropped, mtu.largest_dropped) == (1, 549)
