"""The per-loop media clock: shared wake-ups, absolute schedules, clean stops."""

from __future__ import annotations

import asyncio

from agent.stack.mediaclock import GRID_S, MediaClock, media_clock


class Counting:
    """A clocked sender that records each due time it was asked to send."""

    def __init__(self, interval: float, stop_after: int) -> None:
        self.interval = interval
        self.due: list[float] = []
        self.stop_after = stop_after
        self.done = asyncio.Event()

    def send_due(self, due: float) -> float | None:
        self.due.append(due)
        if len(self.due) >= self.stop_after:
            self.done.set()
            return None
        return due + self.interval


async def test_senders_follow_an_absolute_schedule_on_the_grid() -> None:
    clock = MediaClock(asyncio.get_running_loop())
    a, b = Counting(0.02, 10), Counting(0.02, 10)
    first_a = clock.add(a)
    first_b = clock.add(b)
    await asyncio.wait_for(asyncio.gather(a.done.wait(), b.done.wait()), 5)
    assert round(first_a / GRID_S, 6) == round(first_a / GRID_S)
    # Same start slot: the same due times, so the same wake-ups.
    assert first_a == first_b
    assert a.due == b.due
    steps = [round(y - x, 9) for x, y in zip(a.due, a.due[1:], strict=False)]
    assert steps == [0.02] * 9
    assert len(clock) == 0


async def test_a_stopped_and_restarted_sender_is_not_sent_twice() -> None:
    clock = media_clock()
    sender = Counting(0.01, 12)
    clock.add(sender)
    clock.remove(sender)
    clock.add(sender)  # its first heap entry is stale now
    other = Counting(0.01, 12)
    clock.add(other)
    await asyncio.wait_for(asyncio.gather(sender.done.wait(), other.done.wait()), 5)
    # Twice the rate would show as two entries per due time.
    assert len(set(sender.due)) == len(sender.due)
    assert sender.due[-1] - sender.due[0] > 0.1
