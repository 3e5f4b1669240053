"""The ``wire`` marker: tests that capture loopback with tcpdump (root)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "wire: captures loopback with tcpdump in a network namespace (root, tcpdump)",
    )
