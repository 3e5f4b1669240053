"""The agent as the callee of remote far ends: the backend of ``callagent serve``.

:class:`CallServer` (``mode: whip-server`` / ``ws-server``) is the
:class:`~agent.signaling.session.CallBackend` behind ``callagent serve``. It
answers offers with new :class:`~agent.call.remote.RemoteCall` s up to a
limit, keeps a live view of them for ``GET /calls`` and ``GET /metrics``, and
writes each ended call's report to ``--report-dir`` (one version-1 report per
call). :class:`ServedCall` is one such call as the signalling sees it (its
:class:`~agent.signaling.session.CallSession`) and runs it to its report.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from agent.call.calls import CallConfig, peer_at
from agent.call.remote import RemoteCall, RemoteCallSession
from agent.errors import AgentError
from agent.observe.model import Side
from agent.report.entries import RemoteIce
from agent.report.openmetrics import CallMetricsCollector
from agent.report.schema import call_verdict
from agent.report.writer import ReportWriter
from agent.signaling.session import (
    CallSession,
    IceCredentials,
    OfferContext,
    Renegotiate,
    ServerBusy,
)

logger = logging.getLogger(__name__)

__all__ = ["CallServer", "ServedCall"]


class ServedCall(RemoteCallSession[RemoteCall]):
    """One call answered by :class:`CallServer`; the signalling's CallSession."""

    def __init__(self, server: CallServer, call: RemoteCall, context: OfferContext):
        super().__init__(call)
        self.server = server
        self.context = context
        self.stop = asyncio.Event()
        #: set once the agent side is connected (``setup_ms`` is known)
        self.connected = asyncio.Event()
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.end_reason: str | None = None

    # -- CallSession (the rest: RemoteCallSession) ---------------------------
    async def restart_ice(self, remote: IceCredentials, end: bool) -> IceCredentials:
        peer = self.call.peer
        ufrag, pwd, lines = await peer.accept_ice_restart(
            remote.ufrag, remote.pwd, list(remote.candidates), end=end
        )
        info = self.call.remote_info
        ice = RemoteIce(
            ufrag=remote.ufrag,
            candidates=0 if info.ice is None else info.ice.candidates,
        )
        self.call.remote_info = dataclasses.replace(info, ice=ice)
        return IceCredentials(ufrag, pwd, tuple(lines))

    async def hang_up(self, *, by_remote: bool, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            side = self.call.local_side.other if by_remote else self.call.local_side
            self.call.hung_up_by = side
            self.call.note(None, f"hung up by the {side}: {reason}")
        self.stop.set()
        if self.task is not None and self.task is not asyncio.current_task():
            # Return once the report is written, so a client that DELETEs and
            # then reads the report directory finds it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), timeout=10)

    # -- lifecycle ----------------------------------------------------------
    async def run(self) -> None:
        call = self.call
        final_state = "never_connected"
        try:
            connecting = asyncio.create_task(call.wait_connected())
            stopping = asyncio.create_task(self.stop.wait())
            try:
                await asyncio.wait(
                    {connecting, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
            if connecting.done():
                connecting.result()  # raises CallError if it never connected
                self.connected.set()
                ending = asyncio.create_task(call.ended.wait())
                stopping = asyncio.create_task(self.stop.wait())
                try:
                    await asyncio.wait(
                        {ending, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    ending.cancel()
                    stopping.cancel()
                if not self.stop.is_set() and call.final_state() != "closed":
                    # Nobody hung up, yet the call is over: the far end went away
                    # (ICE consent expired). That is no pass (issue 11, S7).
                    call.error = call.error or (
                        f"the far end vanished: the call went {call.final_state()} "
                        "with no hang-up (no WHIP DELETE or /ws bye)"
                    )
            else:
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting
                if call.setup_ms is None and call.error is None:
                    call.error = f"hung up before connecting ({self.end_reason})"
            final_state = call.final_state()
        except AgentError as exc:
            call.error = str(exc)
            final_state = call.final_state()
        except asyncio.CancelledError:
            call.error = call.error or "interrupted"
            final_state = call.final_state()
        except Exception as exc:  # one broken call must not take the server down
            logger.exception("%s: internal error", self.call_id)
            call.error = f"internal error: {type(exc).__name__}: {exc}"
            final_state = call.final_state()
        finally:
            await asyncio.shield(call.close())
            self._ended.set()
        result = call.result(duration_ms=(time.monotonic() - self.started) * 1000)
        result["final_state"] = final_state
        result.update(self.server.call_fields(self))
        result["expectations"] = {"passed": call.error is None, "checks": []}
        self.server.finished(self, result)

    def live(self) -> dict[str, Any]:
        """The call as it is now, in report form."""
        result = self.call.result(duration_ms=(time.monotonic() - self.started) * 1000)
        result.update(self.server.call_fields(self))
        return result


class CallServer:
    """Answers offers with observed agent calls; the backend of ``serve``."""

    def __init__(
        self,
        *,
        address: str = "127.0.0.1",
        max_calls: int = 20,
        report_dir: Path | None = None,
        run_meta: Callable[[int], dict[str, Any]] | None = None,
        connect_timeout_s: float = 10.0,
        recent_window: int = 100,
    ) -> None:
        self.address = address
        self.max_calls = max_calls
        self.report_dir = report_dir
        self.connect_timeout_s = connect_timeout_s
        self._run_meta = run_meta or (lambda seed: {"seed": seed})
        self.calls: dict[str, ServedCall] = {}
        #: reserved slots: offers being answered count against the limit too
        self._slots = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=recent_window
        )
        self.ended_by_verdict: collections.Counter[str] = collections.Counter()
        self.report_errors: list[str] = []
        self._registry = CollectorRegistry()
        self._registry.register(CallMetricsCollector(self._metric_calls))
        self._registry.register(_ServerCollector(self))

    # -- CallBackend --------------------------------------------------------
    async def open_call(
        self,
        offer: str,
        context: OfferContext,
        renegotiate: Renegotiate | None = None,
    ) -> tuple[CallSession, str]:
        if self._slots >= self.max_calls:
            raise ServerBusy(
                f"at the limit of {self.max_calls} concurrent calls; try again later"
            )
        self._slots += 1
        try:
            served = self._new_call(context)
            call = served.call
            try:
                answer = await call.answer_first_offer(
                    offer, renegotiate, bind_on=self.address
                )
            except BaseException:
                await call.close()
                raise
        except BaseException:
            self._slots -= 1
            raise
        self.calls[served.call_id] = served
        served.task = asyncio.create_task(served.run(), name=served.call_id)
        logger.info("%s: call from %s", served.call_id, context.remote_address)
        return served, answer

    def _new_call(self, context: OfferContext) -> ServedCall:
        prefix = "whip" if context.mode == "whip-server" else "ws"
        call_id = f"{prefix}-{secrets.token_hex(6)}"
        seed = random.SystemRandom().randrange(1 << 31)
        config = CallConfig(
            call_id=call_id,
            caller=peer_at(self.address),
            callee=peer_at(self.address),
            connect_timeout_s=self.connect_timeout_s,
            seed=seed,
        )
        call = RemoteCall(config, side=Side.CALLEE, mode=context.mode)
        call.remote_info = dataclasses.replace(
            call.remote_info,
            remote_address=context.remote_address,
            user_agent=context.user_agent,
        )
        return ServedCall(self, call, context)

    def call_fields(self, served: ServedCall) -> dict[str, Any]:
        return {
            "scenario": served.context.mode,
            "scenario_file": None,
            "scenario_sha256": None,
            "ended_by": served.end_reason,
        }

    def finished(self, served: ServedCall, result: dict[str, Any]) -> None:
        self.calls.pop(served.call_id, None)
        self._slots -= 1
        self.recent.append(result)
        self.ended_by_verdict[str(call_verdict(result))] += 1
        logger.info("%s: ended (%s)", served.call_id, call_verdict(result))
        if self.report_dir is None:
            return
        path = self.report_dir / f"{served.call_id}.json"
        try:
            writer = ReportWriter(path)
            meta = self._run_meta(served.call.config.seed)
            meta["started_at"] = result["started_at"]
            writer.begin(meta)
            writer.add_call(result)
            writer.finish()
        except AgentError as exc:
            # The server keeps serving; the failure is logged and in /metrics.
            logger.error("%s", exc)
            self.report_errors.append(str(exc))

    def active_calls(self) -> list[dict[str, Any]]:
        out = []
        for served in list(self.calls.values()):
            live = served.live()
            local = live["sides"][live["local_side"]]
            out.append(
                {
                    "id": live["id"],
                    "mode": live["mode"],
                    "state": local["final_state"],
                    "started_at": live["started_at"],
                    "duration_ms": live["duration_ms"],
                    "setup_ms": live["setup_ms"],
                    "remote_address": served.context.remote_address,
                    "user_agent": served.context.user_agent,
                    "selected_pair": local["selected_pair"],
                    "metrics": live["metrics"],
                    "media": live["media"],
                }
            )
        return out

    def metrics_text(self) -> bytes:
        return bytes(generate_latest(self._registry))

    def _metric_calls(self) -> list[dict[str, Any]]:
        return [*self.recent, *(served.live() for served in list(self.calls.values()))]

    async def shutdown(self, reason: str = "server shutdown") -> None:
        """Hang up every active call and wait until its report is written."""
        served = list(self.calls.values())
        await asyncio.gather(
            *(s.hang_up(by_remote=False, reason=reason) for s in served),
            return_exceptions=True,
        )


class _ServerCollector:
    """Server-wide series next to the per-call ones."""

    def __init__(self, server: CallServer) -> None:
        self._server = server

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._families(with_samples=True)

    def _families(
        self, with_samples: bool = False
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        active = GaugeMetricFamily(
            "callagent_server_active_calls", "Calls in progress on this server."
        )
        limit = GaugeMetricFamily(
            "callagent_server_max_calls", "Concurrent calls this server accepts."
        )
        ended = CounterMetricFamily(
            "callagent_server_calls_ended",
            "Calls that ended on this server since it started, by verdict.",
            labels=["verdict"],
        )
        report_errors = CounterMetricFamily(
            "callagent_server_report_write_errors",
            "Call reports that could not be written to the report directory.",
        )
        if with_samples:
            server = self._server
            active.add_metric([], len(server.calls))
            limit.add_metric([], server.max_calls)
            for verdict in ("PASS", "FAIL", "ERROR"):
                ended.add_metric(
                    [verdict.lower()], server.ended_by_verdict.get(verdict, 0)
                )
            report_errors.add_metric([], len(server.report_errors))
        yield active
        yield limit
        yield ended
        yield report_errors
