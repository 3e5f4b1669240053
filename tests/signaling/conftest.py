"""Fixtures shared by the signalling tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of the test; on exit, none may carry a traceback or be
    an error (issue 11: hostile input is the client's fault, not the server's)."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    bad = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.exc_info is not None or r.levelno >= logging.ERROR
    ]
    assert not bad, bad
