"""Run ``callagent`` in a child process, as a user would, and read what it wrote.

One runner for every test that starts the command: :func:`run` waits for it,
:func:`start` hands back the running process (to signal it, or to read its
output as it comes), :func:`call` is ``callagent call`` from a coroutine.
Each runs this tree's code (:func:`child_env`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The installed entry (agent.cli:launch), not agent.cli.main: it takes over
# SIGINT/SIGTERM before the slow imports (see agent/cli/__init__.py).
CALLAGENT = [sys.executable, "-m", "agent.cli"]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, this tree first on the import path (the child runs
    this tree's code from any working directory), and ``extra``."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(extra or {})}


def run(
    *args: str,
    timeout: float = 90,
    cwd: Path = ROOT,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``callagent ARGS`` to its end: exit code, stdout and stderr as text.
    ``prefix`` runs it under another command (``unshare -n``); ``env`` is
    added to the environment."""
    return subprocess.run(
        [*prefix, *CALLAGENT, *args],
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    *args: str,
    stdout: int = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """``callagent ARGS`` started: stderr is a pipe, stdout one unless told;
    ``env`` is added to the environment."""
    return subprocess.Popen(
        [*CALLAGENT, *args],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(env),
    )


async def call(*args: str) -> tuple[int, str, str]:
    """``callagent call ARGS`` from a coroutine: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *CALLAGENT,
        "call",
        *args,
        cwd=ROOT,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def only_call(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    assert report["version"] == 1
    (entry,) = report["calls"]
    assert isinstance(entry, dict)
    return entry
