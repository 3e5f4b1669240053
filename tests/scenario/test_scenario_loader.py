"""Loading files: the broken-file corpus, valid files, provenance, file errors.

Each ``bad/*.yaml`` starts with ``# expect: <the exact one-line message>``, as a
user running from this directory would see it. ``{known_steps}`` stands for
the registered step names, so adding a step does not rewrite the corpus.
"""

import hashlib
import os
import re
from pathlib import Path

import pytest
import yaml

from agent.errors import ScenarioError, ScenarioErrors
from agent.scenario.loader import (
    field_label,
    load_scenario,
    load_scenarios,
    parse_scenario,
)
from agent.scenario.model import Scenario, scenario_digest
from agent.scenario.steps import STEPS, Step

HERE = Path(__file__).parent
BAD = sorted(p.name for p in (HERE / "bad").glob("*.yaml"))
GOOD = sorted(HERE.joinpath("good").glob("*.yaml"))
BASELINE = HERE.parents[1] / "scenarios" / "baseline.yaml"
EXPECT = re.compile(r"# expect: (?P<message>.+)")
WHERE = re.compile(r"(?P<path>[^:]+)(?::(?P<line>\d+))?: ")


def expected_message(path: Path) -> str:
    first_line = path.read_text().splitlines()[0]
    match = EXPECT.fullmatch(first_line)
    assert match, f"{path.name} must start with '# expect: <message>'"
    return match["message"].replace("{known_steps}", ", ".join(sorted(STEPS)))


def test_corpus_covers_the_required_failures() -> None:
    required = {
        "yaml_syntax.yaml",
        "empty.yaml",
        "top_level_list.yaml",
        "missing_duration.yaml",
        "duration_garbage.yaml",
        "step_at_garbage.yaml",
        "duration_negative.yaml",
        "unknown_top_field.yaml",
        "unknown_step.yaml",
        "step_at_beyond_duration.yaml",
        "hangup_without_side.yaml",
        "noop_with_side.yaml",
        "unknown_step_param.yaml",
        "duplicate_key.yaml",
        "non_loopback_address.yaml",
        "expect_min_above_max.yaml",
        "wrong_type_calls.yaml",
    }
    assert required <= set(BAD)


@pytest.mark.parametrize("name", BAD)
def test_bad_file_gives_one_clear_sentence(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE)
    relative = Path("bad", name)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(relative)
    error = caught.value
    assert str(error) == expected_message(relative)
    # The structured parts agree with the sentence, for the CLI and JUnit.
    assert error.path == str(relative)
    where = WHERE.match(str(error))
    assert where is not None
    assert error.line == (int(where["line"]) if where["line"] else None)
    if error.field is not None:
        assert str(error).startswith(f"{where.group(0)}{error.field}: ")
    assert "\n" not in str(error)
    assert "Input should" not in str(error)  # no raw pydantic text
    assert "errors.pydantic.dev" not in str(error)


def test_unknown_top_field_names_field_and_suggestion() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: x\nduraton: 10s\n", "x.yaml")
    assert (caught.value.path, caught.value.line, caught.value.field) == (
        "x.yaml",
        2,
        "duraton",
    )
    assert caught.value.reason == "unknown field; did you mean 'duration'?"


def test_yaml_and_pydantic_causes_are_kept_for_debugging() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: [", "x.yaml")
    assert isinstance(caught.value.__cause__, yaml.YAMLError)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: x\nduration: soon\n", "x.yaml")
    assert type(caught.value.__cause__).__name__ == "ValidationError"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "x.yaml: file is empty; a scenario needs at least name and duration"),
        ("\n\n", "x.yaml: file is empty; a scenario needs at least name and duration"),
        (
            "name: x\nduration: 1s\nsteps: &s [*s]\n",
            "x.yaml:3: steps[0]: expected a mapping, got a list",
        ),
        (
            "name: x\nduration: 1s\n1: 2\n",
            "x.yaml:3: 1: unknown field; expected one of: calls, description, "
            "duration, expect, expect_kernel, media, name, network, peers, ramp, "
            "seed, steps, target, thresholds",
        ),
        (
            "name: x\nduration: 1s\n? [a]\n: 2\n",
            "x.yaml:3: invalid YAML: while constructing a mapping, "
            "found unhashable key",
        ),
        (
            "name: x\ndescription: !!python/object/apply:os.system [true]\n",
            "x.yaml:2: invalid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (
            "name: x\nduration: 1s\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
            "x.yaml: YAML nested too deeply",
        ),
    ],
)
def test_odd_yaml(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "x.yaml")
    assert str(caught.value) == message


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.yaml"
    path.write_bytes(b"")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}: file is empty; a scenario needs at least name and duration"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}: file not found"
    assert caught.value.line is None


