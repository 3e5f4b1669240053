"""Janus 1.1.2 (Debian ``janus``) as a far end, through the product:
``callagent run --target janus`` launches a real Janus in each call's kernel
lab (``out`` namespace), the agent calls its echotest over the HTTP API from
behind the lab's NAT. Each call is checked from both sides: the agent's report
and Janus's own ``handle_info`` view (``sides.callee.view``).

Short scenarios (tests/targets/janus/) run at once, so the whole file takes
well under a minute. Every test leaves ``ip netns list`` as it found it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import SignalingError
from agent.net.lab import Lab, Role
from agent.scenario.loader import load_scenarios
from agent.scenario.runner import ScenarioRunner
from agent.signaling.janus import JanusClient
from agent.targets.janus.launcher import JanusProcess, janus_unavailable
from agent.targets.spec import parse_target
from tests.support.callagent_cli import run
from tests.support.lab import netns_list, require_lab
from tests.support.report_schema import assert_matches_schema

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "janus"
MATRIX = ROOT / "scenarios" / "matrix"


@pytest.fixture
def janus_lab() -> Iterator[list[str]]:
    """Skip where the lab or Janus is missing. The test lists the lab run ids
    it used; a namespace of theirs left behind (a Janus still running would
    keep one alive) fails it. Other runs' labs on a shared host are theirs."""
    require_lab(janus_unavailable())
    run_ids: list[str] = []
    yield run_ids
    assert run_ids, "the test named no lab it used"
    left = [
        name
        for name in netns_list()
        for run_id in run_ids
        if name.startswith(f"ca-{run_id}-")
    ]
    assert not left, f"a Janus test left namespaces behind: {left}"


def lab_runs(report: dict[str, Any]) -> list[str]:
    return [call["lab"]["run_id"] for call in report["calls"] if call.get("lab")]


def callagent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run(*args, timeout=timeout)


