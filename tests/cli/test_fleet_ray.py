"""``callagent fleet --ray``: a real local Ray cluster (a head and a second
node on this machine, 127.0.0.1 only), one shard per Ray worker, one merged
report with the calls of an unsharded run. Slow (~40 s): marked ``ray``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.callagent_cli import child_env
from tests.support.callagent_cli import run as callagent

pytest.importorskip("ray", reason="needs the ray extra: pip install callagent[ray]")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ray_cli(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [RAY, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """Two Ray nodes of one CPU each; ``ray stop`` always, even on failure."""
    # Short: Ray puts unix sockets under it (108-byte path limit).
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = child_env({"RAY_USAGE_STATS_ENABLED": "0"})
    address = f"127.0.0.1:{free_port()}"
    try:
        ray_cli(
            "start",
            "--head",
            f"--port={address.split(':')[1]}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            env=env,
        )
        ray_cli(
            "start",
            f"--address={address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            env=env,
        )
        yield address, env
    finally:
        subprocess.run(
            [RAY, "stop", "--force"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(temp, ignore_errors=True)


def calls_of(path: Path) -> list[tuple[str, int]]:
    report: dict[str, Any] = json.loads(path.read_text())
    return sorted((call["id"], call["seed"]) for call in report["calls"])


def test_fleet_on_ray_runs_one_shard_per_worker_and_merges(
    tmp_path: Path, ray_cluster: tuple[str, dict[str, str]]
) -> None:
    address, env = ray_cluster
    files = []
    for name, body in (("three", "calls: 3\n"), ("one", "")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nduration: 1s\n{body}")
        files.append(str(path))
    fleet = callagent(
        "fleet",
        "--ray",
        address,
        "--shards",
        "2",
        *files,
        "--seed",
        "9",
        "--report",
        str(tmp_path / "fleet.json"),
        "--junit",
        str(tmp_path / "fleet.xml"),
        timeout=240,
        env=env,
    )
    assert fleet.returncode == 0, fleet.stdout[-3000:] + fleet.stderr[-3000:]
    assert "fleet: 2 shards on" in fleet.stdout
    merged = json.loads((tmp_path / "fleet.json").read_text())
    assert merged["complete"] is True
    assert merged["shards"] == {
        "count": 2,
        "reported": [0, 1],
        "missing": [],
        "incomplete": [],
    }
    # The shards ran on two Ray workers: two processes.
    assert 'tests="4"' in (tmp_path / "fleet.xml").read_text()

    one = callagent(
        "run",
        *files,
        "--seed",
        "9",
        "--workers",
        "1",
        "--quiet",
        "--report",
        str(tmp_path / "one.json"),
        timeout=120,
        env=env,
    )
    assert one.returncode == 0, one.stderr
    assert calls_of(tmp_path / "fleet.json") == calls_of(tmp_path / "one.json")
