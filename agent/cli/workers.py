"""``callagent run --workers N``: one run on every core.

Theory of operation
-------------------
One asyncio event loop is one core: at ~100 concurrent calls a single process
falls behind the packet clock (benchmarks/README.md). So the parent starts N
worker processes, each a plain ``callagent run --shard I/N`` of the same files
with the same ``--seed`` and ``--run-id`` (a subprocess of our own command,
not ``multiprocessing``):

* the worker *is* the fleet primitive, so ``--workers``, ``--shard`` + ``merge``
  and the Ray fleet run one code path, and a call has the same id and seed in
  all of them (:func:`agent.scenario.runner.shard_plan`);
* nothing is pickled (scenario models, the parsed command line): a worker
  reloads the files, which the parent has already checked;
* each worker owns its process: its own event loop, its own signal handling
  (:mod:`agent.cli.interrupts`), its own report entries for the calls it
  hangs up when told to stop.

A worker with the hidden ``--worker-stream`` option writes, instead of a
results table, one JSON object per line on stdout (:class:`WorkerStream`):
``{"call": …}`` when a call finishes, ``{"progress": …}`` twice a second,
``{"resource": …}`` for each footprint sample, and ``{"end": …}`` last. The
parent adds each call to its one report as it arrives, so the report on disk
grows call by call exactly as in a one-process run, and shows one progress
display for all workers.

Workers run in their own session (process group): a Ctrl-C at the terminal
reaches the parent only, which then sends each worker one SIGTERM (a second
signal would mean "stop waiting" to the worker and lose its hang-up reports),
keeps reading until every worker has reported its last call, and writes the
report with ``complete: false``. A worker whose stdin closes (the parent died)
stops the same way. A worker that exits without its ``end`` line is a missing
shard: the report names it and says ``complete: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from agent.scenario.runner import CallProgress, RunProgress

__all__ = ["WorkerOutcome", "WorkerStream", "default_workers", "run_workers"]

logger = logging.getLogger(__name__)

#: A call's report entry is one line; a long call with many events is large.
_LINE_LIMIT = 64 * 1024 * 1024
#: How often a worker tells the parent where its calls are.
PROGRESS_EVERY_S = 0.5


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# --- the worker side -----------------------------------------------------------


class WorkerStream:
    """A worker's report to its parent: JSON lines on ``out`` (stdout).

    While :meth:`reporting`, the lines are written by a thread of their own:
    a call's entry (tens of KB, more under load) is bigger than a pipe's
    buffer, so a write from the event loop waited for the parent to read,
    and every call of the worker stalled with it (71-129 ms at 175 calls while
    the parent rewrote its report). The lines keep their order; outside
    :meth:`reporting` (the last samples, ``end``) they are written at once.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._broken = False

    def send(self, kind: str, value: Any) -> None:
        try:
            line = json.dumps({kind: value}, allow_nan=False) + "\n"
        except ValueError:  # NaN in a figure: the parent reads JSON, not Python
            line = json.dumps({kind: _finite(value)}) + "\n"
        if self._writer is not None:
            self._lines.put(line)
        else:
            self._write(line)

    def _write(self, line: str) -> None:
        if self._broken:
            return
        try:
            self._out.write(line)
            self._out.flush()
        except (BrokenPipeError, ValueError):
            # The parent is gone (stdin's EOF cancels the run) or the stream
            # is closed: nobody is left to read the rest.
            self._broken = True

    def _write_lines(self) -> None:
        while (line := self._lines.get()) is not None:
            self._write(line)

    def _start_writer(self) -> None:
        self._writer = threading.Thread(
            target=self._write_lines, name="worker-stream", daemon=True
        )
        self._writer.start()

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            self._lines.put(None)
            writer.join()  # every line queued so far, in order, before ``end``

    def call(self, result: dict[str, Any]) -> None:
        self.send("call", result)

    def resource(self, entry: dict[str, Any]) -> None:
        self.send("resource", entry)

    def end(self, interrupted: str | None) -> None:
        self.send("end", {"interrupted": interrupted})

    @contextlib.asynccontextmanager
    async def reporting(self, progress: RunProgress) -> AsyncIterator[None]:
        """Progress twice a second while in the block; and stop the run
        (cancel the current task) if the parent goes away."""
        self._start_writer()
        ticker = asyncio.create_task(self._progress(progress))
        try:
            async with _cancel_when_stdin_closes(asyncio.current_task()):
                yield
        finally:
            ticker.cancel()
            self._send_progress(progress)
            self._stop_writer()

    async def _progress(self, progress: RunProgress) -> None:
        while True:
            self._send_progress(progress)
            await asyncio.sleep(PROGRESS_EVERY_S)

    def _send_progress(self, progress: RunProgress) -> None:
        self.send(
            "progress",
            {
                "total": progress.total,
                "calls": [
                    [c.call_id, c.scenario, c.state, c.elapsed_s, c.total_s, c.verdict]
                    for c in progress.calls.values()
                ],
            },
        )


