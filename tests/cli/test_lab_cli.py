"""``callagent lab up/clean`` and ``--lab kernel``, run as a user would.

The refusals need no root (they are said before any lab is built); ``lab
clean`` and ``lab up`` build or remove real namespaces and are skipped where
the kernel lab cannot be used. ``ip netns list`` is the same after each test
as before it (the namespaces a test makes on purpose are removed by it).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.callagent_cli import ROOT, start
from tests.support.callagent_cli import run as callagent
from tests.support.lab import lab_left_as_found, netns_list


@pytest.fixture
def root_lab() -> Iterator[None]:
    yield from lab_left_as_found()


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nduration: 2s\n{body}")
    return path


def test_check_refuses_a_nat_nftables_cannot_express_in_one_line(
    tmp_path: Path,
) -> None:
    nat = "network: {lab: kernel, nat: {side: caller, mapping: address_dependent}}\n"
    result = callagent("check", str(write(tmp_path, "adm", nat)))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "address-dependent mapping" in line and "Traceback" not in line


def test_check_with_lab_kernel_refuses_a_user_space_file_it_cannot_run(
    tmp_path: Path,
) -> None:
    nat = (
        "network: {nat: {side: caller, type: symmetric,"
        " filtering: endpoint_independent}}\n"
    )
    path = write(tmp_path, "apdm-eif", nat)
    assert callagent("check", str(path)).returncode == 0
    result = callagent("check", "--lab", "kernel", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "endpoint_independent filtering" in line


def test_lab_settings_need_the_kernel_lab(tmp_path: Path) -> None:
    result = callagent(
        "check", str(write(tmp_path, "shared", "network: {shared: true}\n"))
    )
    assert result.returncode == 2
    assert "needs network.lab: kernel" in result.stderr


def test_run_lab_kernel_without_root_says_so_in_one_line_and_exits_2() -> None:
    if os.geteuid() != 0:
        prefix: tuple[str, ...] = ()
    else:  # drop to nobody, with no capabilities, to be the user without root
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    # A file nobody may read (tmp_path is private to root): the built-in one.
    path = ROOT / "scenarios" / "baseline.yaml"
    result = callagent("run", "--lab", "kernel", "--quiet", str(path), prefix=prefix)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "CAP_NET_ADMIN" in line and "root" in line


@pytest.mark.netns
@pytest.mark.usefixtures("root_lab")
def test_lab_clean_removes_lab_namespaces_and_nothing_else() -> None:
    ours, other = "ca-tclean1-3-nat", "tclean-not-a-lab"
    for name in (ours, other):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        result = callagent("lab", "clean")
        assert result.returncode == 0, result.stderr
        assert f"removed {ours}" in result.stdout
        assert ours not in netns_list() and other in netns_list()
        again = callagent("lab", "clean")
        assert "no lab namespace left behind" in again.stdout
    finally:
        for name in (ours, other):
            subprocess.run(
                ["ip", "netns", "del", name], check=False, capture_output=True
            )


@pytest.mark.netns
@pytest.mark.usefixtures("root_lab")
def test_lab_up_builds_the_lab_until_interrupted() -> None:
    scenario = ROOT / "scenarios" / "nat_rebind.yaml"
    proc = start("lab", "up", str(scenario), env={"COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once the lab is up
        assert first.startswith("lab ") and "nat-rebind" in first, first
        run_id = first.split()[1]
        up = [n for n in netns_list() if n.startswith(f"ca-{run_id}-")]
        assert sorted(up) == sorted(
            f"ca-{run_id}-0-{role}" for role in ("in", "nat", "out")
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "masquerade" in out and f"lab {run_id} removed" in out
    assert not [n for n in netns_list() if n.startswith(f"ca-{run_id}-")]
