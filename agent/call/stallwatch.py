"""When the agent's own event loop stalls: one watch per loop, for every call.

A stall of the loop holds up the media every call of the process sends and
receives, and no network fault is to blame. One ticker per loop wakes every
:data:`STALL_TICK_S`; a wake-up :data:`STALL_MS` or more late is a stall.

The stalls are kept once, for the process, not copied into every live call
as they happen: a busy loop stalls several times a second, and with a few
hundred calls up that was hundreds of note objects a second, held for the
calls' whole lives (a 30-minute soak on a busy host grew by tens of MB). A
call takes the stalls of its own lifetime when it stops being watched
(:meth:`StallWatch.discard`, at its close), and only stalls some watched call
may still take are kept.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import weakref

__all__ = ["STALL_MS", "STALL_TICK_S", "StallWatch", "stall_watch"]

#: The agent's loop is checked this often; a wake-up this late is a stall.
STALL_TICK_S = 0.02
STALL_MS = 40.0


class StallWatch:
    """The loop's stalls, for the calls it watches (see module)."""

    def __init__(self) -> None:
        #: each watched call, and since when (``time.monotonic``)
        self._watched: dict[object, float] = {}
        #: (when the late wake-up came, ``time.monotonic``; how late, ms), in
        #: time order
        self._stalls: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, call: object) -> None:
        """Watch ``call`` from now (from its first ``add`` if added again)."""
        self._watched.setdefault(call, time.monotonic())
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stall-watch")

    def discard(self, call: object) -> list[tuple[float, float]]:
        """Stop watching ``call``; the stalls noticed since it was added, as
        ``(monotonic time of the late wake-up, late ms)``."""
        since = self._watched.pop(call, None)
        if since is None:
            return []
        stalls = self._stalls
        mine = stalls[bisect.bisect_left(stalls, (since, -1.0)) :]
        if not self._watched:
            stalls.clear()
            if self._task is not None:
                self._task.cancel()
                self._task = None
        else:
            # Watched in time order (a dict keeps it): the first is the oldest.
            oldest = next(iter(self._watched.values()))
            del stalls[: bisect.bisect_left(stalls, (oldest, -1.0))]
        return mine

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(STALL_TICK_S)
            late_ms = (loop.time() - before - STALL_TICK_S) * 1000.0
            if late_ms >= STALL_MS:
                self._stalls.append((time.monotonic(), late_ms))


_stall_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StallWatch] = (
    weakref.WeakKeyDictionary()
)


def stall_watch() -> StallWatch:
    """The running loop's :class:`StallWatch`."""
    loop = asyncio.get_running_loop()
    watch = _stall_watches.get(loop)
    if watch is None:
        watch = _stall_watches[loop] = StallWatch()
    return watch
