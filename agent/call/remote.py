"""Calls whose far end is remote: the agent plays one side, over real signalling.

Theory of operation
-------------------
A :class:`RemoteCall` is a :class:`~agent.call.calls.Call` with one agent peer
and one observer; the other side is a browser, an SFU or another callagent,
reached through WHIP or ``/ws``. Its report entry has the same schema as a
loopback call (``docs/report.md``): ``metrics`` are the agent side's,
``sides.<remote>`` holds what signalling told us about the far end, and the
direction the remote receives is marked ``observed: false``.

Two roles:

* :class:`WhipClientCall` (``mode: whip-client``, the agent is the caller):
  POSTs its offer to a WHIP endpoint, runs a scenario, and DELETEs the session
  when it closes. Its own ICE restarts go out as WHIP PATCHes (the only
  renegotiation WHIP has).
* a :class:`RemoteCall` as the callee (``mode: whip-server`` / ``ws-server``),
  answered by :class:`~agent.call.server.CallServer` behind ``callagent serve``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from agent.call.calls import Call, CallClock, CallConfig
from agent.errors import CallError, SignalingError
from agent.observe.model import Side
from agent.report.entries import (
    CallEntry,
    CertificateInfo,
    RemoteIce,
    RemoteSideEntry,
    SideEntry,
)
from agent.signaling.session import IceCredentials, Renegotiate
from agent.signaling.whip_client import WhipClient, answer_with_ice, check_whip_url
from agent.stack.peer import Peer, parse_sdp

logger = logging.getLogger(__name__)

__all__ = ["RemoteCall", "RemoteCallSession", "WhipClientCall", "remote_description"]


def remote_description(sdp_text: str, kind: str) -> RemoteSideEntry | None:
    """What an offer or answer says about the far end, for ``sides.<remote>``."""
    description = parse_sdp(sdp_text, kind)
    audio = next((m for m in description.media if m.kind == "audio"), None)
    if audio is None:
        return None
    fingerprint = None
    if audio.dtls is not None:
        fingerprint = next(
            (f.value for f in audio.dtls.fingerprints if f.algorithm == "sha-256"),
            None,
        )
    return RemoteSideEntry(
        certificate=None
        if fingerprint is None
        else CertificateInfo(fingerprint_sha256=fingerprint, not_after=None),
        ice=RemoteIce(
            ufrag=None if audio.ice is None else audio.ice.usernameFragment,
            candidates=len(audio.ice_candidates),
        ),
        direction=audio.direction,
    )


class RemoteCall(Call):
    """The agent's one side of a call with a remote far end."""

    def __init__(
        self,
        config: CallConfig,
        *,
        side: Side,
        mode: str,
        clock: CallClock | None = None,
    ) -> None:
        super().__init__(config, clock, agent_sides=(side,))
        self.local_side = side
        self.mode = mode
        #: what signalling and the wire told us about the far end
        self.remote_info = RemoteSideEntry()

    @property
    def peer(self) -> Peer:
        return self.peers[self.local_side]

    async def hangup(self, side: Side) -> None:
        if side is not self.local_side:
            raise CallError(
                f"the {side} is the remote end of this {self.mode} call; "
                "the agent cannot hang up for it"
            )
        await super().hangup(side)

    async def offer_first(self, send: Callable[[str], Awaitable[str]]) -> str:
        """The agent's first offer, sent with ``send`` (the target's own
        signalling), and the far end's answer applied; returns the answer."""
        try:
            offer = await self.peer.create_offer()
        except OSError as exc:
            raise CallError(
                f"cannot bind on {self.peer.config.host_addresses[0]}: {exc}"
            ) from exc
        answer = await send(offer)
        self.learn_remote(answer, "answer")
        await self.peer.accept_answer(answer)
        return answer

    def learn_remote(self, sdp_text: str, kind: str) -> None:
        try:
            learned = remote_description(sdp_text, kind)
            if learned is not None:
                self.remote_info = dataclasses.replace(
                    self.remote_info,
                    certificate=learned.certificate,
                    ice=learned.ice,
                    direction=learned.direction,
                )
        except SignalingError:
            pass  # the peer rejects it with the real reason

    async def answer_first_offer(
        self, offer: str, renegotiate: Renegotiate | None, *, bind_on: str = ""
    ) -> str:
        """The far end's first offer, answered by our peer, whose re-offers
        (ICE restarts, new certificates) go over ``renegotiate``. A port we
        cannot bind is one ``CallError`` line (``bind_on``: where)."""
        self.learn_remote(offer, "offer")
        self.peer.renegotiate = renegotiate
        try:
            return await self.peer.accept_offer(offer)
        except OSError as exc:
            where = f" on {bind_on}" if bind_on else ""
            raise CallError(f"cannot bind{where}: {exc}") from exc

    async def accept_remote_offer(self, sdp: str) -> str:
        """Answer the far end's re-offer (its ICE restart, a new certificate)
        over our signalling; what it says about the far end goes to ``sides``."""
        # No await before the peer: a glare rollback must happen first.
        answer = await self.peer.accept_offer(sdp)
        self.learn_remote(sdp, "offer")
        return answer

    async def add_remote_candidate(self, candidate: str | None) -> None:
        """One trickled far-end candidate (``None``: end-of-candidates)."""
        try:
            await self.peer.add_remote_candidate(candidate)
        except ValueError as exc:
            # aioice refuses a candidate after end-of-candidates.
            reason = str(exc) or "malformed candidate line"
            raise SignalingError(f"cannot add remote candidate: {reason}") from exc

    def entry(self, *, duration_ms: float) -> CallEntry:
        entry = super().entry(duration_ms=duration_ms)
        local = entry.sides[str(self.local_side)]
        pair = local.selected_pair if isinstance(local, SideEntry) else None
        remote = self.remote_info
        if remote.address is None and pair is not None:
            remote = dataclasses.replace(remote, address=pair.remote)
        entry.sides[str(self.local_side.other)] = remote
        return entry


