"""Helpers for WHIP and /ws tests: an in-process ``serve`` and a far-end peer.

The server is the real :class:`~agent.signaling.whip_server.WhipServer` with a
real :class:`~agent.call.server.CallServer` behind it, on 127.0.0.1 and a free
port. The far end, where a test needs one that is not a browser, is a real
agent :class:`~agent.stack.peer.Peer` on 127.0.0.2 (its own ICE agent, sockets,
certificate): nothing is mocked.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent.call.server import CallServer
from agent.signaling.guard import Limits
from agent.signaling.whip_server import ServerSettings, WhipServer
from agent.stack.ice import SelectedPair
from agent.stack.peer import NullListener, Peer, PeerConfig, PeerState

__all__ = ["FarEnd", "Served", "far_end", "serve_agent", "until"]


@dataclass
class Served:
    base_url: str
    backend: CallServer
    server: WhipServer

    @property
    def whip(self) -> str:
        return f"{self.base_url}/whip"


@asynccontextmanager
async def serve_agent(
    *,
    token: str | None = None,
    max_calls: int = 20,
    max_body: int = 64 * 1024,
    report_dir: Path | None = None,
    cors_origins: tuple[str, ...] = (),
    limits: Limits | None = None,
) -> AsyncIterator[Served]:
    """The real server, connection guard included, as ``callagent serve`` runs it."""
    backend = CallServer(
        address="127.0.0.1",
        max_calls=max_calls,
        report_dir=report_dir,
        run_meta=lambda seed: {"run_id": f"test-{seed}", "seed": seed},
    )
    settings = ServerSettings(
        token=token,
        max_body=max_body,
        cors_origins=cors_origins,
        limits=limits or Limits(),
    )
    server = WhipServer(backend, settings)
    listening = await server.listen("127.0.0.1", 0)
    try:
        yield Served(listening.base_url, backend, server)
    finally:
        try:
            await asyncio.wait_for(backend.shutdown("test over"), 20)
        finally:
            await listening.close()


@dataclass
class FarEnd(NullListener):
    """A PeerListener counting what the far-end test peer sees."""

    rtp: int = 0
    restarts: list[tuple[str, int, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        self.rtp += 1
        self.changed.set()

    def on_connection_state(self, state: PeerState) -> None:
        self.changed.set()

    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None:
        self.restarts.append(("started", generation, initiator))
        self.changed.set()

    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None:
        self.restarts.append((outcome, generation, ""))
        self.changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float) -> None:
        await until(self.changed, condition, timeout)


async def until(
    changed: asyncio.Event, condition: Callable[[], bool], timeout: float
) -> None:
    """Wait, woken by ``changed`` rather than by polling, until ``condition()``."""
    async with asyncio.timeout(timeout):
        while not condition():
            changed.clear()
            await changed.wait()


def far_end(*, audio: bool = True, seed: int = 5) -> tuple[Peer, FarEnd]:
    listener = FarEnd()
    loop = asyncio.get_running_loop()
    peer = Peer(
        PeerConfig(host_addresses=["127.0.0.2"], audio=audio, rng=random.Random(seed)),
        listener,
        lambda: loop.time() * 1000,
        name="far-end",
    )
    return peer, listener
