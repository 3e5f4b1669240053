"""Shared fixtures: the headless-Chromium fixture for interop tests, and the
check that every report a test writes matches ``docs/report.schema.json``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.browser_fixtures import chromium
from tests.support.report_schema import changed_json_files, schema_errors

__all__ = ["chromium"]


@pytest.fixture(autouse=True)
def _reports_match_the_schema(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    root = tmp_path_factory.getbasetemp()
    # mtime granularity: a file written in the same tick as the start counts.
    since_ns = time.time_ns() - 1_000_000
    yield
    errors = [
        error
        for path in changed_json_files(root, since_ns)
        for error in schema_errors(path)
    ]
    if errors:
        pytest.fail(
            "report does not match docs/report.schema.json:\n" + "\n".join(errors[:20]),
            pytrace=False,
        )
