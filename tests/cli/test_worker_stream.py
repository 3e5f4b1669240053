"""A worker's lines to its parent never hold up the worker's event loop.

A call's entry is bigger than a pipe's buffer: written from the loop, it
waited until the parent read, and every call of the worker stalled with it.
Here the "parent" is a pipe nobody reads until the entry has been handed
over (or 10 s have passed, which is the failure).
"""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest

from agent.cli.workers import WorkerStream, call_text
from agent.scenario.runner import RunProgress

#: far over a pipe's buffer (64 KiB on Linux)
BIG = 1_000_000


async def test_a_big_entry_is_handed_over_without_waiting_for_the_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker's stdin, as the parent gives it: a pipe it never writes.
    stdin_read, stdin_write = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(stdin_read, encoding="utf-8"))
    read_fd, write_fd = os.pipe()
    out = os.fdopen(write_fd, "w", encoding="utf-8")
    stream = WorkerStream(out)
    handed_over = threading.Event()
    blocked: list[bool] = []
    chunks: list[bytes] = []

    def parent() -> None:
        # Reads only once the entry was handed over; after 10 s it reads
        # anyway (a send that waits for the reader would wait forever).
        blocked.append(not handed_over.wait(10))
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)

    reader = threading.Thread(target=parent)
    reader.start()
    try:
        async with stream.reporting(RunProgress()):
            stream.call({"id": "big#1", "blob": "a" * BIG})
            handed_over.set()
            stream.call({"id": "small#2"})
        stream.end(None)
    finally:
        handed_over.set()
        out.close()
        reader.join(15)
        os.close(read_fd)
        os.close(stdin_write)
        sys.stdin.close()
    assert blocked == [False]
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    calls = [line["call"]["id"] for line in lines if "call" in line]
    assert calls == ["big#1", "small#2"]  # whole, and in order
    assert len(next(x for x in lines if "call" in x)["call"]["blob"]) == BIG
    assert "end" in lines[-1]


def test_outside_reporting_lines_are_written_at_once() -> None:
    read_fd, write_fd = os.pipe()
    with open(write_fd, "w", encoding="utf-8") as out:
        WorkerStream(out).end("SIGINT")
    with open(read_fd, encoding="utf-8") as pipe:
        assert json.loads(pipe.read()) == {"end": {"interrupted": "SIGINT"}}


def test_the_parent_takes_a_calls_json_from_the_line_as_it_came() -> None:
    read_fd, write_fd = os.pipe()
    call = {"id": "x#1", "name": 'é "quoted" }', "n": [1, 2.5, None]}
    with os.fdopen(write_fd, "w", encoding="utf-8") as out:
        WorkerStream(out).call(call)
    with os.fdopen(read_fd, "rb") as pipe:
        line = pipe.read()
    text = call_text(line)
    assert text is not None and json.loads(text) == call
    assert call_text(b'{"progress": {"total": 1}}\n') is None
