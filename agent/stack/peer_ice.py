"""The ICE side of a :class:`~agent.stack.peer.Peer`: restarts it starts or
answers, connecting each generation, liveness and recovery.

A part of ``Peer`` (a mixin, its methods typed ``self``) kept in its own
module so that each concern of the facade reads on its own. The generations'
bookkeeping is :mod:`agent.stack.generations`; the liveness and recovery rules
are :mod:`agent.stack.liveness`'s pure decisions, fed the loop's clock here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agent.errors import CallError, SignalingError
from agent.stack.config import FarEndProfile, PeerState
from agent.stack.generations import IceGeneration
from agent.stack.liveness import liveness_state, recovery_trigger
from agent.stack.sdp import MediaDescription

if TYPE_CHECKING:
    from agent.stack.peer import Peer

logger = logging.getLogger(__name__)


class PeerIce:
    """ICE restarts, generations coming up, liveness and recovery of a peer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    # -- ICE restart ---------------------------------------------------------
    async def restart_ice(
        self, *, trigger: str = "step", cause: str | None = None
    ) -> bool:
        """Restart ICE from this side: re-offer with new credentials, apply the
        answer, and return whether the new generation got a selected pair.

        Make-before-break: media stays on the current generation meanwhile.
        """
        if self.peer.renegotiate is None:
            raise CallError(
                f"{self.peer.name}: no signalling channel to restart ICE over"
            )
        if self.peer.pending is not None:
            return False  # a restart is already under way
        self.peer._rolled_back = False
        offer = await self.peer.create_offer(
            ice_restart=True, trigger=trigger, cause=cause
        )
        generation = self.peer.pending
        assert generation is not None
        try:
            await self.peer._renegotiate(offer)
        except (SignalingError, TimeoutError, ConnectionError) as exc:
            if self.peer._rolled_back:
                return False  # glare: the far end's restart won
            self.fail_restart(generation, f"renegotiation failed: {exc}")
            return False
        if generation.task is None:
            return False  # rejected: the far end kept its credentials
        await asyncio.shield(generation.task)
        return self.peer.current is generation

    def rejects_restart(
        self, generation: IceGeneration, answer: MediaDescription
    ) -> bool:
        """Whether ``answer`` refuses the restart ``generation`` offered
        (then ended ``rejected``): RFC 8445 §9 / RFC 8839 §4.4.1.1.1, a far end
        that restarts answers with new credentials. One that keeps them
        (webrtcbin answering a WHIP PATCH) did not restart and still sends on
        the old generation, which therefore stays in use."""
        current = self.peer.current
        if (
            generation.restart is None
            or current is None
            or current.remote is None
            or answer.ice is None
        ):
            return False
        kept = (answer.ice.usernameFragment, answer.ice.password) == (
            current.remote.usernameFragment,
            current.remote.password,
        )
        if kept:
            self.reject_restart(
                generation, "the answer kept the far end's ICE credentials"
            )
        return kept

    def reject_restart(self, generation: IceGeneration, why: str) -> None:
        """The far end answered our restart without restarting: outcome
        ``rejected``; its sockets close and the current generation (the one
        the far end still sends on) stays in use."""
        self._end_restart(generation, "rejected", why)

    def fail_restart(self, generation: IceGeneration, why: str) -> None:
        self._end_restart(generation, "failed", why)

    def _end_restart(self, generation: IceGeneration, outcome: str, why: str) -> None:
        logger.info(
            "%s: ICE restart (generation %d) %s: %s",
            self.peer.name,
            generation.number,
            outcome,
            why,
        )
        if self.peer.pending is generation:
            self.peer.ice_generations.pending = None
        self.peer._listener.on_ice_restart_ended(generation.number, outcome, None)
        self.peer._spawn(generation.transport.stop())
        if self.peer._liveness is PeerState.FAILED:
            # Nothing left to recover with.
            self.peer.ended.set()

    def start_generation(self, generation: IceGeneration) -> None:
        if generation.task is None:
            generation.task = asyncio.create_task(
                self._connect_generation(generation),
                name=f"{self.peer.name}-ice{generation.number}",
            )

    async def _connect_generation(self, generation: IceGeneration) -> None:
        assert generation.remote is not None
        try:
            if generation.restart is None:
                await generation.transport.start(generation.remote)
            else:
                await asyncio.wait_for(
                    generation.transport.start(generation.remote),
                    timeout=self.peer.config.restart_timeout_s,
                )
        except TimeoutError:
            self.fail_restart(generation, "no pair selected in time")
            return
        if generation.transport.state != "completed":
            if generation.restart is not None:
                self.fail_restart(generation, f"ICE {generation.transport.state}")
            return
        previous = self.peer.current
        self.peer.ice_generations.current = generation
        self.peer.mux.use(generation.connection)
        if generation.restart is not None:
            self.peer.ice_generations.pending = None
            self.peer._liveness = PeerState.CONNECTED
            self.peer._listener.on_ice_restart_ended(
                generation.number, "completed", generation.connection.selected_pair
            )
            self.peer._update_state()
            if self.peer.config.dtls_profile is FarEndProfile.ON_ICE_RESTART:
                self.peer.dtls_side.far_end_rehandshake("ice_restart", "ice_restart")
        if previous is not None:
            self.peer._spawn(self._retire(previous))
        else:
            await self.peer._start_media()

    async def _retire(self, generation: IceGeneration) -> None:
        await asyncio.sleep(self.peer.config.retire_after_s)
        self.peer.mux.detach(generation.connection)
        await generation.transport.stop()

    # -- liveness: disconnected / failed like a browser ---------------------
    async def monitor_liveness(self) -> None:
        """Feed :func:`liveness_state` the loop's clock and the current
        generation's observations every ``liveness_tick_s``; act on a change."""
        loop = asyncio.get_running_loop()
        while not self.peer._closing:
            await asyncio.sleep(self.peer.config.liveness_tick_s)
            generation = self.peer.current
            if generation is None:
                continue
            connection = generation.connection
            liveness = liveness_state(
                loop.time(),
                connection.last_received,
                connection.consent_expired.is_set(),
                self.peer.config.disconnected_after_s,
            )
            if liveness is not self.peer._liveness:
                self.peer._liveness = liveness
                self.peer._update_state()
                self._maybe_recover(liveness)

    def _maybe_recover(self, liveness: PeerState) -> None:
        trigger = recovery_trigger(
            self.peer.config.recovery,
            liveness,
            restart_pending=self.peer.pending is not None,
            can_renegotiate=self.peer.renegotiate is not None,
        )
        if trigger is not None:
            self.peer._spawn(self._recover(trigger))

    async def _recover(self, trigger: str) -> None:
        try:
            await self.restart_ice(trigger=trigger)
        except (CallError, SignalingError) as exc:
            logger.info("%s: recovery restart failed: %s", self.peer.name, exc)
