"""ReportWriter and write_json_atomic against real files in tmp_path."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.errors import AgentError
from agent.report.schema import ReportError
from agent.report.writer import (
    MAX_WRITE_WAIT_S,
    WRITE_WAIT_FACTOR,
    ReportWriter,
    iso_timestamp,
    write_json_atomic,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def write_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pacing: each add_call writes (what these tests are about is the
    write itself; the pacing has its own test)."""
    monkeypatch.setattr("agent.report.writer.WRITE_WAIT_FACTOR", 0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 15, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def read(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(report, dict)
    return report


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_begin_writes_an_incomplete_report_at_once(
    tmp_path: Path, meta: dict[str, Any]
) -> None:
    path = tmp_path / "out" / "nested" / "report.json"  # parents do not exist yet
    writer = ReportWriter(path)
    writer.begin(meta)

    report = read(path)
    assert report["version"] == 1
    assert report["run_id"] == "20261123T121500Z-ab12"
    assert report["started_at"] == "2026-11-23T12:15:00.123Z"
    assert report["seed"] == 1234
    assert report["host"]["aiortc"] == "1.16.0"
    assert report["complete"] is False
    assert report["finished_at"] is None
    assert report["interrupted"] is None
    assert report["calls"] == []
    assert report["summary"] == {"calls": 0, "passed": 0, "failed": 0, "errors": 0}


@pytest.mark.usefixtures("write_every_call")
def test_each_add_call_leaves_a_complete_json_file(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin(meta)
    failing_check = {
        "name": "ice_restarts",
        "expected": "0",
        "actual": "1",
        "passed": False,
    }
    calls = [
        call_factory("baseline#1"),
        call_factory("nat_rebind#1", checks=[failing_check]),
        call_factory("nat_rebind#2", error="ICE failed"),
    ]
    for count, call in enumerate(calls, start=1):
        writer.add_call(call)
        report = read(path)
        assert [c["id"] for c in report["calls"]] == [c["id"] for c in calls[:count]]
        assert report["complete"] is False
        assert report["summary"]["calls"] == count

    assert read(path)["summary"] == {"calls": 3, "passed": 1, "failed": 1, "errors": 1}
    assert leftovers(tmp_path) == []


def test_finish_marks_complete_and_stamps_the_time(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    clock = FakeClock()
    path = tmp_path / "report.json"
    writer = ReportWriter(path, clock=clock)
    del meta["started_at"]
    writer.begin(meta)
    writer.add_call(call_factory())
    clock.now += timedelta(seconds=61, milliseconds=5)
    writer.finish()

    report = read(path)
    assert report["complete"] is True
    assert report["interrupted"] is None
    assert report["started_at"] == "2026-11-23T12:15:00.123Z"
    assert report["finished_at"] == "2026-11-23T12:16:01.128Z"
    assert writer.finished


def test_finish_with_a_reason_is_not_complete(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin(meta)
    writer.add_call(call_factory())
    writer.finish("SIGINT")

    report = read(path)
    assert report["complete"] is False
    assert report["interrupted"] == "SIGINT"
    assert report["finished_at"] is not None
    assert len(report["calls"]) == 1


@pytest.mark.usefixtures("write_every_call")
def test_failed_replace_keeps_the_previous_report(
    tmp_path: Path,
    meta: dict[str, Any],
    call_factory: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin(meta)
    writer.add_call(call_factory("baseline#1"))
    before = path.read_bytes()

    sources: list[Path] = []

    def broken_replace(src: Any, dst: Any) -> None:
        sources.append(Path(src))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ReportError) as caught:
        writer.add_call(call_factory("baseline#2"))

    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    # The temp file was in the report's own directory: rename is atomic only
    # within one file system.
    assert sources and sources[0].parent == tmp_path
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"cannot write {path}: No space left on device"

    # The call was kept: the next write that succeeds includes it.
    monkeypatch.undo()
    writer.finish()
    assert [c["id"] for c in read(path)["calls"]] == ["baseline#1", "baseline#2"]


@pytest.mark.usefixtures("write_every_call")
def test_ctrl_c_during_a_write_keeps_the_previous_report(
    tmp_path: Path,
    meta: dict[str, Any],
    call_factory: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin(meta)
    writer.add_call(call_factory("baseline#1"))
    before = path.read_bytes()

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        writer.add_call(call_factory("baseline#2"))

    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


_CHILD = textwrap.dedent(
    """
    import itertools, sys
    from pathlib import Path
    from agent.report.writer import ReportWriter
    from tests.report.conftest import make_call

    writer = ReportWriter(Path(sys.argv[1]))
    writer.begin({"run_id": "crash", "seed": 7})
    events = [
        {"type": "note", "t_ms": float(i), "side": "caller",
         "initiator": None, "cause": None, "detail": {"text": f"{i} " + "x" * 64}}
        for i in range(400)
    ]
    for i in itertools.count():
        writer.add_call(make_call(f"soak#{i}", events=events))
    """
)


@pytest.mark.parametrize("kill_after_calls", [1, 4, 9])
def test_sigkill_at_any_moment_leaves_a_parseable_report(
    tmp_path: Path, kill_after_calls: int
) -> None:
    """A real writer process, killed with SIGKILL while it rewrites the report.

    Every read while it runs, and the file after the kill, must be whole JSON.
    """
    path = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 30
        calls = 0
        while calls < kill_after_calls:
            assert child.poll() is None, "writer process died on its own"
            assert time.monotonic() < deadline, "writer made no progress"
            if path.exists():
                calls = len(read(path)["calls"])  # raises if torn
            time.sleep(0.002)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)

    report = read(path)
    assert report["complete"] is False
    assert len(report["calls"]) >= kill_after_calls
    assert report["summary"]["calls"] == len(report["calls"])


def test_unwritable_path_is_one_clear_agent_error(
    tmp_path: Path, meta: dict[str, Any]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    path = blocker / "report.json"

    with pytest.raises(AgentError) as caught:
        ReportWriter(path).begin(meta)

    assert isinstance(caught.value, ReportError)
    message = str(caught.value)
    assert message.startswith(f"cannot write {path}")
    assert "\n" not in message


def test_report_directory_path_is_a_report_error(
    tmp_path: Path, meta: dict[str, Any]
) -> None:
    with pytest.raises(ReportError, match=re.escape(f"cannot write {tmp_path}")):
        ReportWriter(tmp_path).begin(meta)
    assert leftovers(tmp_path.parent) == []


def test_added_calls_are_copied(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin(meta)
    call = call_factory()
    writer.add_call(call)
    call["metrics"]["ice_restarts"]["total"] = 99
    writer.finish()
    assert read(path)["calls"][0]["metrics"]["ice_restarts"]["total"] == 0
    assert writer.report["calls"][0]["metrics"]["ice_restarts"]["total"] == 0


def test_state_machine_rejects_illegal_calls(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    writer = ReportWriter(tmp_path / "report.json")
    with pytest.raises(RuntimeError):
        writer.add_call(call_factory())
    with pytest.raises(ValueError, match="complete"):
        writer.begin({**meta, "complete": True})
    writer.begin(meta)
    with pytest.raises(RuntimeError):
        writer.begin(meta)
    writer.finish()
    with pytest.raises(RuntimeError):
        writer.add_call(call_factory())
    with pytest.raises(RuntimeError):
        writer.finish()


def test_non_finite_numbers_are_written_as_null(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "x.json"
    with caplog.at_level(logging.WARNING, logger="agent.report.writer"):
        write_json_atomic(path, {"jitter_ms": math.nan, "nested": [math.inf, 1.5]})
    assert read(path) == {"jitter_ms": None, "nested": [None, 1.5]}
    assert "non-finite" in caplog.text


def test_not_json_ready_value_raises_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert read(path) == {"ok": 1}
    assert leftovers(tmp_path) == []


def test_iso_timestamp_is_utc_with_milliseconds() -> None:
    moment = datetime(2026, 11, 23, 13, 15, 0, 999999, tzinfo=UTC)
    assert iso_timestamp(moment) == "2026-11-23T13:15:00.999Z"
    berlin = moment.astimezone(timezone(timedelta(hours=1)))
    assert iso_timestamp(berlin) == "2026-11-23T13:15:00.999Z"


def test_write_text_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "ci" / "junit.xml"
    write_text_atomic(path, "<old/>\n")
    write_text_atomic(path, "<new>é</new>\n")
    assert path.read_text(encoding="utf-8") == "<new>é</new>\n"
    assert leftovers(path.parent) == []


def test_writes_are_paced_and_the_waiting_calls_are_flushed(
    tmp_path: Path,
    meta: dict[str, Any],
    call_factory: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After a write of w seconds the next waits WRITE_WAIT_FACTOR * w: calls
    # that end meanwhile stay in memory (dirty) until flush().
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin(meta)
    while writer.flush_in() > 0:  # bounded: the wait after begin() is short
        time.sleep(0.005)
    writer.add_call(call_factory("a#1"))
    assert not writer.dirty and [c["id"] for c in read(path)["calls"]] == ["a#1"]
    last = writer._last_write_s
    assert writer.flush_in() <= min(MAX_WRITE_WAIT_S, WRITE_WAIT_FACTOR * last)
    # A wait no scheduling hiccup of this host outlasts (capped at 5 s).
    monkeypatch.setattr("agent.report.writer.WRITE_WAIT_FACTOR", 1e6)
    writer.add_call(call_factory("b#1"))  # within the wait
    assert writer.dirty
    assert [c["id"] for c in read(path)["calls"]] == ["a#1"]
    writer.flush()
    assert not writer.dirty
    assert [c["id"] for c in read(path)["calls"]] == ["a#1", "b#1"]
    writer.finish()
    assert read(path)["complete"] is True


def test_a_call_added_encoded_is_kept_as_it_came(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    # A worker's call reaches the parent as JSON: the writer splices that
    # text and keeps the decoded call, and the report holds the call once.
    call = call_factory("w#1", error='a "quoted" é')
    text = json.dumps(call)  # as a worker's line carries it
    writer = ReportWriter(tmp_path / "report.json")
    writer.begin(meta)
    writer.add_call(json.loads(text), encoded=text)
    writer.finish()
    assert read(tmp_path / "report.json")["calls"] == [call]
    assert writer.calls == [call]


def test_a_slow_write_waits_at_most_the_cap(
    tmp_path: Path, meta: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ReportWriter(tmp_path / "report.json")
    writer.begin(meta)
    monkeypatch.setattr(writer, "_last_write_s", 10.0)  # a write of 10 s
    assert MAX_WRITE_WAIT_S - 0.5 < writer.flush_in() <= MAX_WRITE_WAIT_S


def test_the_spliced_file_is_the_report_as_json(
    tmp_path: Path, meta: dict[str, Any], call_factory: Callable[..., dict[str, Any]]
) -> None:
    path = tmp_path / "report.json"
    writer = ReportWriter(path)
    writer.begin({**meta, "host": {"calls": [], "note": '"calls": [],'}})
    writer.add_call(call_factory("x#1", error='a "calls": [], in a string'))
    writer.finish()
    assert read(path) == json.loads(json.dumps(writer.report))
