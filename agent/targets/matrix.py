"""The resilience matrix: field cause x what the far end did about it.

One row per matrix scenario (``scenarios/matrix/``): restarts and
rehandshakes by side (the agent's own, the far end's), the longest media gap
each way, whether media flowed again by the end, and a verdict. A row the
target cannot perform is **refused** (the reason, no call); a row whose
recovery the target's capabilities say cannot happen is **expected to fail**
and its verdict says so, instead of a red cell that is no news.

"Recovered" is judged on the wire: the call is connected at the end and
audio arrived in the last :data:`RECENT_S` seconds of the call in every
direction someone observed (the agent's receive side always; the far end's
when it reports its own view, as a browser does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from agent.targets.spec import Target

__all__ = [
    "CAUSES",
    "MatrixRow",
    "matrix_json",
    "matrix_junit",
    "matrix_markdown",
    "row_of",
    "shortfall",
]

#: Media must have arrived this close to the end of the call to count as flowing.
RECENT_S = 1.5


#: matrix scenario -> the cause it stands for (the row's label)
CAUSES = {
    "matrix-baseline": "none (baseline)",
    "matrix-ice-restart-agent": "ICE restart by the agent",
    "matrix-ice-restart-far-end": "ICE restart by the far end",
    "matrix-nat-rebind": "NAT rebind, agent recovers (restart)",
    "matrix-nat-rebind-no-recovery": "NAT rebind, nobody restarts",
    "matrix-blackhole": "4 s blackhole, agent recovers (restart)",
    "matrix-cert-rotation": "DTLS certificate rotation by the agent",
}


def shortfall(scenario: str, target: Target) -> str | None:
    """Why the target's capabilities say this row cannot come out right, or
    None when they promise it can."""
    caps = target.capabilities
    if scenario == "matrix-nat-rebind-no-recovery" and caps.follows_moved_peer is False:
        # Only a far end that follows a moved peer gets the agent's media path
        # back without a restart (Firefox does not, issue 13).
        return "does not follow a moved peer"
    if scenario in ("matrix-cert-rotation", "matrix-ice-restart-agent"):
        if not caps.answers_reoffers:
            return "answers no re-offers"
        if caps.takes_ice_restart is False:
            # The restart is rejected (old ufrag in the answer); the rotation
            # rides on one, so it cannot complete either.
            return "answers the agent's ICE restart with its old credentials"
    if scenario == "matrix-cert-rotation" and caps.takes_new_certificate is False:
        return "keeps its old DTLS association on a new certificate"
    return None


@dataclass(frozen=True)
class MatrixRow:
    scenario: str
    cause: str
    #: ICE restarts started by the agent / by the far end
    restarts_agent: int | None = None
    restarts_far_end: int | None = None
    rehandshakes_agent: int | None = None
    rehandshakes_far_end: int | None = None
    #: longest media gap the agent heard (far end -> agent), ms
    gap_to_agent_ms: float | None = None
    #: longest gap the far end heard (agent -> far end), ms; None: not observed
    gap_to_far_end_ms: float | None = None
    recovered: bool | None = None
    #: PASS, FAIL, ERROR, REFUSED, or XFAIL (failed as its capabilities say)
    verdict: str = "ERROR"
    note: str = ""


def _count(metrics: Mapping[str, Any], name: str, key: str) -> int | None:
    value = metrics.get(name, {})
    got = value.get(key) if isinstance(value, Mapping) else None
    return got if isinstance(got, int) else None


def _recent(arrival_ms: Any, duration_ms: float) -> bool:
    return isinstance(arrival_ms, int | float) and (
        arrival_ms >= duration_ms - RECENT_S * 1000.0
    )


def recovered(call: Mapping[str, Any]) -> bool:
    """Connected at the end, with audio arriving at the end wherever observed."""
    if call.get("final_state") != "connected" or call.get("error"):
        return False
    duration = float(call.get("duration_ms") or 0.0)
    local = str(call.get("local_side", "caller"))
    media = call.get("media", {})
    flowing = True
    for direction, entry in media.items():
        if not isinstance(entry, Mapping) or entry.get("sends") is False:
            continue
        if entry.get("observed", True) is False:
            continue
        # A loopback call's clock starts with the call; arrivals are on it.
        if direction.endswith(f"_to_{local}") or call.get("mode") == "loopback":
            flowing = flowing and _recent(entry.get("last_arrival_ms"), duration)
    view = _far_view(call)
    if view is not None and view.get("inbound_recent") is not None:
        flowing = flowing and bool(view["inbound_recent"])
    return flowing


def _far_view(call: Mapping[str, Any]) -> Mapping[str, Any] | None:
    local = str(call.get("local_side", "caller"))
    far = "callee" if local == "caller" else "caller"
    side = call.get("sides", {}).get(far, {})
    view = side.get("view") if isinstance(side, Mapping) else None
    return view if isinstance(view, Mapping) else None


def row_of(
    call: Mapping[str, Any], *, cause: str, shortfall: str | None, passed: bool
) -> MatrixRow:
    """The matrix row of one finished call (its report entry, as JSON);
    ``shortfall`` is :func:`shortfall`'s reason the target cannot do the row."""
    metrics = call.get("metrics") or {}
    local = str(call.get("local_side", "caller"))
    far = "callee" if local == "caller" else "caller"
    media = call.get("media", {})
    to_agent = media.get(f"{far}_to_{local}", {})
    to_far = media.get(f"{local}_to_{far}", {})
    gap_far = to_far.get("max_gap_ms") if to_far.get("observed", True) else None
    view = _far_view(call)
    if gap_far is None and view is not None:
        gap_far = view.get("max_gap_ms")
    back = recovered(call)
    if call.get("error") and not call.get("connected"):
        verdict = "ERROR"
    elif passed and back:
        verdict = "PASS"
    elif shortfall is not None:
        # Media may well flow (a far end that keeps its old DTLS association
        # still carries audio), but the row's expectations did not hold, as
        # the target's capabilities say.
        verdict = "XFAIL"
    else:
        verdict = "FAIL"
    note = str(call.get("error") or "")
    if not back:
        note = "; ".join(filter(None, [note, *_silences(call, to_agent, view)]))
    if not passed:
        note = "; ".join(filter(None, [note, *_failed_checks(call)]))
    if verdict == "PASS" and shortfall is not None:
        note = "recovered, better than its capabilities promise"
    # Even a PASS row says when the far end refused the agent's step.
    note = "; ".join(filter(None, [note, *_unfinished(call)]))
    if verdict == "XFAIL":
        note = "; ".join(filter(None, [f"expected: the far end {shortfall}", note]))
    return MatrixRow(
        scenario=str(call.get("scenario", "")),
        cause=cause,
        restarts_agent=_count(metrics, "ice_restarts", "local"),
        restarts_far_end=_count(metrics, "ice_restarts", "remote"),
        rehandshakes_agent=_count(metrics, "dtls_rehandshakes", "local"),
        rehandshakes_far_end=_count(metrics, "dtls_rehandshakes", "remote"),
        gap_to_agent_ms=to_agent.get("max_gap_ms"),
        gap_to_far_end_ms=gap_far,
        recovered=back,
        verdict=verdict,
        note=note,
    )


