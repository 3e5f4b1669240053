"""``callagent report`` on hostile JSON (issue 11, D14): one line, exit 2, no
traceback; and whatever ``load_report`` accepts, every view renders."""

from __future__ import annotations

import copy
import io
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent.report.junit import junit_xml
from agent.report.openmetrics import report_metrics_text
from agent.report.schema import ReportInputError, load_report
from agent.report.table import render_results, render_timeline
from tests.report.conftest import build_mixed_report

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = {
    "deep_nesting": "[" * 100_000,
    "calls_not_objects": '{"version":1,"calls":[1,"x",null]}',
    "huge_number": "9" * 5000,
    "huge_number_inside": '{"version":1,"calls":[],"seed":' + "9" * 5000 + "}",
    "version_huge": '{"version":' + "1" * 5000 + ',"calls":[]}',
    "version_true": '{"version":true,"calls":[]}',
    "metrics_a_string": '{"version":1,"calls":[{"metrics":"x"}]}',
    "events_not_objects": '{"version":1,"calls":[{"events":[1]}]}',
    "event_type_a_list": '{"version":1,"calls":[{"events":[{"type":[]}]}]}',
    "checks_a_number": '{"version":1,"calls":[{"expectations":{"checks":5}}]}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(HOSTILE[name], encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "report", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0]
    assert len(lines[0]) < 300  # the 5,000 digits are not echoed back


_VALUES: list[Any] = [1, "x", None, [], {}, [1], {"a": 1}, True, -1, 1e308, "", [None]]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def test_what_load_report_accepts_every_view_renders(tmp_path: Path) -> None:
    """Seeded and bounded: any node of a real-shaped report replaced by junk
    is either refused by ``load_report`` (one line) or rendered by every view."""
    rng = random.Random(11)
    base = build_mixed_report()
    paths = list(_paths(base))
    path = tmp_path / "fuzz.json"
    accepted = refused = 0
    try:
        accepted, refused = _fuzz(rng, base, paths, path)
    finally:
        # Broken on purpose: not for the autouse schema check of written reports.
        path.unlink(missing_ok=True)
    assert accepted > 100 and refused > 10  # both paths exercised


def _fuzz(
    rng: random.Random, base: Any, paths: list[tuple[Any, ...]], path: Path
) -> tuple[int, int]:
    accepted = refused = 0
    for _ in range(600):
        report = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            target = rng.choice(paths)
            try:
                _set(report, target, copy.deepcopy(rng.choice(_VALUES)))
            except (KeyError, IndexError, TypeError):
                pass  # an earlier change removed the parent
        path.write_text(json.dumps(report), encoding="utf-8")
        try:
            loaded = load_report(path)
        except ReportInputError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        accepted += 1
        console = Console(file=io.StringIO(), width=120)
        render_results(loaded, console)
        for call in loaded["calls"]:
            render_timeline(call, console)
        junit_xml(loaded)
        report_metrics_text(loaded)
    return accepted, refused
