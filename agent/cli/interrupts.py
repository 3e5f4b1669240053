"""Ctrl-C and SIGTERM for the command line: noted from the first instant,
acted on where it is safe.

Theory of operation
-------------------
Python's default turns SIGINT into ``KeyboardInterrupt`` wherever the program
happens to be, which during the first second (importing aiortc) or while a
report is being built means a traceback and a report that never says it was
cut short; SIGTERM kills outright. Instead, from :func:`agent.cli.launch` on:

* the first SIGINT or SIGTERM is *recorded* (its name goes in the report's
  ``interrupted``), and if a command has attached its main task, that task is
  cancelled: calls hang up, the report is written with ``complete: false``,
  exit 130;
* a signal that arrives before a task is attached (imports, loading files)
  is only recorded; :meth:`Interrupts.cancelling` cancels the task as soon as
  it is attached, so the run stops before its first call, and still writes a
  report that says so;
* a second signal means "stop waiting": ``KeyboardInterrupt``, which the CLI
  turns into exit 130 without a traceback.

This module imports only the standard library: it is installed before the
heavy imports it protects.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["INTERRUPTS", "Interrupts"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The process's record of SIGINT/SIGTERM, and the task they cancel."""

    def __init__(self) -> None:
        #: name of the first signal received (``"SIGINT"``, ``"SIGTERM"``)
        self.received: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def is_installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> bool:
        """Take over SIGINT and SIGTERM; False if already done or not possible
        (signal handlers can only be set from the main thread)."""
        if (
            self.is_installed
            or threading.current_thread() is not threading.main_thread()
        ):
            return False
        for sig in _SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        return True

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Installed for the block, unless it already was (then left as is)."""
        mine = self.install()
        try:
            yield self
        finally:
            if mine:
                self.uninstall()

    @contextlib.contextmanager
    def cancelling(self, task: asyncio.Task[Any]) -> Iterator[Interrupts]:
        """A signal cancels ``task`` while in the block; one already received
        cancels it at once."""
        self._task = task
        if self.received is not None:
            task.cancel()
        try:
            yield self
        finally:
            self._task = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # Wake a loop blocked in select() with a long timeout (as
            # asyncio.Runner does for its own SIGINT handler).
            task.get_loop().call_soon_threadsafe(lambda: None)


#: The one record for this process.
INTERRUPTS = Interrupts()
