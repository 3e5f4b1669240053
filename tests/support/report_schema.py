"""Validate the reports a test wrote against ``docs/report.schema.json``.

Used by an autouse fixture in ``tests/conftest.py``: after each test, every
``*.json`` file under the session's temporary directory that changed during
the test and is a callagent report (a JSON object whose ``tool`` names
callagent and that has ``version`` and ``calls``) must match the published
schema. Reports written by a ``callagent`` subprocess are caught the same way.
Hand-made hostile files (no ``tool``) are left alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"


@cache
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    result: jsonschema.protocols.Validator = cls(schema)
    return result


def changed_json_files(root: Path, since_ns: int) -> Iterator[Path]:
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif (
                    entry.name.endswith(".json")
                    and entry.is_file(follow_symlinks=False)
                    and entry.stat().st_mtime_ns >= since_ns
                ):
                    yield Path(entry.path)
            except OSError:
                continue


def is_report(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and str(document.get("tool", "")).startswith("callagent")
        and "version" in document
        and "calls" in document
    )


def schema_errors(path: Path) -> list[str]:
    """Why ``path`` does not match the schema; empty if it does or is no report."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []  # not JSON (or gone): not a report this check can judge
    if not is_report(document):
        return []
    return [
        f"{path}: {'/'.join(map(str, error.absolute_path)) or '(root)'}: "
        f"{error.message[:300]}"
        for error in validator().iter_errors(document)
    ]


def assert_matches_schema(report: Any) -> None:
    """Fail with every schema error of ``report`` (a whole report document)."""
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:300]}"
        for error in validator().iter_errors(report)
    ]
    assert not errors, "report does not match docs/report.schema.json:\n" + "\n".join(
        errors[:20]
    )


def as_report(calls: list[Any]) -> dict[str, Any]:
    """Call entries (``Call.result()``, a runner's results) in a minimal report."""
    return {
        "version": 1,
        "tool": "callagent test",
        "run_id": "test",
        "started_at": "2026-11-23T12:15:00.123Z",
        "finished_at": None,
        "complete": False,
        "interrupted": None,
        "seed": 0,
        "host": {},
        "calls": calls,
        "summary": {"calls": len(calls), "passed": 0, "failed": 0, "errors": 0},
    }
