"""JUnit XML view of a report, for CI systems that show test results.

Mapping: one ``<testsuite>`` per scenario (in order of first appearance), one
``<testcase>`` per call. A call whose expectations failed gets a ``<failure>``
listing each failed check with expected and actual; a call that errored gets an
``<error>``. Each testcase carries ``<properties>`` with the metric values (as
pytest's ``record_property`` does; Jenkins, GitLab and Azure read them), and its
counted events in ``<system-out>``.

A run that did not complete gets one more suite, ``callagent.run``, with an
errored testcase: otherwise a CI page would show an interrupted run whose
finished calls all passed as green.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from agent.report.schema import (
    CONTRACT_METRICS,
    DIRECTIONS,
    Verdict,
    call_verdict,
    failed_checks,
    ice_triggered_rehandshakes,
    media,
    metric,
    number,
)

#: Event types worth a line in ``<system-out>``: what happened, not every state.
_OUTPUT_EVENTS = frozenset(
    {
        "ice_restart",
        "dtls_rehandshake",
        "selected_pair_change",
        "media_gap",
        "step",
        "fault_start",
        "fault_end",
    }
)

# XML 1.0 §2.2: control characters other than tab, LF and CR cannot appear in a
# document at all, escaped or not; an error message may carry them.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def junit_xml(report: Mapping[str, Any]) -> str:
    """The report as a JUnit XML document (UTF-8 text with an XML declaration)."""
    calls: list[Mapping[str, Any]] = list(report.get("calls") or [])
    by_scenario: dict[str, list[Mapping[str, Any]]] = {}
    for call in calls:
        by_scenario.setdefault(str(call.get("scenario", "unknown")), []).append(call)

    root = ET.Element("testsuites", name="callagent")
    for scenario, scenario_calls in by_scenario.items():
        root.append(_suite(report, scenario, scenario_calls))
    if not report.get("complete"):
        root.append(_incomplete_suite(report))

    suites = root.findall("testsuite")
    for attribute in ("tests", "failures", "errors"):
        root.set(attribute, str(sum(int(s.get(attribute, "0")) for s in suites)))
    root.set("time", _seconds(sum(float(s.get("time", "0")) * 1000 for s in suites)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        root, encoding="unicode"
    )


def _suite(
    report: Mapping[str, Any], scenario: str, calls: list[Mapping[str, Any]]
) -> ET.Element:
    verdicts = [call_verdict(call) for call in calls]
    suite = ET.Element(
        "testsuite",
        name=_text(scenario),
        tests=str(len(calls)),
        failures=str(verdicts.count(Verdict.FAIL)),
        errors=str(verdicts.count(Verdict.ERROR)),
        skipped=str(verdicts.count(Verdict.INCONCLUSIVE)),
        time=_seconds(sum(number(call.get("duration_ms")) or 0.0 for call in calls)),
    )
    started = calls[0].get("started_at")
    if started:
        suite.set("timestamp", _text(str(started)))
    first = calls[0]
    _properties(
        suite,
        {
            "run_id": report.get("run_id"),
            "tool": report.get("tool"),
            "seed": report.get("seed"),
            "scenario_file": first.get("scenario_file"),
            "scenario_sha256": first.get("scenario_sha256"),
        },
    )
    for call in calls:
        suite.append(_testcase(scenario, call))
    return suite


def _testcase(scenario: str, call: Mapping[str, Any]) -> ET.Element:
    case = ET.Element(
        "testcase",
        classname=_text(f"callagent.{scenario}"),
        name=_text(str(call.get("id", "unknown"))),
        time=_seconds(number(call.get("duration_ms")) or 0.0),
    )
    _properties(case, _call_properties(call))

    verdict = call_verdict(call)
    failed = failed_checks(call)
    check_lines = [
        f"{check.get('name', '?')}: expected {check.get('expected', '?')},"
        f" actual {check.get('actual', '?')}"
        for check in failed
    ]
    if verdict is Verdict.ERROR:
        # One outcome per testcase: an errored call's failed checks (if the
        # scenario layer evaluated any) go into the error's text.
        error = ET.SubElement(case, "error", type="CallError")
        error.set("message", _text(str(call.get("error"))))
        error.text = _text(
            "\n".join(
                [
                    str(call.get("error")),
                    f"final state: {call.get('final_state')}",
                    *check_lines,
                ]
            )
        )
    elif verdict is Verdict.INCONCLUSIVE:
        # Neither pass nor fail: the agent could not judge (docs/report.md).
        skipped = ET.SubElement(case, "skipped", type="Inconclusive")
        skipped.set("message", _text("inconclusive: the agent stalled"))
        skipped.text = _text("\n".join(check_lines))
    elif verdict is Verdict.FAIL:
        names = ", ".join(str(check.get("name", "?")) for check in failed)
        failure = ET.SubElement(case, "failure", type="ExpectationFailed")
        failure.set("message", _text(f"failed checks: {names or 'expectations'}"))
        failure.text = _text("\n".join(check_lines))

    events = [
        event
        for event in call.get("events") or []
        if event.get("type") in _OUTPUT_EVENTS
    ]
    events.sort(key=lambda event: number(event.get("t_ms")) or 0.0)
    lines = [_event_line(event) for event in events]
    if lines:
        ET.SubElement(case, "system-out").text = _text("\n".join(lines))
    return case


def _call_properties(call: Mapping[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "final_state": call.get("final_state"),
        "setup_ms": call.get("setup_ms"),
    }
    for name in CONTRACT_METRICS:
        value = metric(call, name)
        for key in ("total", "local", "remote", "level"):
            properties[f"{name}.{key}"] = value.get(key)
    properties["dtls_rehandshakes.ice_triggered"] = ice_triggered_rehandshakes(call)
    properties["selected_pair_changes"] = (call.get("metrics") or {}).get(
        "selected_pair_changes"
    )
    for direction in DIRECTIONS:
        stats = media(call, direction)
        for key in ("max_gap_ms", "packets_lost", "packets_delayed", "jitter_ms"):
            properties[f"{direction}.{key}"] = stats.get(key)
    return properties


def _incomplete_suite(report: Mapping[str, Any]) -> ET.Element:
    reason = report.get("interrupted") or "the run did not finish"
    suite = ET.Element(
        "testsuite", name="callagent.run", tests="1", failures="0", errors="1"
    )
    suite.set("skipped", "0")
    suite.set("time", "0.000")
    case = ET.SubElement(
        suite, "testcase", classname="callagent.run", name="run completed"
    )
    case.set("time", "0.000")
    error = ET.SubElement(case, "error", type="RunIncomplete")
    error.set("message", _text(f"run incomplete: {reason}"))
    return suite


def _properties(parent: ET.Element, values: Mapping[str, Any]) -> None:
    present = {key: value for key, value in values.items() if value is not None}
    if not present:
        return
    properties = ET.SubElement(parent, "properties")
    for key, value in present.items():
        ET.SubElement(properties, "property", name=key, value=_text(_format(value)))


def _event_line(event: Mapping[str, Any]) -> str:
    t_ms = number(event.get("t_ms"))
    parts = [
        "?" if t_ms is None else f"{t_ms / 1000:9.3f}s",
        str(event.get("side") or "-"),
        str(event.get("type")),
    ]
    if event.get("initiator"):
        parts.append(f"by={event['initiator']}")
    if event.get("cause"):
        parts.append(f"cause={event['cause']}")
    detail = event.get("detail") or {}
    parts += [
        f"{key}={_format(value)}" for key, value in detail.items() if value is not None
    ]
    return " ".join(parts)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{_format(v)}" for k, v in value.items())
    return str(value)


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.3f}"


def _text(value: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", value)
