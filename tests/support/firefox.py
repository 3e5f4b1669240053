"""Firefox ESR for the browser tests: find it, or say how to install it.

The driver itself is the product's (:mod:`agent.targets.browser.drivers`,
WebDriver BiDi over ``--remote-debugging-port``, no geckodriver): the tests
drive Firefox the way ``callagent run --target browser:firefox`` does.
Policy as for Chromium (browser_fixtures.py): a missing Firefox fails the
test unless ``CALLAGENT_SKIP_BROWSER=1`` is set explicitly.
"""

from __future__ import annotations

import os

import pytest

from agent.targets.browser.drivers import (
    CHROMIUM_CANDIDATES,
    FIREFOX_CANDIDATES,
    find,
)
from tests.support.chromium import SKIP_ENV

__all__ = ["require_browser"]

INSTALL_HINT = (
    "run scripts/install-browsers.sh (Debian chromium and firefox-esr), "
    f"or set {SKIP_ENV}=1 to skip browser tests explicitly"
)


def require_browser(name: str) -> str:
    """The browser's path; skip if CALLAGENT_SKIP_BROWSER=1, fail if missing."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"browser tests disabled by {SKIP_ENV}=1")
    candidates = FIREFOX_CANDIDATES if name == "firefox" else CHROMIUM_CANDIDATES
    path = find(candidates)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}.", pytrace=False)
    return path
