"""Fixtures for the kernel lab tests: root gate, and the namespace ledger.

Every live test asserts that ``ip netns list`` is exactly what it was before:
a lab that leaks a namespace fails the test that built it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.lab import lab_left_as_found


@pytest.fixture
def root_lab() -> Iterator[None]:
    """Skip (with the one-line reason) where the kernel lab cannot be built;
    otherwise check that the test leaves no namespace behind."""
    yield from lab_left_as_found()
