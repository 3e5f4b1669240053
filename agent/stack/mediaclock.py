"""One media clock per event loop: every sender's due packets on one timer.

A sender with its own task wakes its own timer every packet time: at 300
calls that is 30 000 task wake-ups a second per direction pair, each a
coroutine step and a timer heap entry, before any packet is built. The
:class:`MediaClock` keeps every sender of the loop in one heap by due time and
wakes once per distinct due time; senders start on a grid of
:data:`GRID_S`, so those with the same packet time share wake-ups (at most
``packet time / GRID_S`` of them per packet time, whatever the number of
calls), while calls started at different moments still spread over the grid's
slots instead of all sending in one burst.

Each sender keeps its own absolute schedule (``due += packet time``), so a
late wake-up does not shift later packets; what it does when it is late is its
own business (:class:`agent.stack.media.RtpAudioSender` records it).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import weakref
from typing import Protocol

#: senders start on multiples of this (seconds on the loop clock)
GRID_S = 0.005
#: packets due this close to a wake-up go in the same one
_SAME_TICK_S = 0.0005
#: packets one sender may send in one wake-up when it is behind
CATCH_UP_PER_WAKE = 5


class ClockedSender(Protocol):
    """What the clock drives: one packet due at ``due`` (loop seconds);
    returns when the next one is due, or None to leave the clock."""

    def send_due(self, due: float) -> float | None: ...


class MediaClock:
    """Wakes once per distinct due time and sends every packet due then."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        #: (due, order, sender, registration): order breaks ties (first come,
        #: first sent); a stale registration (stopped, started again) is skipped
        self._heap: list[tuple[float, int, ClockedSender, int]] = []
        self._order = itertools.count()
        self._active: dict[ClockedSender, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return len(self._active)

    def add(self, sender: ClockedSender) -> float:
        """Start ``sender``: its first packet is due at the next grid point
        (returned, loop seconds)."""
        first = math.ceil(self._loop.time() / GRID_S) * GRID_S
        registration = self._active[sender] = next(self._order)
        heapq.heappush(self._heap, (first, registration, sender, registration))
        self._arm()
        return first

    def remove(self, sender: ClockedSender) -> None:
        """Stop ``sender`` (its heap entry is dropped when it comes up)."""
        self._active.pop(sender, None)
        if not self._active and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
            self._heap.clear()

    def _arm(self) -> None:
        if not self._heap:
            return
        at = self._heap[0][0]
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self._loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        heap = self._heap
        active = self._active
        limit = self._loop.time() + _SAME_TICK_S
        later: list[tuple[float, int, ClockedSender, int]] = []
        sent: dict[ClockedSender, int] = {}
        while heap and heap[0][0] <= limit:
            due, _, sender, registration = heapq.heappop(heap)
            if active.get(sender) != registration:
                continue
            following = sender.send_due(due)
            if following is None:
                active.pop(sender, None)
                continue
            entry = (following, next(self._order), sender, registration)
            count = sent[sender] = sent.get(sender, 0) + 1
            if count < CATCH_UP_PER_WAKE:
                heapq.heappush(heap, entry)
            else:
                later.append(entry)
        # A sender behind its schedule catches up a few packets per wake-up
        # (the rest at once after the loop has read its sockets), so one late
        # wake-up neither bursts every missed packet of every call in one go
        # nor leaves senders further behind at each busy loop iteration.
        for entry in later:
            heapq.heappush(heap, entry)
        self._arm()


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = (
    weakref.WeakKeyDictionary()
)


def media_clock() -> MediaClock:
    """The running loop's :class:`MediaClock`."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = MediaClock(loop)
    return clock
