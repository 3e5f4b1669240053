"""Prometheus text exposition of call results.

Theory of operation
-------------------
:class:`CallMetricsCollector` is a ``prometheus_client`` custom collector: on
every scrape it asks a callable for the current call dicts (schema version 1,
``docs/report.md``) and turns them into metric families. The same collector
serves two uses:

* :func:`report_metrics_text` renders a finished report file once, through a
  private ``CollectorRegistry`` (nothing leaks into the global default registry);
* a live ``/metrics`` endpoint registers it with a callable returning the calls
  so far (e.g. ``ReportWriter.calls``), so a scrape always matches the JSON.

The callable must return a snapshot that is safe to iterate from the exporter's
thread (a new list, as ``ReportWriter.calls`` does).

Naming follows the Prometheus conventions (https://prometheus.io/docs/practices/
naming/): a ``callagent_`` prefix, base units in the name, and seconds rather
than the milliseconds of the JSON report — ``media_gap_ms`` 300.2 becomes
``callagent_media_gap_max_seconds`` 0.3002. Counters end in ``_total``.
Every per-call series carries ``scenario`` and ``call`` (the call id); a soak
run therefore exposes a few dozen series per call, and a long-running endpoint
should hand the collector a bounded list (e.g. the last N calls).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from agent.observe.model import Level
from agent.report.schema import (
    CONTRACT_METRICS,
    DIRECTIONS,
    Verdict,
    call_verdict,
    media,
    metric,
    metric_level,
    number,
    summarize,
)

PREFIX = "callagent"

CALL_LABELS = ("scenario", "call")

#: Numeric value of a metric level for ``callagent_metric_level``.
LEVEL_VALUE = {Level.GOOD: 0, Level.WARNING: 1, Level.CRITICAL: 2}

#: Packet counters per direction: JSON key -> metric name stem.
PACKET_COUNTERS = {
    "packets_sent": "sent",
    "packets_received": "received",
    "packets_lost": "lost",
    "packets_delayed": "delayed",
    "packets_duplicated": "duplicated",
    "packets_reordered": "reordered",
}

CallsSource = Callable[[], Iterable[Mapping[str, Any]]]
RunSource = Callable[[], Mapping[str, Any]]


class CallMetricsCollector:
    """Metric families for the calls ``calls()`` returns at scrape time.

    With ``run`` (a callable returning the report's top-level fields), run-wide
    series are added too: ``callagent_run_info``, ``callagent_run_complete`` and
    ``callagent_run_calls{verdict}``.
    """

    def __init__(self, calls: CallsSource, *, run: RunSource | None = None) -> None:
        self._calls = calls
        self._run = run

    def describe(self) -> Iterator[Metric]:
        # Names only (no samples), so a registry can refuse a duplicate
        # registration without calling ``calls()``.
        yield from _CallFamilies().families()
        if self._run is not None:
            yield from _run_families(None, [])

    def collect(self) -> Iterator[Metric]:
        calls = list(self._calls())
        families = _CallFamilies()
        for call in calls:
            families.add(call)
        yield from families.families()
        if self._run is not None:
            yield from _run_families(self._run(), calls)


def report_metrics_text(report: Mapping[str, Any]) -> str:
    """Prometheus text format (0.0.4) for one report, e.g. a finished run."""
    registry = CollectorRegistry()
    calls: list[Mapping[str, Any]] = list(report.get("calls") or [])
    registry.register(CallMetricsCollector(lambda: calls, run=lambda: report))
    return generate_latest(registry).decode("utf-8")


class _CallFamilies:
    """One family per metric name, filled call by call."""

    def __init__(self) -> None:
        labels = list(CALL_LABELS)
        by_initiator = [*labels, "initiator"]
        by_direction = [*labels, "direction"]
        self.ice_restarts = CounterMetricFamily(
            f"{PREFIX}_ice_restarts",
            "ICE restarts (new ICE generations after the initial one, RFC 8445 "
            "section 9) per call, by initiator relative to the call's local side.",
            labels=by_initiator,
        )
        self.dtls_rehandshakes = CounterMetricFamily(
            f"{PREFIX}_dtls_rehandshakes",
            "DTLS handshakes started after the initial one completed, per call, "
            "by initiator relative to the call's local side.",
            labels=by_initiator,
        )
        self.selected_pair_changes = CounterMetricFamily(
            f"{PREFIX}_selected_pair_changes",
            "Selected ICE candidate pair changes within one ICE generation.",
            labels=labels,
        )
        self.metric_level = GaugeMetricFamily(
            f"{PREFIX}_metric_level",
            "Threshold level of a contract metric: 0 good, 1 warning, 2 critical.",
            labels=[*labels, "metric"],
        )
        self.media_gap_max = GaugeMetricFamily(
            f"{PREFIX}_media_gap_max_seconds",
            "Longest interruption of received media in one direction.",
            labels=by_direction,
            unit="seconds",
        )
        self.media_jitter = GaugeMetricFamily(
            f"{PREFIX}_media_jitter_seconds",
            "Interarrival jitter of received media (RFC 3550 section 6.4.1).",
            labels=by_direction,
            unit="seconds",
        )
        self.packets = {
            stem: CounterMetricFamily(
                f"{PREFIX}_packets_{stem}",
                f"Media packets {stem} in one direction of a call.",
                labels=by_direction,
            )
            for stem in PACKET_COUNTERS.values()
        }
        self.setup = GaugeMetricFamily(
            f"{PREFIX}_call_setup_seconds",
            "Time from the start of the call to connected (ICE and DTLS done).",
            labels=labels,
            unit="seconds",
        )
        self.duration = GaugeMetricFamily(
            f"{PREFIX}_call_duration_seconds",
            "Duration of the call.",
            labels=labels,
            unit="seconds",
        )
        self.connected = GaugeMetricFamily(
            f"{PREFIX}_call_connected",
            "1 if the call ever reached the connected state, else 0.",
            labels=labels,
        )
        self.errored = GaugeMetricFamily(
            f"{PREFIX}_call_errored",
            "1 if the call could not be carried out (the report's error), else 0.",
            labels=labels,
        )
        self.expectations_passed = GaugeMetricFamily(
            f"{PREFIX}_expectations_passed",
            "1 if the call passed: no error and every expectation met, else 0.",
            labels=labels,
        )

    def add(self, call: Mapping[str, Any]) -> None:
        ids = [str(call.get("scenario") or "unknown"), str(call.get("id") or "unknown")]
        for name, family in (
            ("ice_restarts", self.ice_restarts),
            ("dtls_rehandshakes", self.dtls_rehandshakes),
        ):
            value = metric(call, name)
            total = number(value.get("total"))
            if total is None:
                continue
            local = number(value.get("local")) or 0.0
            remote = number(value.get("remote")) or 0.0
            # model.count_metric: a network-initiated event counts toward the
            # total only, so the three initiators add up to the total.
            network = max(total - local - remote, 0.0)
            for initiator, count in (
                ("local", local),
                ("remote", remote),
                ("network", network),
            ):
                family.add_metric([*ids, initiator], count)
        for name in CONTRACT_METRICS:
            level = metric_level(metric(call, name))
            if level is not None:
                self.metric_level.add_metric([*ids, name], LEVEL_VALUE[level])
        pair_changes = number((call.get("metrics") or {}).get("selected_pair_changes"))
        if pair_changes is not None:
            self.selected_pair_changes.add_metric(ids, pair_changes)

        for direction in DIRECTIONS:
            stats = media(call, direction)
            labels = [*ids, direction]
            _add_ms(self.media_gap_max, labels, stats.get("max_gap_ms"))
            _add_ms(self.media_jitter, labels, stats.get("jitter_ms"))
            for key, stem in PACKET_COUNTERS.items():
                packets = number(stats.get(key))
                if packets is not None:
                    self.packets[stem].add_metric(labels, packets)

        _add_ms(self.setup, ids, call.get("setup_ms"))
        _add_ms(self.duration, ids, call.get("duration_ms"))
        if isinstance(call.get("connected"), bool):
            self.connected.add_metric(ids, 1.0 if call["connected"] else 0.0)
        verdict = call_verdict(call)
        self.errored.add_metric(ids, 1.0 if verdict is Verdict.ERROR else 0.0)
        self.expectations_passed.add_metric(
            ids, 1.0 if verdict is Verdict.PASS else 0.0
        )

    def families(self) -> Iterator[Metric]:
        yield self.ice_restarts
        yield self.dtls_rehandshakes
        yield self.selected_pair_changes
        yield self.metric_level
        yield self.media_gap_max
        yield self.media_jitter
        yield from self.packets.values()
        yield self.setup
        yield self.duration
        yield self.connected
        yield self.errored
        yield self.expectations_passed


def _run_families(
    report: Mapping[str, Any] | None, calls: list[Mapping[str, Any]]
) -> Iterator[Metric]:
    info = InfoMetricFamily(
        f"{PREFIX}_run",
        "The run: id, tool version and seed (replay with the same seed).",
    )
    complete = GaugeMetricFamily(
        f"{PREFIX}_run_complete",
        "1 once the whole run finished normally, 0 while running or if interrupted.",
    )
    by_verdict = GaugeMetricFamily(
        f"{PREFIX}_run_calls",
        "Calls in the run so far, by verdict.",
        labels=["verdict"],
    )
    if report is not None:
        info.add_metric(
            [],
            {
                "run_id": str(report.get("run_id") or ""),
                "tool": str(report.get("tool") or ""),
                "seed": "" if report.get("seed") is None else str(report["seed"]),
            },
        )
        complete.add_metric([], 1.0 if report.get("complete") else 0.0)
        summary = summarize(calls)
        for verdict, key in (
            (Verdict.PASS, "passed"),
            (Verdict.FAIL, "failed"),
            (Verdict.ERROR, "errors"),
            (Verdict.INCONCLUSIVE, "inconclusive"),
        ):
            by_verdict.add_metric([verdict.lower()], summary.get(key, 0))
    yield info
    yield complete
    yield by_verdict


def _add_ms(family: GaugeMetricFamily, labels: list[str], milliseconds: Any) -> None:
    value = number(milliseconds)
    if value is not None:
        family.add_metric(labels, value / 1000)