class WhipClientCall(RemoteCall):
    """The agent as a WHIP client: caller side, POST / PATCH / DELETE."""

    def __init__(
        self,
        config: CallConfig,
        url: str,
        *,
        token: str | None = None,
        clock: CallClock | None = None,
    ) -> None:
        super().__init__(config, side=Side.CALLER, mode="whip-client", clock=clock)
        self.url = url
        self.token = token
        self.client: WhipClient | None = None
        self._answer: str | None = None
        self._local_ufrag: str | None = None
        self.remote_info = dataclasses.replace(self.remote_info, endpoint=url)
        self.peer.renegotiate = self._renegotiate

    @staticmethod
    def check_url(url: str) -> None:
        """Raise :class:`SignalingError` now if ``url`` cannot be a WHIP endpoint."""
        check_whip_url(url)

    async def connect(self) -> None:
        await self.prepare_media()
        client = self.client = WhipClient(self.url, token=self.token)

        async def post(offer: str) -> str:
            self._local_ufrag = _ufrag(offer)
            answer = await client.offer(offer)
            resource = None if client.resource is None else str(client.resource)
            self.remote_info = dataclasses.replace(self.remote_info, resource=resource)
            return answer

        self._answer = await self.offer_first(post)
        await self.wait_connected()

    async def _renegotiate(self, offer: str) -> str:
        """WHIP renegotiates ICE only: a PATCH with our new credentials."""
        if self.client is None or self._answer is None:
            raise SignalingError("no WHIP session to renegotiate on")
        description = parse_sdp(offer, "offer")
        audio = next(m for m in description.media if m.kind == "audio")
        assert audio.ice is not None
        if audio.ice.usernameFragment == self._local_ufrag:
            raise SignalingError(
                "WHIP can renegotiate nothing but an ICE restart (RFC 9725 §4.3.2)"
            )
        local = IceCredentials(
            str(audio.ice.usernameFragment),
            str(audio.ice.password),
            tuple(
                line.strip()[2:]
                for line in offer.splitlines()
                if line.startswith("a=candidate:")
            ),
        )
        remote = await self.client.restart_ice(local, audio.rtp.muxId or "0")
        self._local_ufrag = local.ufrag
        self._answer = answer_with_ice(self._answer, remote)
        return self._answer

    async def close(self) -> None:
        await super().close()
        if self.client is None:
            return
        try:
            await self.client.delete()
        except SignalingError as exc:
            # The call's media is over either way; say so on the timeline.
            self.note(None, f"DELETE failed: {exc}")
            logger.warning("%s: %s", self.config.call_id, exc)
        finally:
            await self.client.close()


def _ufrag(sdp_text: str) -> str | None:
    for line in sdp_text.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


_Call = TypeVar("_Call", bound=RemoteCall)


class RemoteCallSession(Generic[_Call]):
    """What every signalling session of a remote call has in common (the
    :class:`~agent.signaling.session.CallSession` id, end, offers and
    candidates): the call's own methods. ``callagent serve``'s calls and a
    browser target's ``/ws`` session add their own ICE restart and hang-up."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self._ended = asyncio.Event()

    @property
    def call_id(self) -> str:
        return self.call.config.call_id

    @property
    def ended(self) -> asyncio.Event:
        return self._ended

    async def accept_offer(self, sdp: str) -> str:
        return await self.call.accept_remote_offer(sdp)

    async def add_candidate(self, candidate: str | None) -> None:
        await self.call.add_remote_candidate(candidate)
