"""Shared fixtures: the headless-Chromium fixture for interop tests."""

from tests.support.browser_fixtures import chromium

__all__ = ["chromium"]
