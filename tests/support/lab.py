"""The kernel lab in tests: skip where it cannot be built, and check that a
test leaves no network namespace behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from agent.net.lab.shell import unavailable_reason


def netns_list() -> list[str]:
    """The host's network namespaces, by name."""
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def require_lab(*more: str | None) -> None:
    """Skip with the one-line reason where the kernel lab cannot be built, or
    where one of ``more`` (other reasons, None when met) says so."""
    reason = unavailable_reason() or next((m for m in more if m), None)
    if reason is not None:
        pytest.skip(reason)


def lab_left_as_found() -> Iterator[None]:
    """A fixture's body: skip without the lab; fail a test that leaves a
    namespace behind."""
    require_lab()
    before = netns_list()
    yield
    assert netns_list() == before, "a lab test left namespaces behind"