def _unfinished(call: Mapping[str, Any]) -> list[str]:
    """Restarts and rehandshakes that did not complete, in words: a call can
    stay up on the old association while a new one never came (Janus after
    the agent's new certificate, GStreamer after the agent's ICE restart)."""
    local = str(call.get("local_side", "caller"))
    said: list[str] = []
    for event in call.get("events", []):
        kind = event.get("type")
        if kind not in ("ice_restart", "dtls_rehandshake"):
            continue
        if event.get("side") not in (None, local):
            continue  # the far side's record of it (a loopback call has both)
        outcome = (event.get("detail") or {}).get("outcome")
        if outcome in (None, "completed"):
            continue
        who = "agent" if event.get("initiator") == "local" else "far end"
        what = "ICE restart" if kind == "ice_restart" else "DTLS rehandshake"
        if outcome == "rejected":
            outcome = "rejected (the answer kept the old ICE credentials)"
        said.append(f"{what} by the {who} {outcome}")
    return list(dict.fromkeys(said))


def _failed_checks(call: Mapping[str, Any]) -> list[str]:
    """The scenario's expectations that did not hold, as ``name: got X``
    (call_up is said by :func:`_silences` already)."""
    checks = call.get("expectations", {}).get("checks", [])
    return [
        f"{check.get('name')}: got {check.get('actual')}"
        for check in checks
        if isinstance(check, Mapping)
        and not check.get("passed")
        and check.get("name") != "call_up"
    ]


