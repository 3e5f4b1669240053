"""Targets as data: parsing, capabilities, and refusing what a far end cannot do
(``callagent check --target``, one line per refusal, before any call)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.targets.spec import (
    StepView,
    TargetError,
    TargetKind,
    parse_target,
    refusals,
)

ROOT = Path(__file__).resolve().parents[2]


def test_agent_is_the_default() -> None:
    assert parse_target(None).kind is TargetKind.AGENT
    assert parse_target("agent").is_agent


def test_whip_target_keeps_the_endpoint_url() -> None:
    target = parse_target("whip+https://sfu.example/whip/room1")
    assert target.kind is TargetKind.WHIP
    assert target.url == "https://sfu.example/whip/room1"
    assert not target.capabilities.restart_ice


def test_browsers_cannot_change_a_live_certificate() -> None:
    for name in ("chromium", "firefox"):
        caps = parse_target(f"browser:{name}").capabilities
        assert caps.restart_ice and not caps.change_certificate


def test_gstreamer_is_a_lab_target_that_cannot_restart() -> None:
    target = parse_target("gstreamer")
    assert target.kind is TargetKind.GSTREAMER and target.needs_lab
    caps = target.capabilities
    assert not caps.restart_ice and not caps.change_certificate
    assert caps.answers_reoffers
    assert not parse_target("browser:chromium").needs_lab


def test_janus_targets_launched_or_the_users_own() -> None:
    launched = parse_target("janus")
    assert launched.kind is TargetKind.JANUS and launched.needs_lab
    assert launched.url is None
    own = parse_target(
        "janus+http://10.0.0.5:8088/janus?admin=http://10.0.0.5:7088/admin&secret=s3"
    )
    assert own.kind is TargetKind.JANUS and not own.needs_lab
    assert own.url == "http://10.0.0.5:8088/janus"
    assert own.admin_url == "http://10.0.0.5:7088/admin"
    assert own.admin_secret == "s3"
    # The report and the terminal show the target, never its admin secret.
    assert "s3" not in str(own) and "admin=" in str(own)
    # ... but a worker process gets it as written.
    assert parse_target(own.as_argument()) == own
    caps = launched.capabilities
    assert not caps.restart_ice and not caps.change_certificate
    assert not caps.hang_up and caps.answers_reoffers
    assert caps.takes_new_certificate is False


def test_janus_refuses_far_end_restarts_not_the_agents_certificate() -> None:
    steps = [
        StepView(0, "ice.restart", "callee", {}),
        StepView(1, "ice.restart", "caller", {}),
        StepView(2, "dtls.rehandshake", "caller", {"rotate_certificate": True}),
        StepView(3, "hangup", "callee", {}),
    ]
    found = refusals(parse_target("janus"), steps)
    assert [w for w, _ in found] == ["steps[0]", "steps[3]"]
    assert "cannot restart ICE itself" in found[0][1]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("janus+http://h:8088/janus?token=x", "unknown parameter 'token'"),
        ("janus+http://h/janus?secret=s", "secret without admin"),
        ("janus+http://h/janus?admin=ftp://h/a", "admin must be an http"),
        ("janus+http://", "has no host"),
        ("browser:safari", "unknown browser target"),
        ("whip+http://", "has no host"),
        ("sip:alice@example", "unknown target"),
    ],
)
def test_bad_targets_are_one_line(text: str, said: str) -> None:
    with pytest.raises(TargetError, match=said) as caught:
        parse_target(text)
    assert "\n" not in str(caught.value)


def test_far_end_steps_need_the_capability() -> None:
    whip = parse_target("whip+http://127.0.0.1:9/whip")
    steps = [
        StepView(0, "ice.restart", "caller", {}),
        StepView(1, "ice.restart", "callee", {}),
        StepView(2, "net.blackhole", "callee", {"duration": 1.0}),
        StepView(3, "dtls.rehandshake", "caller", {"rotate_certificate": True}),
        StepView(4, "dtls.rehandshake", "caller", {"rotate_certificate": False}),
    ]
    where = [w for w, _ in refusals(whip, steps)]
    assert where == ["steps[1]", "steps[2]", "steps[3]"]
    firefox = parse_target("browser:firefox")
    assert [w for w, _ in refusals(firefox, steps)] == ["steps[2]"]
    assert refusals(parse_target("agent"), steps) == []


def test_far_end_settings_and_nat_side_are_refused() -> None:
    chromium = parse_target("browser:chromium")
    found = refusals(chromium, [], far_end_settings=["recovery"], nat_side="callee")
    assert [w for w, _ in found] == ["peers.callee.recovery", "network.nat.side"]


def callagent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_check_refuses_a_step_the_target_cannot_do_in_one_line() -> None:
    done = callagent(
        "check", "scenarios/ice_restart_callee.yaml", "--target", "whip+http://h/whip"
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "ice_restart_callee.yaml: steps[0]" in done.stderr
    assert "cannot restart ICE itself" in done.stderr
    # The same file is fine for a far end that can restart ICE.
    done = callagent(
        "check", "scenarios/ice_restart_callee.yaml", "--target", "browser:chromium"
    )
    assert done.returncode == 0, done.stderr


def test_the_flag_overrides_the_files_target(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: s\nduration: 5s\ntarget: whip+http://h/whip\n"
        "steps:\n  - {at: 1s, do: ice.restart, side: callee}\n"
    )
    assert callagent("check", str(scenario)).returncode == 2
    assert callagent("check", str(scenario), "--target", "agent").returncode == 0


def test_a_bad_target_in_a_file_names_the_line(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nduration: 5s\ntarget: gstreamer\n")
    done = callagent("check", str(scenario))
    assert done.returncode == 2
    assert "s.yaml:3" in done.stderr and "not available" in done.stderr
