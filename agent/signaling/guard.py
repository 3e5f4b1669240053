"""Connection limits for the HTTP server: slow clients cannot starve real calls.

Theory of operation
-------------------
aiohttp has no limit on how long a client may take to send a request's head,
nor on how many connections it holds; 180 connections that each send one
header byte now and then were held for as long as their senders liked, and
enough of them ran the process out of file descriptors, so a real call failed.
:class:`ConnectionGuard` wraps aiohttp's protocol factory (a public
``asyncio.Protocol`` factory, ``AppRunner.server``) and keeps a table of
connections, each in one of two states:

=========  ===============================  ======================================
state      meaning                          limit
=========  ===============================  ======================================
waiting    no request in progress: sending  :attr:`Limits.header_timeout_s` from
           a request head, or idle between  connect (or from the end of the last
           keep-alive requests              request), then the connection is cut
busy       a handler runs (the middleware   the handler's own limits (body read
           marks it: :meth:`begin`/`end`)   timeout, WebSocket heartbeat)
=========  ===============================  ======================================

At :attr:`Limits.max_connections`, a new connection evicts the oldest
*waiting* one (a slow sender has delivered nothing we act on; a real client's
request head arrives in milliseconds and makes it busy); if every connection
is busy, the new one gets a canned ``503`` and is closed. The server never has
more than ``max_connections`` connections open, so it cannot run out of file
descriptors because of clients. Eviction and refusal are logged once a
minute at most, as one line with a count, never per connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ConnectionGuard", "Limits", "OnceAMinute", "quiet_resource_errors"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    #: connections held at once, whatever they do
    max_connections: int = 256
    #: from connect (or the end of the previous request) to a complete request head
    header_timeout_s: float = 10.0
    #: to receive a request body once its head is in
    body_timeout_s: float = 10.0


BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 34\r\n\r\n"
    b"too many connections; retry later\n"
)


class OnceAMinute:
    """Log a recurring condition as one line a minute with a count, not per event."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def log(self, key: str, message: str, *args: Any) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return
        count = self._count.pop(key)
        self._last[key] = now
        suffix = "" if count == 1 else f" ({count} times since the last report)"
        logger.warning(message + suffix, *args)


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, our bookkeeping around."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.since = time.monotonic()
        self.admitted = False
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self.admitted = True
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.admitted:
            self.admitted = False
            self.guard.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    # -- request bookkeeping --------------------------------------------------
    def begin(self) -> None:
        self.busy += 1
        self._disarm()

    def end(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self.since = time.monotonic()
            self._arm()

    def cut(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.limits.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.busy == 0:
            self.guard.notices.log(
                "slow",
                "closed a connection that sent no complete request within %g s",
                self.guard.limits.header_timeout_s,
            )
            self.cut()


class ConnectionGuard:
    """The table of connections; wraps a protocol factory."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.notices = OnceAMinute()
        #: admitted connections by their transport, oldest first
        self.connections: dict[int, _Connection] = {}
        self.evicted = 0
        self.refused = 0

    def factory(
        self, inner: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: _Connection(self, inner())

    def admit(self, connection: _Connection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            waiting = [c for c in self.connections.values() if c.busy == 0]
            if not waiting:
                self.refused += 1
                self.notices.log(
                    "full",
                    "at the limit of %d connections, all busy: refusing new ones "
                    "with 503",
                    self.limits.max_connections,
                )
                return False
            oldest = min(waiting, key=lambda c: c.since)
            self.evicted += 1
            self.notices.log(
                "evict",
                "at the limit of %d connections: closing the oldest one that "
                "has sent no request",
                self.limits.max_connections,
            )
            # Released now; aiohttp hears of it through connection_lost.
            self.release(oldest)
            oldest.cut()
        self.connections[id(connection.transport)] = connection
        return True

    def release(self, connection: _Connection) -> None:
        self.connections.pop(id(connection.transport), None)

    def find(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        return None if transport is None else self.connections.get(id(transport))


_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def quiet_resource_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Out of file descriptors (EMFILE): one line a minute, not a traceback
    per failed ``accept()``; other loop errors go to the previous handler."""
    previous = loop.get_exception_handler()
    notices = OnceAMinute()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            notices.log(
                "resources",
                "out of a system resource (%s: %s): %s; lower --max-connections "
                "or --max-calls, or raise the limit (ulimit -n)",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                exc.strerror,
                context.get("message", "loop error"),
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
