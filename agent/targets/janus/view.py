"""Janus's own view of the call, from its admin API's ``handle_info``.

:class:`HandleSampler` asks for ``handle_info`` every :data:`SAMPLE_S` while
the call runs; :func:`far_end_view` folds the samples into the report's
:class:`~agent.report.entries.FarEndView` (``sides.callee.view``, as a
browser's getStats view): the selected pairs Janus used, its local ufrags (a
restart the agent started adds one, Janus's answer), its ICE and DTLS state,
the audio packets it received and sent, and the longest stretch in which its
received count did not grow (the agent-to-Janus gap: a lower bound, the
distance between two samples that saw audio arrive less one sampling
period). Pure folding, testable without a Janus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import SignalingError
from agent.report.entries import FarEndView

__all__ = ["SAMPLE_S", "HandleSample", "HandleSampler", "far_end_view"]

logger = logging.getLogger(__name__)

SAMPLE_S = 0.25
#: audio must have grown within this long before the last sample (as the
#: matrix's RECENT_S for the agent's own receiver)
RECENT_S = 1.5
_MAX_PAIRS = 10


@dataclass(frozen=True)
class HandleSample:
    at: float
    info: dict[str, Any]


def _webrtc(info: dict[str, Any]) -> dict[str, Any]:
    webrtc = info.get("webrtc")
    return webrtc if isinstance(webrtc, dict) else {}


def _part(info: dict[str, Any], name: str) -> dict[str, Any]:
    """``webrtc.ice`` or ``webrtc.dtls`` of a handle_info (Janus 1.x)."""
    part = _webrtc(info).get(name)
    return part if isinstance(part, dict) else {}


def _packets(info: dict[str, Any], way: str) -> int:
    """Audio packets Janus received (``in``) or sent (``out``), over every
    audio m-line (``webrtc.media.<mid>.stats``)."""
    media = _webrtc(info).get("media")
    total = 0
    for medium in media.values() if isinstance(media, dict) else ():
        if not isinstance(medium, dict) or medium.get("type") != "audio":
            continue
        stats = (medium.get("stats") or {}).get(way) or {}
        total += int(stats.get("packets") or 0)
    return total


def _local_ufrag(info: dict[str, Any]) -> str | None:
    sdp = (info.get("sdps") or {}).get("local")
    if not isinstance(sdp, str):
        return None
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


def far_end_view(
    samples: Sequence[HandleSample], *, reoffers_answered: int, errors: list[str]
) -> FarEndView | None:
    """The samples as the report's far-end view (None: no sample at all)."""
    if not samples:
        return None
    pairs: list[str] = []
    ufrags: list[str] = []
    max_gap_s = 0.0
    last_growth: float | None = None
    previous: int | None = None
    for sample in samples:
        pair = _part(sample.info, "ice").get("selected-pair")
        if isinstance(pair, str) and (not pairs or pairs[-1] != pair):
            pairs.append(pair)
        ufrag = _local_ufrag(sample.info)
        if ufrag is not None and ufrag not in ufrags:
            ufrags.append(ufrag)
        received = _packets(sample.info, "in")
        if previous is not None and received > previous:
            if last_growth is not None:
                max_gap_s = max(max_gap_s, sample.at - last_growth)
            last_growth = sample.at
        elif previous is None and received > 0:
            last_growth = sample.at
        previous = received
    end = samples[-1]
    if last_growth is not None:
        max_gap_s = max(max_gap_s, end.at - last_growth)
    # Two samples a period apart that both saw audio arrive bound no gap at
    # all: the silence between them is at least their distance less a period.
    max_gap_s = max(0.0, max_gap_s - SAMPLE_S)
    dtls = _part(end.info, "dtls")
    flags = end.info.get("flags")
    ice_state = _part(end.info, "ice").get("state")
    return FarEndView(
        source="janus handle_info",
        selected_pair_changes=max(0, len(pairs) - 1),
        selected_pairs=pairs[-_MAX_PAIRS:],
        local_ufrags=ufrags,
        dtls_state=None if not dtls else str(dtls.get("dtls-state")),
        # flags.ready: ICE and DTLS are up and media may flow (its "webrtcup")
        connection_state="connected"
        if isinstance(flags, dict) and flags.get("ready")
        else "not ready",
        ice_state=None if ice_state is None else str(ice_state),
        packets_received=_packets(end.info, "in"),
        packets_sent=_packets(end.info, "out"),
        max_gap_ms=None if last_growth is None else round(max_gap_s * 1000.0, 1),
        inbound_recent=last_growth is not None and end.at - last_growth <= RECENT_S,
        restarts=0,  # Janus never starts one
        reoffers_answered=reoffers_answered,
        errors=errors[-5:],
    )


class HandleSampler:
    """Polls ``handle_info`` while the call runs; keeps every sample."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any] | None]]) -> None:
        self._fetch = fetch
        self.samples: list[HandleSample] = []
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def sample(self) -> None:
        try:
            info = await self._fetch()
        except SignalingError as exc:
            if not self.errors or self.errors[-1] != str(exc):
                self.errors.append(str(exc))
            return
        if info is not None:
            self.samples.append(HandleSample(time.monotonic(), info))

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
