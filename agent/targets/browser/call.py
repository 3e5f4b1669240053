"""A call whose far end is a headless browser that callagent launches.

Theory of operation
-------------------
:meth:`BrowserCall.connect` starts callagent's own signalling server (the
``serve`` WHIP server: ``/ws``, with a fresh bearer token) on 127.0.0.1 and a
free port, adds the page (:mod:`agent.targets.browser.page`) to it, launches
the browser headless and opens the page, which calls the agent over ``/ws``.
The agent plays the scenario's **caller** (it answers the browser's offer; the
roles in the file are who the agent is, not who offered first), the browser
the **callee**.

Steps on the far end's side are carried out in the browser: ``ice.restart``
is ``pc.restartIce()`` and a re-offer, ``hangup`` closes its connection and
says ``bye``. The agent's own steps re-offer over ``/ws`` and the page
answers. At the end the page's ``getStats()`` view goes into the report as
``sides.callee.view`` (:class:`~agent.report.entries.FarEndView`), read
before anything is torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from typing import Any

from aiohttp import web

from agent.call.calls import CallConfig
from agent.call.remote import RemoteCall, RemoteCallSession
from agent.errors import CallError, SignalingError
from agent.observe.model import Side
from agent.report.entries import FarEndView
from agent.signaling.guard import Limits
from agent.signaling.session import (
    CallSession,
    IceCredentials,
    OfferContext,
    Renegotiate,
    ServerBusy,
)
from agent.signaling.whip_server import Listening, ServerSettings, WhipServer
from agent.targets.browser.drivers import Browser, BrowserError, launch
from agent.targets.browser.page import PAGE
from agent.targets.spec import Target

__all__ = ["BrowserCall"]

logger = logging.getLogger(__name__)

PAGE_PATH = "/callagent/far-end"
#: how long a connection to the call's own server may sit idle
CALL_SERVER_IDLE_S = 300.0


class _Session(RemoteCallSession["BrowserCall"]):
    """The one ``/ws`` session of a browser call (a CallSession). Its
    ``accept_offer`` is the browser's re-offer: its own ICE restart."""

    async def restart_ice(self, remote: IceCredentials, end: bool) -> IceCredentials:
        raise SignalingError("a browser target restarts ICE over /ws, not WHIP")

    async def hang_up(self, *, by_remote: bool, reason: str) -> None:
        if by_remote and self.call.hung_up_by is None:
            self.call.hung_up_by = Side.CALLEE
            self.call.note(None, f"hung up by the callee: {reason}")
        self._ended.set()


class _Backend:
    """Answers exactly one offer: the page's (a CallBackend)."""

    def __init__(self, call: BrowserCall) -> None:
        self.call = call
        self.session: _Session | None = None

    async def open_call(
        self, offer: str, context: OfferContext, renegotiate: Renegotiate | None = None
    ) -> tuple[CallSession, str]:
        if self.session is not None:
            raise ServerBusy("this endpoint serves one browser call")
        call = self.call
        answer = await call.answer_first_offer(offer, renegotiate)
        self.session = _Session(call)
        call.remote_info = dataclasses.replace(
            call.remote_info, user_agent=context.user_agent
        )
        return self.session, answer

    def active_calls(self) -> list[dict[str, Any]]:
        return []

    def metrics_text(self) -> bytes:
        return b""


