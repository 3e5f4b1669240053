"""Run ``callagent call`` in a child process and read the one call it reports."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CALLAGENT = [sys.executable, "-m", "agent.cli.main"]


async def call(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CALLAGENT,
        "call",
        *args,
        cwd=ROOT,
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
