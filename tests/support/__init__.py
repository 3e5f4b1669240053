"""Shared helpers for callagent tests (browser harness, tiny HTTP servers, data)."""