def test_directory_given_as_a_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a scenario file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Faked: permission bits do not stop root, and the OS is not under test.
    def denied(path: object, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    (tmp_path / "secret.yaml").write_text("name: x\nduration: 1s\n")
    monkeypatch.setattr("agent.scenario.loader.os.open", denied)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "secret.yaml")
    assert str(caught.value) == (
        f"{tmp_path / 'secret.yaml'}: cannot read file: permission denied"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\nduration: 10s\ndescription: caf\xe9\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}:3: not UTF-8 text (byte 0xe9)"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: bom\nduration: 10s\n")
    assert load_scenario(path).name == "bom"


@pytest.mark.parametrize("path", [*GOOD, BASELINE], ids=lambda p: p.name)
def test_valid_file_round_trips(path: Path) -> None:
    scenario = load_scenario(path)
    dumped = scenario.model_dump(mode="json")
    text = yaml.safe_dump(dumped, sort_keys=False)
    again = parse_scenario(text, "dumped.yaml")
    assert again.model_dump(mode="json") == dumped
    assert Scenario.model_validate(dumped).model_dump() == scenario.model_dump()
    assert scenario_digest(again) == scenario_digest(scenario)


def test_source_records_path_hash_and_text(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    raw = b"# comment\nname: s\nduration: 3s\n"
    path.write_bytes(raw)
    scenario = load_scenario(str(path))
    assert scenario.source is not None
    assert scenario.source.path == str(path)
    assert scenario.source.sha256 == hashlib.sha256(raw).hexdigest()
    assert scenario.source.text == raw.decode()


def test_digest_ignores_formatting_but_not_content() -> None:
    one = parse_scenario("name: s\nduration: 10s\n")
    two = parse_scenario("# same, spelled differently\nduration: 10\nname: 's'\n")
    three = parse_scenario("name: s\nduration: 11s\n")
    assert one.source is not None and two.source is not None
    assert one.source.sha256 != two.source.sha256
    assert scenario_digest(one) == scenario_digest(two)
    assert scenario_digest(one) != scenario_digest(three)


def test_full_example_values() -> None:
    scenario = load_scenario(HERE / "good" / "full.yaml")
    assert scenario.duration == 90.0
    assert [(s.at, s.do, s.side) for s in scenario.steps] == [
        (0.0, "noop", None),
        (0.5, "noop", None),
        (10.0, "ice.restart", "caller"),
        (20.0, "dtls.rehandshake", "callee"),
        (30.0, "sbc.failover", "callee"),
        (60.0, "hangup", "callee"),
    ]
    assert scenario.steps[3].params.model_dump() == {
        "rotate_certificate": False,
        "ice_restart": False,
        "cause": None,
    }
    assert scenario.steps[4].params.model_dump() == {"ice_restart": False}
    callee = scenario.peers.callee
    assert (callee.certificate_lifetime, callee.cert_expiry, callee.dtls_profile) == (
        30.0,
        "keep",
        "rehandshake_on_ice_restart",
    )
    assert scenario.steps[2].params.model_dump() == {"cause": "nat_rebind"}
    caller = scenario.peers.caller
    assert (caller.recovery, caller.disconnected_after, caller.consent_interval) == (
        "restart_on_disconnected",
        1.5,
        2.0,
    )
    assert callee.recovery == "none"
    by_side = scenario.expect.initiated_by.ice_restarts
    assert by_side is not None and str(by_side.network) == "<= 0"
    assert scenario.expect.causes.ice_restarts == "nat_rebind"
    assert str(scenario.expect.ice_restarts) == "0..1"
    assert str(scenario.expect.dtls_rehandshakes) == "0"
    assert scenario.thresholds.dtls_rehandshakes.critical == 3


def test_anchors_and_merge_keys() -> None:
    scenario = load_scenario(HERE / "good" / "anchors.yaml")
    assert str(scenario.peers.caller.address) == "127.0.0.5"
    assert str(scenario.peers.callee.address) == "127.0.0.6"
    assert str(scenario.expect.dtls_rehandshakes) == "0"


def test_step_param_errors_point_at_their_line(blackhole_step: type[Step]) -> None:
    text = (
        "name: x\n"
        "duration: 10s\n"
        "steps:\n"
        "  - at: 1s\n"
        "    do: test.blackhole\n"
        "    side: caller\n"
        "    duration: 2q\n"
    )
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "x.yaml")
    assert str(caught.value) == (
        "x.yaml:7: steps[0].duration: invalid duration '2q' (use e.g. 500ms, 5s, 2m)"
    )
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.replace("duration: 2q", "loss: 2\n    duration: 1s"))
    assert str(caught.value) == "<string>:7: steps[0].loss: must be at most 1, got 2"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.replace("    duration: 2q\n", ""))
    assert str(caught.value) == (
        "<string>:4: steps[0].duration: required field is missing"
    )


