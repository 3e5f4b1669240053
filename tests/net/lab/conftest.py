"""Fixtures for the kernel lab tests: root gate, and the namespace ledger.

Every live test asserts that ``ip netns list`` is exactly what it was before:
a lab that leaks a namespace fails the test that built it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from agent.net.lab.shell import unavailable_reason


def _netns_list() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


@pytest.fixture
def root_lab() -> Iterator[None]:
    """Skip (with the one-line reason) where the kernel lab cannot be built;
    otherwise check that the test leaves no namespace behind."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    before = _netns_list()
    yield
    assert _netns_list() == before, "a lab test left namespaces behind"
