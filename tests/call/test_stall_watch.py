"""The loop's stalls are kept once per process; each call takes its own.

A real event loop, blocked on purpose for a bounded time (as a busy host
blocks it): the watch notes one stall, every call watched then gets it when
it stops being watched, a call watched only afterwards does not, and what
no watched call can take any more is dropped.
"""

from __future__ import annotations

import asyncio
import time

from agent.call.calls import CallConfig, LoopbackCall
from agent.call.stallwatch import STALL_MS, StallWatch
from agent.observe.correlate import LOOP_STALL
from agent.observe.events import NoteEvent

BLOCK_S = 0.15


async def _block_and_see_it(watch: StallWatch, count: int) -> None:
    time.sleep(BLOCK_S)  # noqa: ASYNC251 -- the loop stops, as on a busy host
    async with asyncio.timeout(5):
        while len(watch._stalls) < count:  # noqa: ASYNC110 -- no event to await
            await asyncio.sleep(0.005)


async def test_each_call_takes_the_stalls_of_its_own_watch() -> None:
    watch = StallWatch()
    early, late = object(), object()
    watch.add(early)
    await asyncio.sleep(0)  # one turn: the ticker's first step has run
    await _block_and_see_it(watch, 1)
    watch.add(late)
    await _block_and_see_it(watch, 2)
    (first, second) = watch._stalls
    assert first[1] >= STALL_MS and second[1] >= STALL_MS
    assert watch.discard(early) == [first, second]
    # Only what the call still watched can take is kept.
    assert watch._stalls == [second]
    assert watch.discard(late) == [second]
    assert watch._stalls == [] and watch._task is None
    assert watch.discard(late) == []  # not watched: nothing


async def test_a_closed_call_has_the_stall_on_its_own_clock() -> None:
    call = LoopbackCall(CallConfig(call_id="watch#1", seed=1))
    try:
        await asyncio.wait_for(call.connect(), 10)
        blocked_at_ms = call.clock()
        time.sleep(BLOCK_S)  # noqa: ASYNC251 -- the loop stops, as on a busy host
        # The watch's next tick sees it; the call closes well after, so a
        # stall put at the close's time instead of its own would be ~300 ms off.
        await asyncio.sleep(0.3)
    finally:
        await call.close()
    notes = [
        e
        for e in call.observer(None).events
        if isinstance(e, NoteEvent) and e.detail.text == LOOP_STALL
    ]
    assert len(notes) >= 1, notes
    longest = max(notes, key=lambda e: e.detail.stall_ms or 0.0)
    assert (longest.detail.stall_ms or 0.0) >= BLOCK_S * 1000 * 0.7
    # The stall began when the loop was blocked (within a watch tick, and
    # what a busy host adds).
    assert abs(longest.t_ms - blocked_at_ms) < 100, (longest.t_ms, blocked_at_ms)