def test_load_scenarios_in_order_with_directories(tmp_path: Path) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "b.yaml").write_text("name: b\nduration: 1s\n")
    (folder / "a.yml").write_text("name: a\nduration: 1s\n")
    (folder / "notes.txt").write_text("not a scenario")
    first = tmp_path / "z.yaml"
    first.write_text("name: z\nduration: 1s\n")
    names = [s.name for s in load_scenarios([first, folder])]
    assert names == ["z", "a", "b"]


def test_load_scenarios_refuses_duplicate_names(tmp_path: Path) -> None:
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("name: same\nduration: 1s\n")
    two.write_text("# the copy\nname: same\nduration: 2s\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenarios([one, two])
    assert str(caught.value) == (
        f"{two}:2: name: 'same' is already the name of the scenario in {one}"
    )


def test_load_scenarios_refuses_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenarios([tmp_path])
    assert str(caught.value) == (
        f"{tmp_path}: directory holds no scenario files (.yaml, .yml)"
    )


def test_load_scenarios_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("name: good\nduration: 1s\n")
    bad.write_text("name: bad\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenarios([good, bad])
    assert caught.value.path == str(bad)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ((), None),
        (("duration",), "duration"),
        (("steps", 2, "at"), "steps[2].at"),
        (("peers", "caller", "address"), "peers.caller.address"),
        (("steps", 0), "steps[0]"),
    ],
)
def test_field_label(path: tuple[str | int, ...], label: str | None) -> None:
    assert field_label(path) == label


def test_shipped_scenarios_load() -> None:
    scenarios = load_scenarios([BASELINE.parent])
    assert "baseline" in [s.name for s in scenarios]
    baseline = load_scenario(BASELINE)
    assert baseline.duration == 10.0
    assert baseline.steps == ()
    assert baseline.media.audio
    assert str(baseline.expect.ice_restarts) == "0"
    assert str(baseline.expect.dtls_rehandshakes) == "0"
    assert baseline.expect.max_media_gap_ms == 100
    assert baseline.expect.call_up
    assert baseline.description


# --- hostile input (issue 11, D1-D9) ------------------------------------------


def test_corpus_covers_the_hostile_inputs() -> None:
    required = {
        # D1 a bad value under an explicit tag
        "yaml_tag_int.yaml",
        "yaml_tag_float.yaml",
        "yaml_tag_bool.yaml",
        "yaml_tag_timestamp.yaml",
        # D2 a 5,000-digit integer; D3 a NUL in the text
        "number_too_long.yaml",
        "control_character.yaml",
        # D6 a billion calls; D7 a certificate lifetime that overflows a datetime
        "calls_too_many.yaml",
        "certificate_lifetime_overflow.yaml",
        # D8 absurd values
        "duration_huge.yaml",
        "duration_inf.yaml",
        "call_too_long.yaml",
        "step_delay_inf.yaml",
        "step_delay_nan.yaml",
        "loss_rate_text.yaml",
        "max_gap_nan.yaml",
        "address_broadcast.yaml",
        "address_network.yaml",
        # D9 a null key
        "null_key.yaml",
    }
    assert required <= set(BAD)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int 1.5", "cannot read '1.5' as a whole number (!!int)"),
        ("!!int ''", "cannot read '' as a whole number (!!int)"),
        ("!!float x", "cannot read 'x' as a number (!!float)"),
        ("!!bool 2", "cannot read '2' as true or false (!!bool)"),
        (
            "!!timestamp 2026-13-45",
            "cannot read '2026-13-45' as a date or time such as 2026-01-31 or "
            "2026-01-31T12:00:00Z (!!timestamp)",
        ),
        ("0x" + "f" * 40, "a 42-character number is too long (at most 32 characters)"),
    ],
)
def test_a_value_no_constructor_can_read_names_its_line_and_field(
    value: str, message: str
) -> None:
    text = f"name: x\nduration: 10s\nmedia:\n  packet_ms: {value}\n"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "x.yaml")
    assert str(caught.value) == f"x.yaml:4: media.packet_ms: {message}"
    assert isinstance(caught.value.__cause__, yaml.YAMLError)


def test_an_unreadable_key_names_its_line_and_mapping() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: x\nduration: 10s\nmedia:\n  !!int ten: 1\n", "x.yaml")
    assert str(caught.value) == (
        "x.yaml:4: media: cannot read 'ten' as a whole number (!!int)"
    )


