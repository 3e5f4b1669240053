"""A Janus HTTP API client (the Janus "REST" transport): one session, one
plugin handle, the events of the session's long poll, and the admin API's
``handle_info``.

Theory of operation
-------------------
The Janus API is request/response over POST plus an event stream::

    POST /janus                 {"janus": "create"}          -> session id
    POST /janus/<s>             {"janus": "attach", plugin}  -> handle id
    POST /janus/<s>/<h>         {"janus": "message", body, jsep}
                                -> "ack" now; the plugin's reply later, as an
                                   event with the same transaction
    GET  /janus/<s>?maxev=N     long poll: up to N events, or a keepalive
                                after ~30 s of nothing
    POST /janus/<s>             {"janus": "keepalive"}  (a session with no
                                request for session_timeout, 60 s, is reaped)
    POST /janus/<s>/<h>         {"janus": "detach"}; POST /janus/<s> destroy
    POST /admin/<s>/<h>         {"janus": "handle_info", "admin_secret": ...}

:class:`JanusClient` keeps one long poll running while the session lives
(:meth:`JanusClient.events` is everything it delivered, with arrival times)
and resolves a :meth:`JanusClient.message`'s reply by its transaction. A
plugin's reply carrying ``error`` is an error, as is a ``{"janus": "error"}``
response: both become one :class:`~agent.errors.SignalingError` sentence
naming the request, Janus's code and reason. aiohttp's exceptions are
translated here and nowhere else.

``socket_factory`` opens the TCP sockets (aiohttp ``TCPConnector``'s hook): a
Janus inside a kernel-lab namespace is reached from a socket opened there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from agent.errors import SignalingError
from agent.signaling.whip_client import check_http_url

__all__ = ["JanusClient", "JanusEvent", "SocketFactory", "check_janus_url"]

logger = logging.getLogger(__name__)

#: aiohttp's socket hook: (family, type, proto, canonname, sockaddr) -> socket
SocketFactory = Callable[[tuple[Any, ...]], socket.socket]

TIMEOUT_S = 10.0
#: Janus answers a long poll after 30 s of no event; a little slack on top.
LONG_POLL_S = 40.0
#: the Janus JS library's keepalive period; session_timeout defaults to 60 s
KEEPALIVE_S = 25.0
MAX_EVENTS = 10


def check_janus_url(url: str) -> URL:
    """``url`` as a Janus API base URL, or one :class:`SignalingError` line."""
    return check_http_url(url, "a Janus API URL must be http(s)://HOST/…")


@dataclass(frozen=True)
class JanusEvent:
    """One event the long poll delivered, with its arrival time."""

    at: float
    kind: str
    body: dict[str, Any] = field(default_factory=dict)


def _transaction() -> str:
    return secrets.token_hex(6)


class JanusClient:
    """One Janus session with one plugin handle; close it with :meth:`close`."""

    def __init__(
        self,
        url: str,
        *,
        admin_url: str | None = None,
        admin_secret: str | None = None,
        socket_factory: SocketFactory | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.url = check_janus_url(url)
        self.admin_url = None if admin_url is None else check_janus_url(admin_url)
        self.admin_secret = admin_secret
        self._timeout_s = timeout_s
        connector = aiohttp.TCPConnector(socket_factory=socket_factory)
        self._http = aiohttp.ClientSession(connector=connector)
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self.events: list[JanusEvent] = []
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: why the long poll stopped (the session is gone), None while it runs
        self.poll_error: str | None = None

    # -- HTTP ------------------------------------------------------------
    async def _call(
        self,
        method: str,
        url: URL,
        what: str,
        payload: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout_s)
        try:
            async with self._http.request(
                method, url, json=payload, timeout=timeout
            ) as response:
                text = await response.text(errors="replace")
                if response.status != 200:
                    first = text.strip().splitlines()[0][:200] if text.strip() else ""
                    raise SignalingError(
                        f"Janus {what} ({method} {url}) answered {response.status}"
                        + (f": {first}" if first else "")
                    )
                try:
                    return await response.json(content_type=None)
                except ValueError as exc:
                    raise SignalingError(
                        f"Janus {what} ({method} {url}): not JSON: {text[:80]!r}"
                    ) from exc
        except TimeoutError as exc:
            raise SignalingError(
                f"Janus {what} ({method} {url}): no response in time"
            ) from exc
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise SignalingError(
                f"Janus {what} ({method} {url}): cannot reach it: {reason}"
            ) from exc

    async def _request(
        self, url: URL, what: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        payload = {"transaction": _transaction(), **payload}
        reply = await self._call("POST", url, what, payload)
        return _checked(reply, what)

    @property
    def _session_url(self) -> URL:
        if self.session_id is None:
            raise SignalingError("no Janus session")
        return self.url / str(self.session_id)

    @property
    def _handle_url(self) -> URL:
        if self.handle_id is None:
            raise SignalingError("no Janus plugin handle")
        return self._session_url / str(self.handle_id)

    # -- the API ----------------------------------------------------------
    async def info(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /info``: the server's name, version, plugins."""
        reply = await self._call("GET", self.url / "info", "info", timeout_s=timeout_s)
        return _checked(reply, "info")

    async def create_session(self) -> int:
        reply = await self._request(self.url, "create", {"janus": "create"})
        self.session_id = int(reply.get("data", {}).get("id", 0)) or None
        if self.session_id is None:
            raise SignalingError(f"Janus create ({self.url}): no session id")
        self._spawn(self._long_poll())
        self._spawn(self._keepalive())
        return self.session_id

    async def attach(self, plugin: str) -> int:
        reply = await self._request(
            self._session_url, f"attach {plugin}", {"janus": "attach", "plugin": plugin}
        )
        self.handle_id = int(reply.get("data", {}).get("id", 0)) or None
        if self.handle_id is None:
            raise SignalingError(f"Janus attach {plugin}: no handle id")
        return self.handle_id

    async def message(
        self, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Send a plugin message; the plugin's reply data and its JSEP."""
        transaction = _transaction()
        payload: dict[str, Any] = {
            "janus": "message",
            "transaction": transaction,
            "body": body,
        }
        if jsep is not None:
            payload["jsep"] = jsep
        waiter: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._replies[transaction] = waiter
        try:
            reply = _checked(
                await self._call("POST", self._handle_url, "message", payload),
                "message",
            )
            if reply.get("janus") != "ack":
                event = reply  # a synchronous plugin reply
            else:
                try:
                    event = await asyncio.wait_for(waiter, self._timeout_s)
                except TimeoutError as exc:
                    raise SignalingError(
                        f"Janus message: no plugin reply in {self._timeout_s:g} s"
                        + (f" ({self.poll_error})" if self.poll_error else "")
                    ) from exc
        finally:
            self._replies.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if not isinstance(data, dict):
            data = {}
        if "error" in data:
            raise SignalingError(
                f"Janus plugin refused the message: error {data.get('error_code')}: "
                f"{data['error']}"
            )
        event_jsep = event.get("jsep")
        return data, event_jsep if isinstance(event_jsep, dict) else None

    async def handle_info(self) -> dict[str, Any] | None:
        """The admin API's view of our handle (None: no admin API given)."""
        if self.admin_url is None or self.handle_id is None:
            return None
        payload = {"janus": "handle_info", "transaction": _transaction()}
        if self.admin_secret is not None:
            payload["admin_secret"] = self.admin_secret
        url = self.admin_url / str(self.session_id) / str(self.handle_id)
        reply = _checked(await self._call("POST", url, "handle_info", payload), "")
        info = reply.get("info")
        return info if isinstance(info, dict) else None

    async def close(self, *, hang_up: bool = True) -> None:
        """Detach and destroy (best effort, each bounded; not with
        ``hang_up=False``: the Janus is gone), then stop polling."""
        try:
            if hang_up and self.handle_id is not None:
                with contextlib.suppress(SignalingError):
                    await self._request(self._handle_url, "detach", {"janus": "detach"})
            if hang_up and self.session_id is not None:
                with contextlib.suppress(SignalingError):
                    await self._request(
                        self._session_url, "destroy", {"janus": "destroy"}
                    )
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._http.close()

    # -- background ---------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _long_poll(self) -> None:
        url = self._session_url.with_query(maxev=str(MAX_EVENTS))
        while True:
            try:
                reply = await self._call("GET", url, "long poll", timeout_s=LONG_POLL_S)
            except SignalingError as exc:
                self.poll_error = str(exc)
                logger.info("%s", exc)
                return
            for event in reply if isinstance(reply, list) else [reply]:
                if isinstance(event, dict):
                    self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        kind = str(event.get("janus", ""))
        if kind == "keepalive":
            return
        self.events.append(JanusEvent(time.monotonic(), kind, event))
        waiter = self._replies.get(str(event.get("transaction", "")))
        if kind in ("event", "error") and waiter is not None and not waiter.done():
            if kind == "error":
                waiter.set_exception(SignalingError(_error_text(event, "message")))
            else:
                waiter.set_result(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            try:
                await self._request(
                    self._session_url, "keepalive", {"janus": "keepalive"}
                )
            except SignalingError as exc:
                logger.info("%s", exc)


def _error_text(reply: dict[str, Any], what: str) -> str:
    error = reply.get("error", {})
    code = error.get("code") if isinstance(error, dict) else None
    reason = error.get("reason") if isinstance(error, dict) else error
    return f"Janus {what}: error {code}: {reason}"


def _checked(reply: Any, what: str) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise SignalingError(f"Janus {what}: unexpected reply {str(reply)[:80]!r}")
    if reply.get("janus") == "error":
        raise SignalingError(_error_text(reply, what))
    return reply