class _ParentGone(asyncio.Protocol):
    """stdin of a worker: the parent never writes, so EOF means it is gone."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self._task = task

    def connection_lost(self, exc: Exception | None) -> None:
        task = self._task
        if task is not None and not task.done():
            logger.warning("the parent process is gone; hanging up")
            task.cancel()


@contextlib.asynccontextmanager
async def _cancel_when_stdin_closes(
    task: asyncio.Task[Any] | None,
) -> AsyncIterator[None]:
    # A pipe in the event loop, not a thread blocked in read(): asyncio.run
    # waits for its executor's threads at exit, and the parent closes our
    # stdin only after we exit.
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: _ParentGone(task), sys.stdin
        )
    except (OSError, ValueError):  # stdin is a terminal or a file: no parent
        yield
        return
    try:
        yield
    finally:
        transport.close()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


# --- the parent side ----------------------------------------------------------


@dataclass
class WorkerOutcome:
    """What the parent learnt from one worker."""

    index: int
    #: the worker's ``end`` line arrived (its calls are all reported)
    ended: bool = False
    #: the worker's own reason for stopping early (``"SIGTERM"``)
    interrupted: str | None = None
    exit_code: int | None = None
    calls: int = 0
    progress: list[CallProgress] = field(default_factory=list)


async def run_workers(
    argv: Callable[[int], Sequence[str]],
    outcomes: list[WorkerOutcome],
    *,
    progress: RunProgress,
    on_call: Callable[[dict[str, Any], str | None], None],
    on_resource: Callable[[dict[str, Any]], None],
) -> None:
    """Start a worker per entry of ``outcomes`` (``argv(i)``: worker i's
    ``callagent`` arguments), read them until all have exited, and fill in
    ``outcomes`` (also when cancelled).

    Cancelled (Ctrl-C in the parent): each worker is sent SIGTERM, and this
    still waits for their last calls before re-raising ``CancelledError``.
    """
    count = len(outcomes)
    procs: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for i in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent.cli",
                *argv(i),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=_LINE_LIMIT,
            )
            procs.append(proc)
            readers.append(
                asyncio.create_task(
                    _read_worker(proc, outcomes[i], on_call, on_resource)
                )
            )
        ticker = asyncio.create_task(_merge_progress(outcomes, progress))
        try:
            await asyncio.wait(readers)
        finally:
            ticker.cancel()
            _fold_progress(outcomes, progress)
    except asyncio.CancelledError:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        if readers:
            await asyncio.wait(readers)
        _fold_progress(outcomes, progress)
        raise
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()


async def _read_worker(
    proc: asyncio.subprocess.Process,
    outcome: WorkerOutcome,
    on_call: Callable[[dict[str, Any], str | None], None],
    on_resource: Callable[[dict[str, Any]], None],
) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        try:
            message = json.loads(line)
            ((kind, value),) = message.items()
        except (ValueError, AttributeError):
            # Not ours (a stray print in a dependency): never lose the run to it.
            logger.warning("worker %d: unexpected output %.80r", outcome.index, line)
            continue
        if kind == "call":
            outcome.calls += 1
            on_call(value, call_text(line))
        elif kind == "progress":
            outcome.progress = [CallProgress(*row) for row in value["calls"]]
        elif kind == "resource":
            on_resource({**value, "worker": outcome.index})
        elif kind == "end":
            outcome.ended = True
            outcome.interrupted = value.get("interrupted")
    outcome.exit_code = await proc.wait()


#: how :meth:`WorkerStream.send` starts a call's line
_CALL_LINE = b'{"call": '


def call_text(line: bytes) -> str | None:
    """The call's own JSON inside a worker's ``{"call": ...}`` line (as
    :meth:`WorkerStream.send` writes it), for the report as it is; None if
    the line is not of that form."""
    body = line.rstrip(b"\n")
    if body.startswith(_CALL_LINE) and body.endswith(b"}"):
        return body[len(_CALL_LINE) : -1].decode()
    return None


async def _merge_progress(outcomes: list[WorkerOutcome], progress: RunProgress) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        _fold_progress(outcomes, progress)


def _fold_progress(outcomes: list[WorkerOutcome], progress: RunProgress) -> None:
    """The workers' calls, in one :class:`RunProgress` for the one display."""
    calls = {c.call_id: c for outcome in outcomes for c in outcome.progress}
    progress.calls = dict(sorted(calls.items()))
    progress.done = sum(outcome.calls for outcome in outcomes)
