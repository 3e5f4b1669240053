"""The report layer: the JSON report (the source of truth) and its views.

* :mod:`agent.report.writer` — ``ReportWriter``: the version-1 JSON report,
  rewritten atomically after every call; ``write_json_atomic`` for other files.
* :mod:`agent.report.schema` — schema version, verdicts, tolerant accessors,
  ``load_report`` for ``callagent report FILE``.
* :mod:`agent.report.table` — the results table and a call's event timeline.
* :mod:`agent.report.junit` — JUnit XML for CI.
* :mod:`agent.report.openmetrics` — Prometheus text, and the collector a live
  ``/metrics`` endpoint reuses.

The layer reads plain JSON-ready dicts (``docs/report.md``) and imports nothing
from the call, scenario or cli layers.
"""
