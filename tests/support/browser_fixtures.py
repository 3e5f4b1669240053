"""pytest fixtures for browser tests.  Wire into a conftest.py with:

    from tests.support.browser_fixtures import chromium  # noqa: F401

Opt-out policy: browser tests are skipped ONLY when ``CALLAGENT_SKIP_BROWSER=1`` is
set explicitly.  If Chromium is missing and the variable is not set, the fixture
fails (reported as an error in setup, exit status 1) and says to run
``scripts/install-chromium.sh``; a missing browser never silently skips.

Scope: function.  A launch costs ~0.3-0.4 s here (teardown ~0.05 s), and a fresh
browser per test gives each test its own profile, permissions and WebRTC state, so
a crashed or wedged browser cannot cascade into later tests.  A session-scoped async
fixture would also force every browser test onto the session event loop
(``loop_scope="session"``), because the CDP websockets and reader tasks are bound
to the loop they were created on.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.chromium import EXECUTABLE_ENV, SKIP_ENV, Chromium, find_chromium

__all__ = ["chromium", "require_chromium"]

INSTALL_HINT = (
    "run scripts/install-chromium.sh (or set CALLAGENT_CHROMIUM=/path/to/chromium), "
    f"or set {SKIP_ENV}=1 to skip browser tests explicitly"
)


def require_chromium() -> str:
    """Chromium's path; skip if CALLAGENT_SKIP_BROWSER=1, fail if it is missing."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"browser tests disabled by {SKIP_ENV}=1")
    executable = find_chromium()
    if executable is None:
        explicit = os.environ.get(EXECUTABLE_ENV)
        what = (
            f"{EXECUTABLE_ENV}={explicit} is not an executable file"
            if explicit
            else "Chromium is not installed"
        )
        pytest.fail(f"{what}: {INSTALL_HINT}.", pytrace=False)
    return executable


@pytest_asyncio.fixture
async def chromium() -> AsyncIterator[Chromium]:
    """A fresh headless Chromium for one test; killed and cleaned up afterwards."""
    executable = require_chromium()
    async with Chromium.launch(executable=executable) as browser:
        yield browser
