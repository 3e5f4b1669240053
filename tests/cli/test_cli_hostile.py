"""Hostile input to the command line (issue 11, D1-D13): one line, the right
exit code, never a traceback; signals recorded as what they were.

Every test runs the real command in a subprocess, through ``python -m
agent.cli``: the same entry as the installed ``callagent`` (agent.cli:launch).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.callagent_cli import CALLAGENT, ROOT, child_env, start
from tests.support.callagent_cli import run as callagent

SCENARIO_TESTS = ROOT / "tests" / "scenario"

#: D1-D9 files of the broken-file corpus, run through the real CLI.
CORPUS_SAMPLE = [
    "yaml_tag_int.yaml",
    "yaml_tag_timestamp.yaml",
    "number_too_long.yaml",
    "control_character.yaml",
    "calls_too_many.yaml",
    "certificate_lifetime_overflow.yaml",
    "duration_huge.yaml",
    "step_delay_inf.yaml",
    "loss_rate_text.yaml",
    "address_broadcast.yaml",
    "null_key.yaml",
]


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    return first.removeprefix("# expect: ")


def assert_one_line(proc: subprocess.CompletedProcess[str], line: str) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr == f"callagent: {line}\n"


def scenario(folder: Path, name: str, body: str = "duration: 1s\n") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


# --- scenario files (D1-D9) ----------------------------------------------------


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("name", CORPUS_SAMPLE)
def test_corpus_file_is_one_line_exit_2(name: str, command: str) -> None:
    relative = Path("bad", name)
    proc = callagent(command, str(relative), cwd=SCENARIO_TESTS)
    assert proc.returncode == 2
    assert_one_line(proc, expected_message(SCENARIO_TESTS / relative))


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: os.mkfifo(path), "a named pipe (FIFO)"),
        (lambda path: path.symlink_to("/dev/urandom"), "a character device"),
        (lambda path: path.symlink_to("/dev/zero"), "a character device"),
    ],
    ids=["fifo", "urandom", "zero"],
)
def test_special_files_are_refused_at_once(
    tmp_path: Path, make: Callable[[Path], None], kind: str, command: str
) -> None:
    # D4/D5: a FIFO blocked for ever; /dev/zero was read until memory ran out.
    path = tmp_path / "special.yaml"
    make(path)
    proc = callagent(command, str(path), timeout=30)
    assert proc.returncode == 2
    assert_one_line(
        proc,
        f"{path}: is {kind}, not a regular file; scenarios are read from regular "
        "files only",
    )


def test_a_suite_with_bad_files_lists_each_and_places_no_call(
    tmp_path: Path,
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    scenario(suite, "a_good")
    bad_tag = scenario(suite, "b_bad", "duration: !!float soon\n")
    scenario(suite, "c_good")
    bad_key = scenario(suite, "d_bad", "duration: 1s\n~: x\n")
    report = tmp_path / "r.json"
    for command in (["check"], ["run", "--report", str(report)]):
        proc = callagent(*command, str(suite))
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.splitlines() == [
            f"callagent: {bad_tag}:2: duration: cannot read 'soon' as a number "
            "(!!float)",
            f"callagent: {bad_key}:3: null: unknown field; expected one of: calls, "
            "description, duration, expect, expect_kernel, media, name, network, "
            "peers, ramp, seed, steps, target, thresholds",
        ]
        assert "a_good" not in proc.stdout
    assert not report.exists()  # nothing ran, so nothing was reported


# --- output paths (D10, D11) ---------------------------------------------------


def test_an_empty_report_path_is_one_line_exit_2(tmp_path: Path) -> None:
    file = scenario(tmp_path, "ok")
    proc = callagent("run", str(file), "--report", "")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == (
        "callagent run: argument --report: an empty path is not a file name "
        "(see --help)\n"
    )


@pytest.mark.parametrize("option", ["--report", "--junit", "--openmetrics"])
def test_unwritable_output_paths_exit_2_before_any_call(
    tmp_path: Path, option: str
) -> None:
    file = scenario(tmp_path, "ok", "duration: 30s\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    cases = {
        a_file / "r.json": f"{a_file} is not a directory",
        a_dir: f"is a directory; give a file name such as {a_dir / 'report.json'}",
        Path("/dev/null"): "exists and is not a regular file",
    }
    for path, reason in cases.items():
        started = time.monotonic()
        proc = callagent("run", str(file), option, str(path))
        assert proc.returncode == 2, proc.stderr
        assert_one_line(proc, f"{option} {path}: {reason}")
        # Refused at start, not after the 30 s call.
        assert time.monotonic() - started < 25


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], check=False, capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and mount namespaces")
def test_a_read_only_mount_is_refused_at_start(tmp_path: Path) -> None:
    # A private mount namespace: the read-only tmpfs vanishes with the process.
    file = scenario(tmp_path, "ok", "duration: 30s\n")
    mount = tmp_path / "ro"
    mount.mkdir()
    script = f"mount -t tmpfs -o ro tmpfs {mount} && exec " + " ".join(
        [*CALLAGENT, "run", str(file), "--report", f"{mount}/r.json"]
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_line(
        proc, f"--report {mount}/r.json: cannot write in {mount}: read-only file system"
    )


def test_serve_report_dir_is_checked_at_start(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    proc = callagent("serve", "--listen", "127.0.0.1:0", "--report-dir", str(a_file))
    assert proc.returncode == 2
    assert_one_line(proc, f"--report-dir {a_file}: is not a directory")
    proc = callagent(
        "serve", "--listen", "127.0.0.1:0", "--report-dir", str(a_file / "reports")
    )
    assert proc.returncode == 2
    assert_one_line(
        proc, f"--report-dir {a_file / 'reports'}: {a_file} is not a directory"
    )


# --- signals (D12, D13) --------------------------------------------------------


def _catches_sigterm(pid: int) -> bool:
    """True once the process has its own SIGTERM handler (Python's default
    leaves SIGTERM alone): callagent's signal handling is in place."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def _await(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_starting_up_is_exit_130_and_an_incomplete_report(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # D13: the imports take about a second; a Ctrl-C then was a
    # KeyboardInterrupt traceback and no report.
    file = scenario(tmp_path, "long", "duration: 60s\n")
    report = tmp_path / "r.json"
    proc = start("run", str(file), "--quiet", "--report", str(report))
    try:
        _await(lambda: _catches_sigterm(proc.pid), "the signal handlers")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["interrupted"] == sig.name
    assert all(call["error"] == "interrupted" for call in data["calls"])


def test_sigterm_mid_run_is_recorded_as_sigterm(tmp_path: Path) -> None:
    # D12: SIGTERM was recorded as "interrupted": "SIGINT".
    first = scenario(tmp_path, "a_first")
    second = scenario(tmp_path, "b_long", "duration: 60s\n")
    report = tmp_path / "r.json"
    proc = start("run", str(first), str(second), "--quiet", "--report", str(report))

    def first_call_reported() -> bool:
        return report.exists() and bool(json.loads(report.read_text())["calls"])

    try:
        _await(first_call_reported, "the first call's result")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["interrupted"] == "SIGTERM"
    ids = [c["id"] for c in data["calls"]]
    # The second call is listed (as interrupted) if it had started.
    assert ids in (["a_first#1"], ["a_first#1", "b_long#1"])
    assert all(c["error"] == "interrupted" for c in data["calls"][1:])
