"""JUnit XML: parsed back with ElementTree, as a CI server would."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from agent.report.junit import junit_xml


def parse(report: dict[str, Any]) -> ET.Element:
    text = junit_xml(report)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text.encode("utf-8"))


def case(root: ET.Element, name: str) -> ET.Element:
    found = root.find(f".//testcase[@name='{name}']")
    assert found is not None, name
    return found


def properties(element: ET.Element) -> dict[str, str]:
    return {
        prop.attrib["name"]: prop.attrib["value"]
        for prop in element.findall("properties/property")
    }


def test_one_suite_per_scenario_one_case_per_call(mixed_report: dict[str, Any]) -> None:
    root = parse(mixed_report)
    assert root.tag == "testsuites"
    suites = {suite.attrib["name"]: suite for suite in root.findall("testsuite")}
    assert list(suites) == ["baseline", "nat_rebind"]
    assert [c.attrib["name"] for c in suites["nat_rebind"].findall("testcase")] == [
        "nat_rebind#1",
        "nat_rebind#2",
    ]
    nat = suites["nat_rebind"].attrib
    assert (nat["tests"], nat["failures"], nat["errors"]) == ("2", "1", "1")
    base = suites["baseline"].attrib
    assert (base["tests"], base["failures"], base["errors"]) == ("1", "0", "0")
    assert (root.attrib["tests"], root.attrib["failures"], root.attrib["errors"]) == (
        "3",
        "1",
        "1",
    )
    assert case(root, "baseline#1").attrib["time"] == "10.012"
    assert properties(suites["baseline"])["seed"] == "1234"


def test_failed_expectations_are_failures_naming_the_checks(
    mixed_report: dict[str, Any],
) -> None:
    root = parse(mixed_report)
    failures = case(root, "nat_rebind#1").findall("failure")
    assert len(failures) == 1
    assert (
        failures[0].attrib["message"] == "failed checks: ice_restarts, max_media_gap_ms"
    )
    assert failures[0].text is not None
    assert "max_media_gap_ms: expected <= 1500, actual 1900.5" in failures[0].text
    assert "dtls_rehandshakes" not in failures[0].text  # that check passed

    baseline = case(root, "baseline#1")
    assert baseline.find("failure") is None and baseline.find("error") is None


def test_errored_call_is_an_error_not_a_failure(mixed_report: dict[str, Any]) -> None:
    errored = case(parse(mixed_report), "nat_rebind#2")
    assert errored.find("failure") is None
    error = errored.find("error")
    assert error is not None
    assert error.attrib["message"] == "ICE failed: no candidate pair succeeded"


def test_metric_values_are_properties(mixed_report: dict[str, Any]) -> None:
    props = properties(case(parse(mixed_report), "nat_rebind#1"))
    assert props["ice_restarts.total"] == "2"
    assert props["ice_restarts.level"] == "critical"
    assert props["dtls_rehandshakes.total"] == "1"
    assert props["dtls_rehandshakes.ice_triggered"] == "1"
    assert props["caller_to_callee.max_gap_ms"] == "1900.5"
    assert props["caller_to_callee.packets_lost"] == "14"
    assert props["setup_ms"] == "85.2"


def test_counted_events_are_in_system_out_in_time_order(
    mixed_report: dict[str, Any],
) -> None:
    out = case(parse(mixed_report), "nat_rebind#1").find("system-out")
    assert out is not None and out.text is not None
    lines = out.text.splitlines()
    assert "ice_restart by=local cause=nat_rebind" in lines[0]
    assert "dtls_rehandshake by=local cause=nat_rebind" in lines[1]
    assert "triggered_by=ice_restart" in lines[1]


def test_incomplete_run_adds_an_errored_run_case(mixed_report: dict[str, Any]) -> None:
    mixed_report["complete"] = False
    mixed_report["interrupted"] = "SIGINT"
    root = parse(mixed_report)
    run = case(root, "run completed")
    error = run.find("error")
    assert error is not None and error.attrib["message"] == "run incomplete: SIGINT"
    assert root.attrib["errors"] == "2"


def test_control_characters_do_not_break_the_xml(mixed_report: dict[str, Any]) -> None:
    mixed_report["calls"][2]["error"] = "peer sent \x00\x1b[31mgarbage"
    error = case(parse(mixed_report), "nat_rebind#2").find("error")
    assert error is not None
    assert error.attrib["message"] == "peer sent \ufffd\ufffd[31mgarbage"


def test_empty_report_is_valid() -> None:
    root = parse({"version": 1, "calls": [], "complete": True})
    assert root.attrib["tests"] == "0"
    assert root.findall("testsuite") == []
