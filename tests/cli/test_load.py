"""``run --workers``, ``run --shard`` + ``merge``, ``--metrics-listen``: the
same calls (ids, seeds) however a run is split, one report, and every finished
call kept when the run is stopped. Real calls over loopback, real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.cli.load import WORKER_OWN_OPTIONS, option_argv, worker_argv
from agent.cli.parser import build_parser, subcommand
from tests.support.callagent_cli import run as callagent
from tests.support.callagent_cli import start


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def call_set(report: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((call["id"], call["seed"]) for call in report["calls"])


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_workers_and_shards_plus_merge_run_the_calls_of_one_run(
    tmp_path: Path,
) -> None:
    files = [
        str(write(tmp_path, "three", "duration: 1s\ncalls: 3\nramp: 10/s\n")),
        str(write(tmp_path, "one", "duration: 1s\n")),
    ]
    one = callagent(
        "run",
        *files,
        "--seed",
        "5",
        "--workers",
        "1",
        "--quiet",
        "--report",
        str(tmp_path / "one.json"),
    )
    assert one.returncode == 0, one.stderr
    workers = callagent(
        "run",
        *files,
        "--seed",
        "5",
        "--workers",
        "2",
        "--quiet",
        "--report",
        str(tmp_path / "w.json"),
        "--openmetrics",
        str(tmp_path / "w.prom"),
    )
    assert workers.returncode == 0, workers.stderr
    shards = [
        start(
            "run",
            *files,
            "--seed",
            "5",
            "--shard",
            f"{i}/2",
            "--workers",
            "1",
            "--quiet",
            "--report",
            str(tmp_path / f"s{i}.json"),
            stdout=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    for proc in shards:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    whole = load(tmp_path / "one.json")
    assert len(whole["calls"]) == 4 and "shards" not in whole
    samples = load(tmp_path / "w.json")["resources"]
    assert [s.get("worker") for s in samples].count(0) >= 2  # start and end

    merged_run = load(tmp_path / "w.json")
    assert call_set(merged_run) == call_set(whole)
    assert merged_run["workers"] == 2 and merged_run["complete"] is True
    assert merged_run["shards"]["missing"] == []
    assert (
        'callagent_run_calls{verdict="pass"} 4.0' in (tmp_path / "w.prom").read_text()
    )

    parts = [load(tmp_path / f"s{i}.json") for i in range(2)]
    assert [p["shard"] for p in parts] == [
        {"index": 0, "count": 2},
        {"index": 1, "count": 2},
    ]
    merge = callagent(
        "merge",
        str(tmp_path / "s0.json"),
        str(tmp_path / "s1.json"),
        "--report",
        str(tmp_path / "m.json"),
        "--junit",
        str(tmp_path / "m.xml"),
    )
    assert merge.returncode == 0, merge.stderr
    merged = load(tmp_path / "m.json")
    assert call_set(merged) == call_set(whole)
    assert merged["complete"] is True and merged["summary"]["passed"] == 4
    assert 'tests="4"' in (tmp_path / "m.xml").read_text()

    # A shard that never reported: named, the merge is incomplete, exit 1.
    half = callagent(
        "merge", str(tmp_path / "s1.json"), "--report", str(tmp_path / "half.json")
    )
    assert half.returncode == 1
    assert "missing shards: 0/2" in half.stdout
    partial = load(tmp_path / "half.json")
    assert partial["complete"] is False and partial["shards"]["missing"] == [0]
    assert call_set(partial) == call_set(parts[1])


def test_ramp_paces_the_call_starts(tmp_path: Path) -> None:
    file = write(tmp_path, "paced", "duration: 1s\ncalls: 3\nramp: 2/s\n")
    proc = callagent(
        "run",
        str(file),
        "--workers",
        "2",
        "--quiet",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert proc.returncode == 0, proc.stderr
    starts = sorted(
        (call["id"], time_s(call["started_at"]))
        for call in load(tmp_path / "r.json")["calls"]
    )
    first, second, third = (t for _, t in starts)
    # 2 calls/s: 0.5 s apart, by call index, across two worker processes.
    assert 0.4 <= second - first <= 1.0 and 0.9 <= third - first <= 1.5


def time_s(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_sigterm_stops_the_workers_and_keeps_every_finished_call(
    tmp_path: Path,
) -> None:
    short = write(tmp_path, "short", "duration: 1s\ncalls: 2\n")
    long = write(tmp_path, "long", "duration: 2m\ncalls: 2\n")
    report = tmp_path / "r.json"
    proc = start(
        "run",
        str(short),
        str(long),
        "--workers",
        "2",
        "--quiet",
        "--report",
        str(report),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if report.exists() and len(load(report)["calls"]) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the short calls never reached the report")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    data = load(report)
    assert data["complete"] is False and data["interrupted"] == "SIGTERM"
    calls = {call["id"]: call for call in data["calls"]}
    # The finished calls, and the long ones hung up by their workers.
    assert set(calls) == {"short#1", "short#2", "long#1", "long#2"}
    assert calls["long#1"]["error"] == "interrupted"
    assert "Traceback" not in err


def test_metrics_listen_serves_every_workers_calls_while_the_run_goes(
    tmp_path: Path,
) -> None:
    short = write(tmp_path, "short", "duration: 1s\ncalls: 2\n")
    long = write(tmp_path, "long", "duration: 20s\n")
    proc = start(
        "run",
        str(short),
        str(long),
        "--workers",
        "2",
        "--quiet",
        "--metrics-listen",
        "127.0.0.1:0",
        env={"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        url = match.group(0)
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            if 'callagent_run_calls{verdict="pass"} 2.0' in text:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the short calls never showed:\n{text[-2000:]}")
        assert 'callagent_call_setup_seconds{call="short#2",scenario="short"}' in text
        assert "callagent_run_complete 0.0" in text
        assert proc.poll() is None  # live: the long call still runs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "0/2"], "--shard needs --seed"),
        (["--shard", "2/2", "--seed", "1"], "I must be from 0 to N-1"),
        (["--shard", "half", "--seed", "1"], "expected I/N like 0/4"),
        (["--workers", "0"], "expected a whole number from 1 to 1024"),
        (["--metrics-listen", "8.8.8.8:9464"], "is not an address of this host"),
    ],
)
def test_bad_load_options_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    file = write(tmp_path, "x", "duration: 1s\n")
    proc = callagent("run", str(file), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_merge_of_reports_of_different_runs_is_one_line_exit_2(tmp_path: Path) -> None:
    base = {"version": 1, "calls": [], "host": {}, "summary": None}
    (tmp_path / "a.json").write_text(
        json.dumps({**base, "seed": 1, "shard": {"index": 0, "count": 2}})
    )
    (tmp_path / "b.json").write_text(
        json.dumps({**base, "seed": 2, "shard": {"index": 1, "count": 2}})
    )
    proc = callagent("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert proc.returncode == 2
    assert "seed 2 differs from 1" in proc.stderr and "Traceback" not in proc.stderr


def test_a_worker_that_dies_is_a_missing_shard_not_a_lost_run(
    tmp_path: Path,
) -> None:
    file = write(tmp_path, "x", "duration: 8s\ncalls: 2\n")
    report = tmp_path / "r.json"
    proc = start(
        "run",
        str(file),
        "--workers",
        "2",
        "--quiet",
        "--report",
        str(report),
    )
    try:
        children: list[int] = []
        deadline = time.monotonic() + 30
        while len(children) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            found = subprocess.run(
                ["pgrep", "-P", str(proc.pid)],
                capture_output=True,
                text=True,
                check=False,
            )
            children = [int(pid) for pid in found.stdout.split()]
        assert len(children) == 2, "the workers never started"
        (worker0,) = [
            pid
            for pid in children
            if b"--shard\x000/2" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(worker0, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert "worker 0 exited (-9) before reporting all its calls" in err
    data = load(report)
    assert data["complete"] is False and data["shards"]["missing"] == [0]
    assert [call["id"] for call in data["calls"]] == ["x#2"]


def test_workers_place_the_parents_calls_far_end_and_network_included() -> None:
    # A worker that did not get --target or --lab would call the built-in far
    # end on loopback: other calls than the one-worker run places.
    run = subcommand(build_parser(), "run")
    args = build_parser().parse_args(
        ["run", "s.yaml", "--target", "browser:chromium", "--lab", "kernel"]
    )
    argv = worker_argv(run, args, 0, 2, seed=7, run_id="r1")
    assert argv[argv.index("--target") + 1] == "browser:chromium"
    assert argv[argv.index("--lab") + 1] == "kernel"
    plain_args = build_parser().parse_args(["run", "s.yaml"])
    plain = worker_argv(run, plain_args, 1, 2, 7, "r1")
    assert "--target" not in plain and "--lab" not in plain


#: A value for each ``run`` option handed on to workers that takes one (and
#: has no ``choices`` to pick from). A new option: add it here, so the test
#: below can prove the workers get it.
HANDED_ON_SAMPLES: dict[str, list[str]] = {
    # A target printed without its admin secret: the worker still gets it.
    "--target": ["janus+http://127.0.0.1:9/janus?admin=http://127.0.0.1:8/a&secret=s3"],
    "--token": ["s3cret"],
}


def _sample(action: Any) -> list[str]:
    flag = max(action.option_strings, key=len)
    if flag in HANDED_ON_SAMPLES:
        return [flag, *HANDED_ON_SAMPLES[flag]]
    if action.nargs == 0:
        return [flag]
    if action.choices:
        return [flag, str(next(iter(action.choices)))]
    pytest.fail(
        f"run option {flag} is handed on to workers: give it a sample value in "
        "HANDED_ON_SAMPLES, or list it in agent.cli.load.WORKER_OWN_OPTIONS "
        "if the worker sets it itself"
    )


def test_every_run_option_reaches_the_workers_unless_the_worker_sets_it() -> None:
    # A run option added to the parser reaches the workers as given: this fails
    # for one that worker_argv cannot hand on, or that does not parse back to
    # the parent's value in the worker.
    run = subcommand(build_parser(), "run")
    plain = build_parser().parse_args(["run", "s.yaml"])
    handed_on = [a for a in run._actions if a.dest not in WORKER_OWN_OPTIONS]
    assert {"target", "token", "lab"} <= {a.dest for a in handed_on}
    for action in handed_on:
        given = ["run", "s.yaml", *_sample(action)]
        args = build_parser().parse_args(given)
        parent = getattr(args, action.dest)
        assert parent != getattr(plain, action.dest), f"{given}: sample is a default"
        worker = build_parser().parse_args(worker_argv(run, args, 1, 2, 7, "r1"))
        assert getattr(worker, action.dest) == parent, given


def test_what_a_worker_sets_itself_is_a_run_option_and_not_the_parents() -> None:
    run = subcommand(build_parser(), "run")
    assert set(WORKER_OWN_OPTIONS) <= {a.dest for a in run._actions}
    args = build_parser().parse_args(
        "run s.yaml --report r.json --junit j.xml --openmetrics m.prom --seed 3 "
        "--metrics-listen 127.0.0.1:0 --workers 4 --scenarios-at-once 8".split()
    )
    argv = worker_argv(run, args, 1, 4, seed=3, run_id="r1")
    for option in ("--report", "--junit", "--openmetrics", "--metrics-listen"):
        assert option not in argv  # the parent's alone
    worker = build_parser().parse_args(argv)
    assert (worker.workers, worker.scenarios_at_once) == (1, 2)
    assert (str(worker.shard), worker.seed, worker.run_id) == ("1/4", 3, "r1")
    assert worker.worker_stream and worker.quiet


def test_a_new_kind_of_option_is_handed_on_or_refused_loudly() -> None:
    run = subcommand(build_parser(), "run")
    run.add_argument("--future-knob", type=int)
    run.add_argument("--future-flag", action="store_true")
    run.add_argument("--future-list", action="append")
    args = run.parse_args(
        "s.yaml --future-knob 5 --future-flag --future-list a --future-list b".split()
    )
    args.debug = False
    argv = worker_argv(run, args, 0, 2, seed=7, run_id="r1")
    worker = run.parse_args(argv[1:])  # after "run"
    assert (worker.future_knob, worker.future_flag) == (5, True)
    assert worker.future_list == ["a", "b"]
    many = run.add_argument("--future-many", nargs="+")
    with pytest.raises(TypeError, match="--future-many"):
        option_argv(many, ["x", "y"])