class BrowserCall(RemoteCall):
    """The agent (caller) and a headless browser (callee), over ``/ws``."""

    def __init__(self, config: CallConfig, target: Target) -> None:
        super().__init__(config, side=Side.CALLER, mode=f"browser-{target.browser}")
        self.target = target
        self.browser: Browser | None = None
        self.listening: Listening | None = None
        self.backend = _Backend(self)
        self.remote_info = dataclasses.replace(self.remote_info, target=str(target))
        self._view_taken = False

    async def connect(self) -> None:
        token = secrets.token_urlsafe(16)
        # Browsers open speculative connections they never use; on this
        # private, one-call server they may idle for the whole call.
        limits = Limits(header_timeout_s=CALL_SERVER_IDLE_S)
        server = WhipServer(self.backend, ServerSettings(token=token, limits=limits))

        # Connection: close, so no idle keep-alive connection outlives the
        # page load for the server's guard to close (and log) 10 s later.
        async def page(request: web.Request) -> web.Response:
            return web.Response(
                text=PAGE, content_type="text/html", headers={"Connection": "close"}
            )

        async def no_icon(request: web.Request) -> web.Response:
            return web.Response(status=204, headers={"Connection": "close"})

        server.app.router.add_get(PAGE_PATH, page)
        server.app.router.add_get("/favicon.ico", no_icon)
        self.network.start()
        self.listening = await server.listen("127.0.0.1", 0)
        base = self.listening.base_url
        assert self.target.browser is not None
        self.browser = await launch(self.target.browser)
        self.note(None, f"far end: {self.browser.version}")
        await self.browser.navigate(base + PAGE_PATH)
        ws_url = base.replace("http://", "ws://") + f"/ws?access_token={token}"
        timeout = self.config.connect_timeout_s + 10
        try:
            await self.browser.evaluate(f"call({_js(ws_url)})", timeout)
        except BrowserError as exc:
            raise CallError(f"the browser could not call: {exc}") from exc
        await self.wait_connected()

    # -- the far end's steps, carried out in the browser ------------------
    async def restart_ice(self, side: Side, cause: str | None) -> None:
        if side is self.local_side:
            await super().restart_ice(side, cause)
            return
        self._start_action(self._in_browser("restart()"), "browser: pc.restartIce()")
        await asyncio.sleep(0)

    async def hangup(self, side: Side) -> None:
        if side is self.local_side:
            await super().hangup(side)
            return
        self.hung_up_by = side
        self.note(side, "hangup")
        await self._in_browser("hangup()")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.peer.ended.wait(), 3.0)

    async def _in_browser(self, expression: str) -> Any:
        if self.browser is None:
            raise CallError("the browser is not running")
        try:
            return await self.browser.evaluate(expression)
        except BrowserError as exc:
            raise CallError(f"in the browser: {exc}") from exc

    async def _take_view(self) -> None:
        if self.browser is None or self._view_taken:
            return
        self._view_taken = True
        try:
            raw = await self.browser.evaluate("farView()", 5.0)
        except BrowserError as exc:
            self.note(None, f"no far-end view: {exc}")
            return
        if not isinstance(raw, dict):
            return
        view = FarEndView(
            source="getStats",
            selected_pair_changes=int(raw.get("selected_pair_changes") or 0),
            selected_pairs=[str(p) for p in raw.get("selected_pairs") or []],
            local_ufrags=[str(u) for u in raw.get("local_ufrags") or []],
            dtls_state=_str_or_none(raw.get("dtls_state")),
            connection_state=_str_or_none(raw.get("connection_state")),
            ice_state=_str_or_none(raw.get("ice_state")),
            packets_received=int(raw.get("packets_received") or 0),
            packets_sent=int(raw.get("packets_sent") or 0),
            max_gap_ms=None
            if raw.get("max_gap_ms") is None
            else float(raw["max_gap_ms"]),
            inbound_recent=bool(raw.get("inbound_recent")),
            restarts=int(raw.get("restarts") or 0),
            reoffers_answered=int(raw.get("reoffers_answered") or 0),
            errors=[str(e) for e in raw.get("errors") or []],
        )
        self.remote_info = dataclasses.replace(
            self.remote_info,
            view=view,
            user_agent=_str_or_none(raw.get("user_agent"))
            or self.remote_info.user_agent,
        )

    async def close(self) -> None:
        # The far end's view first, as it was when the scenario ended.
        with contextlib.suppress(Exception):
            await self._take_view()
        try:
            await super().close()
        finally:
            if self.browser is not None:
                await self.browser.close()
            if self.listening is not None:
                await self.listening.close()


def _js(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
