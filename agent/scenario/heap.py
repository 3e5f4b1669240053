"""Full garbage collections only while no call's media is due.

CPython 3.11's collector runs a *full* collection (generation 2) on its own
once enough objects have survived into the old generation: it walks every
tracked object of the process, ~0.6 µs each on the 2-core host the load
benchmarks run on. With 150 calls in one process (~250 000 objects) one full
collection held the event loop 100-230 ms, every few seconds under load: every
call of the process stopped sending for that long, and the report rightly
called it the agent's own stall (``inconclusive``), so a 300-call run could not
pass. Young collections (generations 0 and 1) walk only new objects and stay
short (p50 0.3 and 3 ms there), and they reclaim the cycles that die young,
which is nearly all of them.

So while calls are up, :class:`HeapPolicy` turns off the automatic full
collection (``threshold2`` out of reach; young ones as before) and runs one
itself whenever the last call of the process has ended and more are to come
(between scenarios). Not when the run's last call has ended: a worker process
exits then, and its collection (~0.3 s of CPU at 75 calls) only took a core
from the workers still finishing their calls (their last calls stalled
~110 ms); the process's own thresholds, restored then, take over.

What waits for a collection is the cyclic garbage that outlived a
young collection: measured ~180 objects per finished call (a few dozen KB),
so a run that never has a quiet moment holds at most that per call it ran.
The thresholds the process had are restored when the run ends.
"""

from __future__ import annotations

import gc
from types import TracebackType

__all__ = ["HeapPolicy"]

#: generation-2 threshold that is never reached in a run
_NEVER = 1 << 30


class HeapPolicy:
    """Counts the calls in progress; a full collection when none is.

    Runs of one process may overlap (each runner has its own policy): the
    process's thresholds are saved by the first policy entered and restored
    by the last one left, and a full collection waits until no policy has a
    call up.
    """

    #: policies entered and not yet left, in this process
    _entered = 0
    #: the process's thresholds before the first of them
    _saved: tuple[int, int, int] | None = None
    #: calls up under any policy of this process
    _calls_up = 0

    def __init__(self) -> None:
        self._inside = False
        self._calls = 0
        #: full collections run because the process became quiet (for tests)
        self.collections = 0

    def __enter__(self) -> HeapPolicy:
        if not self._inside:
            self._inside = True
            cls = type(self)
            if cls._entered == 0:
                cls._saved = gc.get_threshold()
                young, middle, _ = cls._saved
                gc.set_threshold(young, middle, _NEVER)
            cls._entered += 1
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._inside:
            self._inside = False
            cls = type(self)
            cls._entered -= 1
            if cls._entered == 0 and cls._saved is not None:
                gc.set_threshold(*cls._saved)
                cls._saved = None

    def call_started(self) -> None:
        self._calls += 1
        type(self)._calls_up += 1

    def call_ended(self, *, more_to_come: bool = True) -> None:
        """A call ended; ``more_to_come``: this run still has calls to start
        (False after its last: no collection then, see the module)."""
        if self._calls == 0:
            return
        self._calls -= 1
        cls = type(self)
        cls._calls_up -= 1
        if cls._calls_up == 0 and more_to_come and self._inside and gc.isenabled():
            gc.collect()
            self.collections += 1
