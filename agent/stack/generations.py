"""ICE generations of one peer (RFC 8445 §9 restarts as generations).

Each generation is a fresh :class:`AgentIceGatherer` + ``RTCIceTransport``: new
ufrag/pwd, new sockets, its own checks and consent. Generation 0 is the initial
one; every ICE restart, from either side, adds one. At most one restart is under
way at a time (:attr:`IceGenerations.pending`); media stays on
:attr:`IceGenerations.current` until the new generation selects a pair
(make-before-break), and the old one keeps receiving for ``retire_after_s``.

This module owns the bookkeeping and the per-generation I/O (creating,
describing, feeding remote candidates, stopping); *when* a restart happens and
what follows it is the peer's (:mod:`agent.stack.peer`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCDtlsFingerprint, RTCIceParameters, RTCIceTransport

from agent.stack.config import PeerConfig
from agent.stack.ice import AgentIceConnection, AgentIceGatherer, SelectedPair
from agent.stack.listener import PeerListener
from agent.stack.sdp import LocalTransport, MediaDescription, parse_candidate

#: ``(initiator, trigger, cause)`` of a restart
Restart = tuple[str, str, str | None]


@dataclass(eq=False)
class IceGeneration:
    """One ICE generation: its credentials, sockets, checks and consent."""

    number: int
    gatherer: AgentIceGatherer
    transport: RTCIceTransport
    remote: RTCIceParameters | None = None
    task: asyncio.Task[None] | None = None
    #: ``(initiator, trigger, cause)`` when this generation is a restart
    restart: Restart | None = None

    @property
    def connection(self) -> AgentIceConnection:
        return self.gatherer.connection

    def local_transport(self, fingerprints: list[RTCDtlsFingerprint]) -> LocalTransport:
        """What a description of ours says about this generation."""
        return LocalTransport(
            ice=self.gatherer.getLocalParameters(),
            candidates=self.gatherer.getLocalCandidates(),
            complete=self.gatherer.state == "completed",
            fingerprints=fingerprints,
        )

    async def apply_remote(self, media: MediaDescription) -> None:
        """The far end's credentials and candidates for this generation."""
        assert media.ice is not None
        self.remote = RTCIceParameters(
            usernameFragment=media.ice.usernameFragment, password=media.ice.password
        )
        for candidate in media.ice_candidates:
            await self.transport.addRemoteCandidate(candidate)
        if media.ice_candidates_complete:
            await self.transport.addRemoteCandidate(None)

    async def add_candidate(self, line: str | None) -> None:
        """One trickled remote candidate line, or end-of-candidates (None)."""
        if line is None:
            await self.transport.addRemoteCandidate(None)
        else:
            await self.transport.addRemoteCandidate(parse_candidate(line))


class IceGenerations:
    """The generations of one peer: all of them, the current, the pending."""

    def __init__(
        self,
        config: PeerConfig,
        listener: PeerListener,
        *,
        on_selected_pair: Callable[[SelectedPair, int], None],
        on_state: Callable[[IceGeneration], None],
    ) -> None:
        self._config = config
        self._listener = listener
        self._on_selected_pair = on_selected_pair
        self._on_state = on_state
        self.all: list[IceGeneration] = []
        #: the generation media is sent on (None until the first is selected)
        self.current: IceGeneration | None = None
        self._pending: IceGeneration | None = None
        #: set while no ICE restart is being negotiated or checked
        self.restart_idle = asyncio.Event()
        self.restart_idle.set()

    def new(self, restart: Restart | None = None) -> IceGeneration:
        """A new generation; with ``restart`` it becomes the pending one."""
        config = self._config
        number = len(self.all)
        gatherer = AgentIceGatherer(
            host_addresses=config.host_addresses,
            consent_interval_s=config.consent_interval_s,
            consent_expiry_s=config.consent_expiry_s,
            rng=random.Random(config.rng.getrandbits(64)),
            net=config.net,
            ice_profile=config.ice_profile,
        )
        generation = IceGeneration(
            number, gatherer, RTCIceTransport(gatherer), restart=restart
        )
        connection = generation.connection
        if self.all:
            first = self.all[0].connection
            # Roles and tie-breaker carry over: RFC 8445 §9 keeps roles on a
            # restart unless the peer's ICE lite status changes.
            connection.ice_controlling = first.ice_controlling
            connection.tie_breaker = first.tie_breaker
        connection.wire_tap = self._listener.on_wire
        connection.pair_listener = lambda pair: self._on_selected_pair(pair, number)
        gatherer.on(
            "statechange",
            lambda: self._listener.on_ice_gathering(gatherer.state, number),
        )
        generation.transport.on("statechange", lambda: self._on_state(generation))
        self.all.append(generation)
        if restart is not None:
            self.pending = generation
            initiator, trigger, cause = restart
            self._listener.on_ice_restart_started(number, initiator, trigger, cause)
        return generation

    @property
    def pending(self) -> IceGeneration | None:
        """The ICE restart being negotiated or checked, if any."""
        return self._pending

    @pending.setter
    def pending(self, generation: IceGeneration | None) -> None:
        self._pending = generation
        if generation is None:
            self.restart_idle.set()
        else:
            self.restart_idle.clear()

    @property
    def negotiating(self) -> IceGeneration:
        """The generation whose credentials the next description carries."""
        return self._pending or self.current or self.all[0]

    @property
    def active(self) -> IceGeneration:
        """The generation whose state is the peer's (current, else the first)."""
        return self.current or self.all[0]

    def roll_back_pending(self) -> IceGeneration | None:
        """Forget the pending restart (glare rollback); returns it to stop."""
        pending = self._pending
        if pending is not None:
            self.pending = None
            self.all.remove(pending)
            self._listener.on_ice_restart_ended(pending.number, "rolled_back", None)
        return pending

    def tasks(self) -> list[asyncio.Task[None]]:
        return [g.task for g in self.all if g.task is not None]
