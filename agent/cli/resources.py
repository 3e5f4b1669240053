"""The run's own footprint over time: resident memory and open file descriptors.

A soak is judged on whether these stay flat: a leak of one socket or a few
kilobytes per call is invisible in a 10-second run and fatal in a 30-minute
one (the seeds' "ran out of connection-tracking entries during load tests"
starts the same way, on the other side). So every run samples its process —
and each worker process — at start, every :data:`SAMPLE_EVERY_S` and at the
end, and the report's ``resources`` list holds the samples
(:class:`~agent.report.entries.ResourceSample`).

Linux ``/proc`` only; elsewhere the values are ``null`` and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["SAMPLE_EVERY_S", "ResourceSampler", "sample"]

#: 180 samples per process in a 30-minute soak: enough to see a slope.
SAMPLE_EVERY_S = 10.0

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int | None:
    # /proc/self/statm: size resident shared ... in pages (proc(5)).
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def sample(t_s: float, worker: int | None = None) -> dict[str, Any]:
    """One sample as the report holds it (``t_s``: seconds since the run began)."""
    entry: dict[str, Any] = {
        "t_s": round(t_s, 3),
        "rss_bytes": _rss_bytes(),
        "open_fds": _open_fds(),
    }
    if worker is not None:
        entry["worker"] = worker
    return entry


class ResourceSampler:
    """Samples this process into ``samples`` (and hands each to ``on_sample``)."""

    def __init__(
        self,
        *,
        worker: int | None = None,
        every_s: float = SAMPLE_EVERY_S,
        started: float | None = None,
        on_sample: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.samples: list[dict[str, Any]] = []
        self._worker = worker
        self._every_s = every_s
        self._started = time.monotonic() if started is None else started
        self._on_sample = on_sample

    def take(self) -> None:
        entry = sample(time.monotonic() - self._started, self._worker)
        self.samples.append(entry)
        if self._on_sample is not None:
            self._on_sample(entry)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ResourceSampler]:
        """Sample now, every ``every_s`` while in the block, and on leaving."""
        self.take()
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            self.take()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            self.take()
