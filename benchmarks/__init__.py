"""Benchmarks for callagent; run ``python -m benchmarks.calls`` (see README.md)."""
