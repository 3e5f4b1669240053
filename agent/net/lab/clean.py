"""Removing lab namespaces left behind (a SIGKILLed run never reached its
``finally``), and nothing else: only names :func:`parse_namespace_name`
recognises as ours — the ``ca-`` prefix, a run id, an index and a role.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

from agent.errors import NetworkLabError
from agent.net.lab import shell
from agent.net.lab.topology import parse_namespace_name, validate_run_id

__all__ = ["clean", "lab_namespaces", "remove_namespace"]

logger = logging.getLogger(__name__)


async def lab_namespaces(run_id: str | None = None) -> list[str]:
    """Our namespaces on this host (of one run, or of every run)."""
    if run_id is not None:
        validate_run_id(run_id)
    found = []
    for name in await shell.list_namespaces():
        parsed = parse_namespace_name(name)
        if parsed is not None and (run_id is None or parsed[0] == run_id):
            found.append(name)
    return found


async def remove_namespace(name: str) -> None:
    """End the processes inside ``name`` (they would keep it alive unnamed;
    they were started into our lab), then delete it."""
    code, out, _ = await shell.run(["ip", "netns", "pids", name])
    if code == 0:
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    code, _, err = await shell.run(["ip", "netns", "del", name])
    if code != 0 and "No such file" not in err:
        raise NetworkLabError(f"cannot remove lab namespace {name}: {err.strip()}")


async def clean(run_id: str | None = None) -> list[str]:
    """Remove the lab namespaces of ``run_id`` (or of every run); the names
    removed. Raises :class:`NetworkLabError` (one line) if one would not go."""
    reason = shell.unavailable_reason()
    if reason is not None:
        raise NetworkLabError(reason)
    names = await lab_namespaces(run_id)
    failures = []
    for name in names:
        try:
            await remove_namespace(name)
        except NetworkLabError as exc:
            failures.append(str(exc))
    if failures:
        raise NetworkLabError("; ".join(failures))
    if names:
        logger.info("lab clean: removed %s", ", ".join(names))
    return names