def _silences(
    call: Mapping[str, Any], to_agent: Mapping[str, Any], view: Mapping[str, Any] | None
) -> list[str]:
    """Why the call did not count as recovered, in words."""
    said = []
    if call.get("final_state") != "connected":
        said.append(f"agent {call.get('final_state')} at the end")
    last = to_agent.get("last_arrival_ms")
    if isinstance(last, int | float) and not _recent(last, float(call["duration_ms"])):
        said.append(f"no audio far end->agent after {last / 1000:.1f} s")
    if view is not None and view.get("inbound_recent") is False:
        said.append(f"far end: audio stopped, its ICE {view.get('ice_state')}")
    return said


COLUMNS = (
    ("cause", "cause"),
    ("restarts_agent", "ICE rst A"),
    ("restarts_far_end", "ICE rst F"),
    ("rehandshakes_agent", "DTLS A"),
    ("rehandshakes_far_end", "DTLS F"),
    ("gap_to_agent_ms", "gap F→A ms"),
    ("gap_to_far_end_ms", "gap A→F ms"),
    ("recovered", "recovered"),
    ("verdict", "verdict"),
    ("note", "note"),
)


def cell(row: MatrixRow, name: str) -> str:
    value = getattr(row, name)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def matrix_markdown(target: Target, rows: Sequence[MatrixRow]) -> str:
    caps = ", ".join(
        f"{name.replace('_', ' ')}: {'?' if v is None else 'yes' if v else 'no'}"
        for name, v in target.capabilities.as_dict().items()
    )
    lines = [
        f"### Resilience matrix: `{target}`",
        "",
        f"Capabilities: {caps}.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [cell(row, name).replace("|", "/") for name, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def matrix_json(
    target: Target, rows: Sequence[MatrixRow], calls: Sequence[Mapping[str, Any]]
) -> str:
    doc = {
        "version": 1,
        "kind": "matrix",
        "target": str(target),
        "capabilities": target.capabilities.as_dict(),
        "rows": [asdict(row) for row in rows],
        "calls": list(calls),
    }
    return json.dumps(doc, indent=2) + "\n"


def matrix_junit(target: Target, rows: Sequence[MatrixRow]) -> str:
    failures = sum(row.verdict in ("FAIL", "ERROR") for row in rows)
    skipped = sum(row.verdict in ("REFUSED", "XFAIL") for row in rows)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuite name={quoteattr(f"matrix {target}")} tests="{len(rows)}" '
        f'failures="{failures}" skipped="{skipped}">',
    ]
    for row in rows:
        summary = "; ".join(f"{title}: {cell(row, name)}" for name, title in COLUMNS)
        out.append(
            f"  <testcase classname={quoteattr(str(target))} "
            f"name={quoteattr(row.scenario)}>"
        )
        if row.verdict in ("FAIL", "ERROR"):
            out.append(
                f"    <failure message={quoteattr(row.note or row.verdict)}>"
                f"{escape(summary)}</failure>"
            )
        elif row.verdict in ("REFUSED", "XFAIL"):
            out.append(f"    <skipped message={quoteattr(row.note or row.verdict)}/>")
        out.append(f"    <system-out>{escape(summary)}</system-out>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
