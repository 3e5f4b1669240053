"""Output paths given on the command line, checked before any call is placed.

A run that ends by failing to write its report has thrown its calls away, and
a path that cannot work (empty, a directory, under a regular file, on a
read-only mount, in a directory we may not write) is known at start. So every
output option is checked once, up front, by doing what the atomic writer will
do: create a file in the directory that will hold it (and remove it again).
Problems are :class:`~agent.errors.UsageError`: one line naming the option,
the path and the reason, exit 2 (README, "Exit codes").
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
from pathlib import Path

from agent.errors import UsageError

__all__ = ["check_output_dir", "check_output_file", "output_path"]


def output_path(text: str) -> Path:
    """argparse ``type=`` for an output path: an empty one is refused
    (``Path("")`` is ``.``, which would be taken for the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not a file name")
    return Path(text)


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the writer creates the rest)."""
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _probe_directory(directory: Path, option: str, path: Path) -> None:
    """Create and remove a file where the writer will create its own: in
    ``directory``, or its nearest existing ancestor (the writer makes the rest)."""
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".callagent-probe-", dir=existing)
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot write in {existing}: {_reason(exc)}"
        ) from exc
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass  # a stray empty probe file is harmless; the check itself passed


def check_output_file(path: Path, option: str) -> None:
    """Raise :class:`UsageError` unless a report can be written to ``path``."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        # ENOTDIR (a path under a regular file): the probe names the file.
        info = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: {_reason(exc)}") from exc
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(
                f"{option} {path}: is a directory; give a file name such as "
                f"{Path(path, 'report.json')}"
            )
        if not stat.S_ISREG(info.st_mode):
            # The atomic writer renames over its target: never over /dev/null.
            raise UsageError(f"{option} {path}: exists and is not a regular file")
    _probe_directory(path.parent, option, path)


def check_output_dir(path: Path, option: str) -> None:
    """Raise :class:`UsageError` unless files can be written into ``path``."""
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"{option} {path}: is not a directory")
    _probe_directory(path, option, path)
