"""The JSON report file, rewritten atomically after every call.

Theory of operation
-------------------
A run may be stopped at any moment: Ctrl-C, a crash, a CI job timeout, a power
cut. The report on disk must then be the last complete JSON document written,
never a torn one, so the calls that did finish are not lost. Each write therefore
goes to a temporary file in the same directory (``os.replace`` is atomic only
within one file system), which is flushed and fsynced, renamed over the report,
and then the directory itself is fsynced so the rename survives a power cut.

The document says ``"complete": false`` until :meth:`ReportWriter.finish` is
called without an interruption reason; a reader of a half-run report can tell.

Cost: each call is encoded once, when it is added (the C encoder, compact),
and every rewrite splices those texts into the indented run fields. A rewrite
still costs time in proportion to the report (tens of milliseconds at a few
hundred calls), and calls of a big run end many a second: rewriting after
each one kept a core busy while a 150-call run hung up, the core the calls'
own processes needed. So after a write of ``w`` seconds the next one waits
until ``WRITE_WAIT_FACTOR * w`` has passed (at most ``MAX_WRITE_WAIT_S``); the
writer is ``dirty`` meanwhile, and :meth:`ReportWriter.flush` writes it (the
run loop calls it when the wait is over). Rewriting thus costs at most ~5 % of
the time, a small report is still on disk within milliseconds of a call, and
:meth:`ReportWriter.finish` always writes.

State machine (illegal transitions raise ``RuntimeError``, a programming error)::

    new --begin--> open --add_call*--> open --finish--> finished
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.report.schema import SCHEMA_VERSION, ReportError, summarize

log = logging.getLogger(__name__)

#: Keys of the report that the writer owns; ``begin(meta)`` may not set them.
_OWNED = frozenset(
    {"version", "finished_at", "complete", "interrupted", "calls", "summary"}
)
#: the next write waits this many times the last one's length (module docstring)
WRITE_WAIT_FACTOR = 20.0
#: the longest a finished call may wait to be on disk
MAX_WRITE_WAIT_S = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_timestamp(moment: datetime) -> str:
    """``2026-11-23T12:15:00.123Z``: UTC, millisecond precision, as the schema."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, so that readers see old or new, whole.

    Non-finite floats (NaN, infinity) are not JSON; they are written as
    ``null`` ("unknown") with a warning rather than producing a file no JSON
    parser accepts. Otherwise as :func:`write_text_atomic`.
    """
    # Serialise before touching the disk: a value that is not JSON-ready is a
    # bug in the caller and must not cost the previous report.
    write_text_atomic(path, _dumps(obj))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably.

    Missing parent directories are created. Raises :class:`ReportError` (one
    line, naming the file) if the file cannot be written; the previous file, if
    any, is then left untouched and no temporary file is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never follow or reuse someone else's file; 0o666 lets the
        # umask decide the final permissions, like any other file we create.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # Also on KeyboardInterrupt: the old file is intact, drop the temp file.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            log.debug("could not remove %s", tmp, exc_info=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    _fsync_directory(path.parent)


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        log.warning("report has non-finite numbers (NaN/inf); writing them as null")
        return (
            json.dumps(_finite(obj), indent=2, ensure_ascii=False, allow_nan=False)
            + "\n"
        )


def _dumps_compact(obj: Any) -> str:
    """One call as compact JSON (the C encoder: ``indent`` forces the slow
    pure-Python one); non-finite numbers as null, as :func:`_dumps`."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except ValueError:
        log.warning("report has non-finite numbers (NaN/inf); writing them as null")
        return json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk
    # (fsync(2): "an explicit fsync() on a file descriptor for the directory is
    # also needed"). Some file systems refuse directory fsync; atomicity
    # against a crash of this process does not depend on it.
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        log.debug("cannot open %s to fsync it", directory, exc_info=True)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # The new report is in place already; only its durability is in doubt.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            log.warning("cannot fsync directory %s: %s", directory, exc.strerror)
    finally:
        os.close(fd)


def _write_error(path: Path, exc: OSError) -> ReportError:
    reason = exc.strerror or str(exc)
    return ReportError(f"cannot write {path}: {reason}")


