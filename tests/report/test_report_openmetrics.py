"""Prometheus text: parsed back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.report.openmetrics import CallMetricsCollector, report_metrics_text

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> tuple[Samples, dict[str, str]]:
    values: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in values, f"duplicate series {key}"
            values[key] = sample.value
    return values, types


def value(values: Samples, name: str, **labels: str) -> float:
    return values[(name, frozenset(labels.items()))]


def test_contract_metrics_by_initiator(mixed_report: dict[str, Any]) -> None:
    values, types = samples(report_metrics_text(mixed_report))
    call = {"scenario": "nat_rebind", "call": "nat_rebind#1"}
    assert types["callagent_ice_restarts"] == "counter"
    assert value(values, "callagent_ice_restarts_total", **call, initiator="local") == 1
    assert (
        value(values, "callagent_ice_restarts_total", **call, initiator="remote") == 1
    )
    assert (
        value(values, "callagent_ice_restarts_total", **call, initiator="network") == 0
    )
    assert (
        value(values, "callagent_dtls_rehandshakes_total", **call, initiator="local")
        == 1
    )
    assert value(values, "callagent_metric_level", **call, metric="ice_restarts") == 2
    assert (
        value(values, "callagent_metric_level", **call, metric="dtls_rehandshakes") == 1
    )


def test_network_initiated_events_make_up_the_total(
    call_factory: Callable[..., dict[str, Any]],
) -> None:
    call = call_factory(
        "nat_timeout#1",
        ice_restarts={"total": 3, "local": 1, "remote": 1, "level": "critical"},
    )
    values, _ = samples(report_metrics_text({"calls": [call]}))
    labels = {"scenario": "nat_timeout", "call": "nat_timeout#1"}
    by_initiator = {
        initiator: value(
            values, "callagent_ice_restarts_total", **labels, initiator=initiator
        )
        for initiator in ("local", "remote", "network")
    }
    assert by_initiator == {"local": 1, "remote": 1, "network": 1}


def test_times_are_in_seconds(mixed_report: dict[str, Any]) -> None:
    values, types = samples(report_metrics_text(mixed_report))
    call = {"scenario": "nat_rebind", "call": "nat_rebind#1"}
    assert types["callagent_media_gap_max_seconds"] == "gauge"
    gap = value(
        values, "callagent_media_gap_max_seconds", **call, direction="caller_to_callee"
    )
    assert gap == pytest.approx(1.9005)
    back = value(
        values, "callagent_media_gap_max_seconds", **call, direction="callee_to_caller"
    )
    assert back == pytest.approx(0.850)
    assert value(values, "callagent_call_setup_seconds", **call) == pytest.approx(
        0.0852
    )
    assert value(values, "callagent_call_duration_seconds", **call) == pytest.approx(
        10.0123
    )


def test_packet_counters_per_direction(mixed_report: dict[str, Any]) -> None:
    values, _ = samples(report_metrics_text(mixed_report))
    labels = {
        "scenario": "nat_rebind",
        "call": "nat_rebind#1",
        "direction": "caller_to_callee",
    }
    assert value(values, "callagent_packets_lost_total", **labels) == 14
    assert value(values, "callagent_packets_delayed_total", **labels) == 3
    assert value(values, "callagent_packets_received_total", **labels) == 486


def test_verdicts(mixed_report: dict[str, Any]) -> None:
    values, _ = samples(report_metrics_text(mixed_report))

    def passed(call_id: str) -> float:
        return value(
            values,
            "callagent_expectations_passed",
            scenario=call_id.split("#")[0],
            call=call_id,
        )

    assert (passed("baseline#1"), passed("nat_rebind#1"), passed("nat_rebind#2")) == (
        1,
        0,
        0,
    )
    errored = value(
        values, "callagent_call_errored", scenario="nat_rebind", call="nat_rebind#2"
    )
    assert errored == 1
    # No setup time for a call that never connected: no sample, not a fake 0.
    setup = (
        "callagent_call_setup_seconds",
        frozenset({"scenario": "nat_rebind", "call": "nat_rebind#2"}.items()),
    )
    assert setup not in values
    assert value(values, "callagent_run_calls", verdict="pass") == 1
    assert value(values, "callagent_run_calls", verdict="fail") == 1
    assert value(values, "callagent_run_calls", verdict="error") == 1
    assert value(values, "callagent_run_complete") == 1
    info = value(
        values,
        "callagent_run_info",
        run_id="20261123T121500Z-ab12",
        tool="callagent 0.1.0",
        seed="1234",
    )
    assert info == 1


def test_collector_reads_the_calls_at_scrape_time(
    call_factory: Callable[..., dict[str, Any]],
) -> None:
    """What a live /metrics endpoint does: the same collector, a growing list."""
    calls: list[dict[str, Any]] = []
    registry = CollectorRegistry()
    registry.register(CallMetricsCollector(lambda: list(calls)))

    first, _ = samples(generate_latest(registry).decode())
    assert not any(name == "callagent_expectations_passed" for name, _ in first)

    calls.append(call_factory("baseline#1"))
    second, types = samples(generate_latest(registry).decode())
    assert (
        value(
            second,
            "callagent_expectations_passed",
            scenario="baseline",
            call="baseline#1",
        )
        == 1
    )
    assert "callagent_run" not in types  # no run source given

    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(CallMetricsCollector(lambda: []))


def test_partial_call_dicts_do_not_break_a_scrape() -> None:
    text = report_metrics_text({"calls": [{"id": "live#1", "scenario": "live"}]})
    values, _ = samples(text)
    assert (
        value(values, "callagent_expectations_passed", scenario="live", call="live#1")
        == 1
    )
    assert value(values, "callagent_run_complete") == 0
