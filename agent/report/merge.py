"""One report from the shard reports of a fleet (``callagent merge``).

Theory of operation
-------------------
A fleet runs one scenario set as N shards (``callagent run --shard I/N``, on
Kubernetes, Ray, or by hand); each writes an ordinary report whose ``shard``
field says which one it is (``{"index": I, "count": N}``). Merging is pure
bookkeeping, and re-runs nothing: a shard that never reported is *named*, not
replayed (a replayed call is load outside the test window, and the gap in the
data is the finding).

The merged report is an ordinary version-1 report with every call of every
shard, the verdict summary over all of them, and ``shards``: how many there
were, which reported, which are missing and which stopped early. It is
``complete`` only when every shard reported and every shard was complete.

Shard reports that cannot belong to one run are refused (bad input): shard
counts that differ, two reports of the same shard, seeds that differ (the
calls would not be the calls of one run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.report.schema import ReportInputError, summarize

__all__ = ["MergeError", "merge_reports", "shard_of"]


class MergeError(ReportInputError):
    """The given reports are not shards of one run (one line, exit 2)."""


def shard_of(report: Mapping[str, Any], name: str) -> tuple[int, int]:
    """``(index, count)`` of a shard report; an unsharded report is 0 of 1."""
    shard = report.get("shard")
    if shard is None:
        return 0, 1
    index = shard.get("index") if isinstance(shard, Mapping) else None
    count = shard.get("count") if isinstance(shard, Mapping) else None
    if (
        not isinstance(index, int)
        or not isinstance(count, int)
        or isinstance(index, bool)
        or isinstance(count, bool)
        or not 0 <= index < count
    ):
        raise MergeError(f"{name}: 'shard' is not an index below a count")
    return index, count


def merge_reports(
    reports: Sequence[tuple[str, Mapping[str, Any]]], *, count: int | None = None
) -> dict[str, Any]:
    """Merge ``(name, report)`` pairs (name: the file, for messages).

    ``count``: the shards the run had, when the caller knows it (a launcher);
    otherwise the reports say.
    """
    if not reports:
        raise MergeError("no shard reports to merge")
    by_index: dict[int, tuple[str, Mapping[str, Any]]] = {}
    seed: Any = reports[0][1].get("seed")
    for name, report in reports:
        index, shard_count = shard_of(report, name)
        if count is None:
            count = shard_count
        if shard_count != count:
            raise MergeError(
                f"{name}: shard {index}/{shard_count}, but the run has {count} shards"
            )
        if report.get("seed") != seed:
            raise MergeError(
                f"{name}: seed {report.get('seed')} differs from {seed}: not shards "
                "of one run (give every shard the same --seed)"
            )
        if index in by_index:
            raise MergeError(
                f"{name}: shard {index}/{count} is also in {by_index[index][0]}"
            )
        by_index[index] = (name, report)
    assert count is not None
    reported = sorted(by_index)
    missing = [i for i in range(count) if i not in by_index]
    incomplete = [i for i in reported if not by_index[i][1].get("complete")]
    first = by_index[reported[0]][1]
    calls = [call for i in reported for call in by_index[i][1].get("calls") or []]
    run_ids = {by_index[i][1].get("run_id") for i in reported}
    reasons = [f"shard {i}/{count} never reported" for i in missing] + [
        f"shard {i}/{count} stopped early: "
        f"{by_index[i][1].get('interrupted') or 'not finished'}"
        for i in incomplete
    ]
    resources = [
        {**sample, "shard": i}
        for i in reported
        for sample in by_index[i][1].get("resources") or []
        if isinstance(sample, Mapping)
    ]
    merged: dict[str, Any] = {
        "version": first.get("version", 1),
        "tool": first.get("tool"),
        "run_id": run_ids.pop() if len(run_ids) == 1 else first.get("run_id"),
        "started_at": min(_times(by_index, "started_at"), default=None),
        "finished_at": max(_times(by_index, "finished_at"), default=None),
        "complete": not reasons,
        "interrupted": "; ".join(reasons) or None,
        "seed": seed,
        "host": first.get("host") or {},
        "shards": {
            "count": count,
            "reported": reported,
            "missing": missing,
            "incomplete": incomplete,
        },
        "calls": calls,
        "summary": summarize(calls),
    }
    if resources:
        merged["resources"] = resources
    return merged


def _times(
    by_index: Mapping[int, tuple[str, Mapping[str, Any]]], key: str
) -> list[str]:
    # ISO 8601 UTC with a fixed format (writer.iso_timestamp): text order is
    # time order.
    return [
        value
        for _, report in by_index.values()
        if isinstance(value := report.get(key), str)
    ]