def test_a_long_number_within_the_limit_reaches_the_range_check() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario("name: x\nduration: 10s\ncalls: " + "9" * 32 + "\n", "x.yaml")
    assert str(caught.value) == (
        "x.yaml:3: calls: must be at least 1 and at most 1000, got " + "9" * 32
    )


@pytest.mark.parametrize("character", ["\x01", "\x1b", "\x7f", "\ufffe"])
def test_control_characters_name_their_line(character: str) -> None:
    text = f"name: x\nduration: 10s\n\ndescription: 'a{character}b'\n"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "x.yaml")
    assert str(caught.value) == (
        f"x.yaml:4: invalid YAML: character U+{ord(character):04X} is not allowed "
        "in a YAML file (write it as an escape such as \\x00 inside double quotes)"
    )


def test_control_characters_may_be_written_as_escapes() -> None:
    scenario = parse_scenario('name: x\nduration: 10s\ndescription: "a\\x00b"\n')
    assert scenario.description == "a\x00b"


@pytest.mark.parametrize(
    ("key", "label"),
    [("~", "null"), ("null", "null"), ("true", "true"), ("1.5", "1.5")],
)
def test_odd_keys_are_named_as_written_on_their_line(key: str, label: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(f"name: x\nduration: 10s\n\n{key}: x\n", "x.yaml")
    error = caught.value
    assert (error.line, error.field) == (4, label)
    assert error.reason.startswith("unknown field; expected one of: calls,")


def test_null_key_in_a_step_names_its_line() -> None:
    text = "name: x\nduration: 10s\nsteps:\n  - at: 1s\n    do: noop\n    ~: 1\n"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "x.yaml")
    assert (caught.value.line, caught.value.field) == (6, "steps[0].null")


def test_every_duration_in_range_is_accepted() -> None:
    scenario = parse_scenario(
        "name: x\nduration: 24h\npeers: {caller: {certificate_lifetime: 168h}}\n"
    )
    assert scenario.duration == 86400.0
    assert scenario.peers.caller.certificate_lifetime == 7 * 86400.0


def test_a_large_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: big\nduration: 10s\n" + b"# padding\n" * 110_000)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}: file is too big (1,100,024 bytes); a scenario file is at most 1 MiB"
    )


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer comes; the loader must
    # not even try (the CLI tests prove it returns; this one the message).
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}: is a named pipe (FIFO), not a regular file; scenarios are read "
        "from regular files only"
    )


@pytest.mark.parametrize("device", ["/dev/urandom", "/dev/zero", "/dev/null"])
def test_a_symlink_to_a_device_is_refused(tmp_path: Path, device: str) -> None:
    path = tmp_path / "device.yaml"
    path.symlink_to(device)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}: is a character device, not a regular file; scenarios are read "
        "from regular files only"
    )


def test_load_scenarios_reports_every_bad_file(tmp_path: Path) -> None:
    (tmp_path / "a_good.yaml").write_text("name: a\nduration: 1s\n")
    (tmp_path / "b_bad.yaml").write_text("name: b\nduration: !!int soon\n")
    (tmp_path / "c_good.yaml").write_text("name: c\nduration: 1s\n")
    (tmp_path / "d_bad.yaml").write_text("name: d\n")
    (tmp_path / "e_same.yaml").write_text("name: a\nduration: 1s\n")
    with pytest.raises(ScenarioErrors) as caught:
        load_scenarios([tmp_path, tmp_path / "missing.yaml"])
    assert caught.value.lines() == [
        f"{tmp_path / 'b_bad.yaml'}:2: duration: cannot read 'soon' as a whole "
        "number (!!int)",
        f"{tmp_path / 'd_bad.yaml'}:1: duration: required field is missing "
        "(e.g. duration: 10s)",
        f"{tmp_path / 'e_same.yaml'}:1: name: 'a' is already the name of the "
        f"scenario in {tmp_path / 'a_good.yaml'}",
        f"{tmp_path / 'missing.yaml'}: file not found",
    ]
    assert all(isinstance(error, ScenarioError) for error in caught.value.errors)


def test_a_path_under_an_unreadable_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root reads everything, so EACCES is made by the OS call that meets it:
    # Path.is_dir() raises PermissionError where os.stat() does.
    locked = tmp_path / "locked" / "x.yaml"
    real_stat = os.stat

    def stat_denied(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).startswith(str(locked.parent)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat_denied)
    with pytest.raises(ScenarioError) as caught:
        load_scenarios([locked])
    assert str(caught.value).splitlines() == [
        f"{locked}: cannot read file: permission denied"
    ]
