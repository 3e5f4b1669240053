"""What the signalling servers need from the call layer, as protocols.

The WHIP server (:mod:`agent.signaling.whip_server`) and the ``/ws`` channel
(:mod:`agent.signaling.ws`) speak HTTP and JSON; they do not create calls. The
call layer (``agent.call.server``) implements :class:`CallBackend`, which turns
an offer into a live, observed call and hands back a :class:`CallSession` to
steer it. Keeping this seam here lets the signalling code stay below the call
layer (DESIGN.md: arrows point down only).

Exceptions a backend raises: :class:`ServerBusy` (too many calls: 503),
:class:`~agent.errors.SignalingError` (the offer or fragment is unusable: 400
with its one-line message). Anything else is a bug: 500, and the server goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.errors import AgentError

#: Send our offer to the far end and return its answer (``Peer.renegotiate``).
Renegotiate = Callable[[str], Awaitable[str]]


class ServerBusy(AgentError):
    """The server is at its concurrent-call limit."""


@dataclass(frozen=True)
class OfferContext:
    """Where an offer came from, for the report's remote side."""

    mode: str
    remote_address: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class IceCredentials:
    ufrag: str
    pwd: str
    candidates: tuple[str, ...] = ()


class CallSession(Protocol):
    """One live call as the signalling layer steers it."""

    @property
    def call_id(self) -> str: ...

    @property
    def ended(self) -> asyncio.Event:
        """Set once the call is over (hung up, failed, or shut down)."""
        ...

    async def accept_offer(self, sdp: str) -> str:
        """A re-offer from the far end (``/ws``); returns our answer."""
        ...

    async def add_candidate(self, candidate: str | None) -> None:
        """Trickle one remote candidate line, or end-of-candidates (``None``)."""
        ...

    async def restart_ice(self, remote: IceCredentials, end: bool) -> IceCredentials:
        """The far end restarted ICE (WHIP PATCH); returns our new credentials."""
        ...

    async def hang_up(self, *, by_remote: bool, reason: str) -> None:
        """End the call; ``by_remote`` when the far end asked (DELETE, bye)."""
        ...


class CallBackend(Protocol):
    """Creates calls from offers; the call layer implements it."""

    async def open_call(
        self,
        offer: str,
        context: OfferContext,
        renegotiate: Renegotiate | None = None,
    ) -> tuple[CallSession, str]:
        """Answer ``offer`` with a new observed call: ``(session, answer_sdp)``.

        Raises :class:`ServerBusy` or :class:`~agent.errors.SignalingError`.
        ``renegotiate`` is how the call's peer re-offers to the far end, when
        the signalling allows it (``/ws``; WHIP does not).
        """
        ...

    def active_calls(self) -> list[dict[str, Any]]:
        """The live view for ``GET /calls``."""
        ...

    def metrics_text(self) -> bytes:
        """Prometheus text exposition for ``GET /metrics``."""
        ...
