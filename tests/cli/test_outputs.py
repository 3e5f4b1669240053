"""Output paths checked before any call (agent.cli.outputs), without a subprocess."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.cli.outputs import check_output_dir, check_output_file, output_path
from agent.errors import UsageError


def test_a_new_file_in_a_new_directory_is_fine_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    check_output_file(tmp_path / "new" / "deeper" / "r.json", "--report")
    # The probe went into the nearest existing directory and was removed;
    # the missing directories are the writer's to create.
    assert list(tmp_path.iterdir()) == []


def test_an_existing_report_may_be_replaced(tmp_path: Path) -> None:
    old = tmp_path / "r.json"
    old.write_text("{}")
    check_output_file(old, "--report")
    assert old.read_text() == "{}"


@pytest.mark.parametrize("text", ["", " "])
def test_an_empty_path_is_refused_by_the_parser(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="empty path"):
        output_path(text)


def test_no_permission_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faked: permission bits do not stop root, and the OS is not under test.
    def denied(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("agent.cli.outputs.tempfile.mkstemp", denied)
    with pytest.raises(UsageError) as caught:
        check_output_file(tmp_path / "r.json", "--junit")
    assert str(caught.value) == (
        f"--junit {tmp_path / 'r.json'}: cannot write in {tmp_path}: permission denied"
    )
    assert caught.value.exit_code == 2


def test_a_symlink_to_a_directory_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UsageError, match="is a directory"):
        check_output_file(tmp_path / "link", "--report")


def test_report_dir(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "reports", "--report-dir")
    check_output_dir(tmp_path, "--report-dir")
    a_file = tmp_path / "f"
    a_file.write_text("")
    with pytest.raises(UsageError) as caught:
        check_output_dir(a_file, "--report-dir")
    assert str(caught.value) == f"--report-dir {a_file}: is not a directory"