class ReportWriter:
    """Builds the version-1 report and keeps it on disk after every change.

    ``meta`` given to :meth:`begin` holds the run's own fields (``run_id``,
    ``seed``, ``host``, optionally ``tool`` and ``started_at``); the writer owns
    ``version``, ``finished_at``, ``complete``, ``interrupted``, ``calls`` and
    ``summary``. Calls are copied when added, so later changes to the caller's
    dicts do not leak into the report.
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.path = Path(path)
        self._clock = clock
        self._meta: dict[str, Any] | None = None
        self._calls: list[dict[str, Any]] = []
        #: each call's JSON text, encoded once when it was added
        self._texts: list[str] = []
        #: calls added since the last write
        self.dirty = False
        self._last_write_s = 0.0
        self._last_write_end = 0.0
        self._finished_at: str | None = None
        self._interrupted: str | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def report(self) -> dict[str, Any]:
        """The current document: what is on disk, unless the last write failed.

        A new top-level dict and calls list; the call dicts are the writer's
        own copies, to be read (rendered, served), not changed.
        """
        if self._meta is None:
            raise RuntimeError("ReportWriter.begin() was not called")
        return {
            "version": SCHEMA_VERSION,
            "tool": self._meta.get("tool", f"callagent {__version__}"),
            "run_id": self._meta.get("run_id"),
            "started_at": self._meta["started_at"],
            "finished_at": self._finished_at,
            "complete": self._finished and self._interrupted is None,
            "interrupted": self._interrupted,
            "seed": self._meta.get("seed"),
            "host": self._meta.get("host", {}),
            **{
                key: value
                for key, value in self._meta.items()
                if key not in ("tool", "run_id", "started_at", "seed", "host")
            },
            "calls": list(self._calls),
            "summary": summarize(self._calls),
        }

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The calls added so far (a new list), e.g. for a live metrics collector."""
        return list(self._calls)

    def begin(self, meta: Mapping[str, Any]) -> None:
        """Start the report and write it at once, so an unwritable path fails
        before any call is placed."""
        if self._meta is not None:
            raise RuntimeError("ReportWriter.begin() called twice")
        owned = sorted(_OWNED.intersection(meta))
        if owned:
            raise ValueError(f"report fields owned by the writer: {', '.join(owned)}")
        self._meta = copy.deepcopy(dict(meta))
        self._meta.setdefault("started_at", iso_timestamp(self._clock()))
        self._write()

    def set_field(self, key: str, value: Any) -> None:
        """Set a run field the writer does not own (``resources``, ``shards``);
        written with the next call or :meth:`finish`."""
        self._require_open("set_field")
        if key in _OWNED:
            raise ValueError(f"report field owned by the writer: {key}")
        assert self._meta is not None
        self._meta[key] = copy.deepcopy(value)

    def add_call(self, call: Mapping[str, Any], *, encoded: str | None = None) -> None:
        """Append one finished call and rewrite the file (when due).

        If the write fails the call is still kept, so the next successful write
        (another call, or :meth:`finish`) includes it. ``encoded``: the call's
        JSON as it came (a worker's line), ``call`` decoded from it and
        changed by nobody: kept as they are, not encoded and copied again
        (two of the three JSON passes a worker's call cost the parent).
        """
        self._require_open("add_call")
        if encoded is None:
            # Encoded once (a TypeError here, before the file is touched, for
            # a value that is not JSON), and the copy made from that text: far
            # cheaper than deepcopy on a call of a few hundred KB.
            encoded = _dumps_compact(dict(call))
            kept = json.loads(encoded)
        else:
            kept = dict(call)
        self._calls.append(kept)
        self._texts.append(encoded)
        self.dirty = True
        if self.flush_in() <= 0:
            self._write()

    def flush_in(self) -> float:
        """Seconds until the next rewrite is due (0: now)."""
        wait = min(MAX_WRITE_WAIT_S, WRITE_WAIT_FACTOR * self._last_write_s)
        return max(0.0, self._last_write_end + wait - time.monotonic())

    def flush(self) -> None:
        """Write the calls added since the last write, if any."""
        if self.dirty and not self._finished:
            self._write()

    def finish(self, interrupted: str | None = None) -> None:
        """Close the report: ``complete`` is true only when ``interrupted`` is None.

        ``interrupted`` is a short reason: ``"SIGINT"``, ``"error: <message>"``.
        """
        self._require_open("finish")
        self._finished_at = iso_timestamp(self._clock())
        self._interrupted = interrupted
        self._finished = True
        self._write()

    def _require_open(self, action: str) -> None:
        if self._meta is None:
            raise RuntimeError(f"ReportWriter.{action}() before begin()")
        if self._finished:
            raise RuntimeError(f"ReportWriter.{action}() after finish()")

    def _write(self) -> None:
        started = time.monotonic()
        document = self.report
        document["calls"] = []
        head = _dumps(document)
        # The calls' own texts go where the empty list is: at depth 1 the key
        # is unique (a key inside a string value has its quotes escaped).
        slot = '\n  "calls": [],'
        if self._texts and slot in head:
            calls = ",\n    ".join(self._texts)
            head = head.replace(slot, f'\n  "calls": [\n    {calls}\n  ],', 1)
        elif self._texts:  # never expected; the slow way is still right
            head = _dumps(self.report)
        write_text_atomic(self.path, head)
        self.dirty = False
        self._last_write_end = time.monotonic()
        self._last_write_s = self._last_write_end - started
        log.debug("report written: %s (%d calls)", self.path, len(self._calls))