def by_scenario(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {call["scenario"]: call for call in report["calls"]}


def outcomes(call: dict[str, Any], kind: str) -> list[str]:
    return [
        event["detail"]["outcome"] for event in call["events"] if event["type"] == kind
    ]


@pytest.mark.timeout(120)
def test_baseline_ice_restart_and_rebind_with_recovery(
    tmp_path: Path, janus_lab: list[str]
) -> None:
    report_path = tmp_path / "r.json"
    done = callagent(
        "run",
        str(HERE / "baseline.yaml"),
        str(HERE / "ice_restart.yaml"),
        str(HERE / "rebind_restart.yaml"),
        "--target",
        "janus",
        "--workers",
        "1",
        "--scenarios-at-once",
        "3",
        "--report",
        str(report_path),
        "--quiet",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    janus_lab += lab_runs(report)
    assert_matches_schema(report)
    calls = by_scenario(report)

    # Baseline: audio both ways, seen by each end; nothing restarted, lost.
    baseline = calls["janus-baseline"]
    assert baseline["mode"] == "janus" and baseline["lab"] is not None
    far = baseline["sides"]["callee"]
    assert far["target"] == "janus"
    view = far["view"]
    assert view["source"] == "janus handle_info"
    assert view["dtls_state"] == "connected" and view["ice_state"] == "ready"
    assert view["packets_received"] > 100 and view["packets_sent"] > 100
    to_agent = baseline["media"]["callee_to_caller"]
    assert to_agent["packets_received"] > 100 and to_agent["packets_lost"] == 0
    assert baseline["metrics"]["ice_restarts"]["total"] == 0
    assert baseline["metrics"]["dtls_rehandshakes"]["total"] == 0

    # The agent restarts ICE: Janus answers with a new ufrag, the restart
    # completes, media continues both ways.
    restart = calls["janus-ice-restart"]
    assert restart["expectations"]["passed"], restart["expectations"]
    assert restart["metrics"]["ice_restarts"]["local"] == 1
    assert outcomes(restart, "ice_restart") == ["completed"]
    view = restart["sides"]["callee"]["view"]
    assert len(view["local_ufrags"]) == 2 and view["reoffers_answered"] == 1
    assert view["inbound_recent"]
    last = restart["media"]["callee_to_caller"]["last_arrival_ms"]
    assert last > restart["duration_ms"] - 1500

    # The NAT rebinds; Janus keeps sending to the old port, the agent goes
    # disconnected and restarts; Janus moves to the new pair, media is back.
    rebind = calls["janus-rebind-restart"]
    assert rebind["expectations"]["passed"], rebind["expectations"]
    assert rebind["metrics"]["ice_restarts"]["local"] == 1
    assert outcomes(rebind, "ice_restart") == ["completed"]
    view = rebind["sides"]["callee"]["view"]
    assert view["selected_pair_changes"] >= 1 and view["inbound_recent"]
    assert len(view["local_ufrags"]) == 2
    last = rebind["media"]["callee_to_caller"]["last_arrival_ms"]
    assert last > rebind["duration_ms"] - 1500


@pytest.mark.timeout(60)
async def test_janus_alone_does_not_follow_a_moved_peer(janus_lab: list[str]) -> None:
    """Without a restart and without the agent nominating again (RFC
    profile), Janus keeps its pair to the old port: the agent hears nothing
    after the rebind, Janus still hears the agent."""
    runner = ScenarioRunner(target=parse_target("janus"), seed=7)
    janus_lab.append(runner.lab_run_id)
    (call,) = await runner.run(load_scenarios([HERE / "rebind_no_restart.yaml"]))
    assert call["connected"], call["error"]
    view = call["sides"]["callee"]["view"]
    assert view["selected_pair_changes"] == 0, view
    to_agent = call["media"]["callee_to_caller"]
    assert to_agent["last_arrival_ms"] < 2000 + 1000 + call["setup_ms"], to_agent
    assert view["inbound_recent"]
    assert not call["expectations"]["passed"]


@pytest.mark.timeout(60)
async def test_janus_errors_are_one_line(janus_lab: list[str]) -> None:
    """A real Janus's errors (no such plugin, no such session) become one
    SignalingError sentence each."""
    lab = Lab(nat=False)
    janus_lab.append(lab.topology.run_id)
    async with lab:
        janus = JanusProcess(lab.namespace(Role.OUTSIDE))
        await janus.start()
        client = JanusClient(janus.api_url, socket_factory=janus.socket_factory)
        try:
            await client.create_session()
            with pytest.raises(SignalingError, match="error 460") as caught:
                await client.attach("janus.plugin.nosuch")
            assert "\n" not in str(caught.value)
            client.session_id = 12345
            with pytest.raises(SignalingError, match="error 458"):
                await client.attach("janus.plugin.echotest")
        finally:
            await client.close(hang_up=False)
            await janus.stop()


@pytest.mark.timeout(60)
def test_unreachable_janus_is_one_line_and_the_report_is_kept(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "r.json"
    done = callagent(
        "run",
        str(MATRIX / "baseline.yaml"),
        "--target",
        "janus+http://127.0.0.1:9/janus",
        "--report",
        str(report_path),
        "--quiet",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    report = json.loads(report_path.read_text())
    (call,) = report["calls"]
    assert not call["connected"]
    assert call["error"].startswith("Janus create (POST http://127.0.0.1:9/janus)")
    assert "cannot reach it" in call["error"] and "\n" not in call["error"]


@pytest.mark.timeout(120)
def test_matrix_against_janus(tmp_path: Path, janus_lab: list[str]) -> None:
    """The matrix's verdicts for Janus: a baseline that passes, a far-end
    restart refused before any call, a certificate rotation that Janus never
    handshakes for (the call stays up on the old association; the row says
    the rehandshake was incomplete)."""
    scenarios = tmp_path / "matrix"
    scenarios.mkdir()
    for name in ("baseline.yaml", "ice_restart_far_end.yaml", "cert_rotation.yaml"):
        (scenarios / name).write_text((MATRIX / name).read_text())
    out = tmp_path / "m.json"
    done = callagent(
        "matrix",
        "--target",
        "janus",
        "--scenarios",
        str(scenarios),
        "--report",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    matrix = json.loads(out.read_text())
    janus_lab += lab_runs(matrix)
    rows = {row["scenario"]: row for row in matrix["rows"]}
    assert rows["matrix-baseline"]["verdict"] == "PASS"
    refused = rows["matrix-ice-restart-far-end"]
    assert refused["verdict"] == "REFUSED"
    assert "cannot restart ICE itself" in refused["note"]
    cert = rows["matrix-cert-rotation"]
    assert cert["rehandshakes_agent"] == 1 and cert["recovered"]
    assert "DTLS rehandshake by the agent incomplete" in cert["note"]
    assert "resilience matrix: janus" in done.stdout
