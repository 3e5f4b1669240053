"""Test calls: the agent's peers, their observers, and the call's report entry.

A :class:`Call` owns an agent :class:`~agent.stack.peer.Peer` and a
:class:`~agent.observe.observer.PeerObserver` for each side the agent plays.
:class:`LoopbackCall` plays both sides in one process over real loopback UDP:
each peer has its own ICE agent bound to its own loopback address, its own
certificate and DTLS association, and the media crosses the kernel's UDP stack;
only the signalling is in-process (the SDP text a signalling server would carry).
Calls with a remote peer (WHIP) play one side and leave the other to the remote.

Every call produces its JSON report entry (schema: ``docs/report.md``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from agent.call.labentry import lab_entry
from agent.call.stallwatch import stall_watch
from agent.errors import AgentError, CallError
from agent.net.faults import FaultParams
from agent.net.labnet import CallLab
from agent.net.network import CallNetwork, NatConfig
from agent.observe.correlate import AGENT_STALL, LOOP_STALL, build_timeline
from agent.observe.events import PairInfo, StepDetail, StepEvent
from agent.observe.model import Side, Thresholds
from agent.observe.observer import MediaSettings, PeerObserver
from agent.report.entries import (
    CallEntry,
    CertificateInfo,
    MediaEntry,
    RemoteSideEntry,
    SideEntry,
    gap_shares,
)
from agent.report.writer import iso_timestamp
from agent.stack.certs import certificate_info as stack_certificate_info
from agent.stack.ice import SelectedPair, SideNet
from agent.stack.media import prepare_opus
from agent.stack.peer import Peer, PeerConfig

__all__ = [
    "Call",
    "CallConfig",
    "LoopbackCall",
    "peer_at",
]

logger = logging.getLogger(__name__)


#: After one side hangs up, how long the other side gets to notice.
HANGUP_GRACE_S = 3.0


def peer_at(address: str) -> PeerConfig:
    """A peer's settings with every knob at its default, bound to ``address``."""
    return PeerConfig(host_addresses=[address])


@dataclass
class CallConfig:
    """Everything a loopback call needs; the scenario layer fills it in.

    Each side is the stack's own :class:`~agent.stack.peer.PeerConfig`: its
    knobs are declared once, there. The call only overrides what belongs to
    the whole call (media, the random source, the side's network), so
    ``caller.audio`` false means "this side only receives".
    """

    call_id: str
    caller: PeerConfig = field(default_factory=lambda: peer_at("127.0.0.1"))
    callee: PeerConfig = field(default_factory=lambda: peer_at("127.0.0.2"))
    audio: bool = True
    packet_ms: int = 20
    decode: bool = False
    media: MediaSettings = field(default_factory=MediaSettings)
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    connect_timeout_s: float = 10.0
    seed: int = 0
    #: one side behind a user-space NAT (None: no NAT)
    nat: NatConfig | None = None
    #: the call's place in a kernel lab (None: user space, the default)
    lab: CallLab | None = None


class CallClock:
    """Milliseconds since the call started, from a monotonic source."""

    def __init__(self, source: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._t0 = source()

    def __call__(self) -> float:
        return (self._source() - self._t0) * 1000.0


class Call:
    """The agent's side(s) of one test call; implements the scenario StepTarget."""

    mode = "call"
    local_side = Side.CALLER

    def __init__(
        self,
        config: CallConfig,
        clock: CallClock | None = None,
        *,
        agent_sides: tuple[Side, ...] = (Side.CALLER, Side.CALLEE),
    ) -> None:
        self.config = config
        self.clock = clock or CallClock()
        self.started_at = datetime.now(UTC)
        rng = random.Random(config.seed)
        self.observers = {
            side: PeerObserver(side, self.clock, config.media) for side in agent_sides
        }
        sides = {Side.CALLER: config.caller, Side.CALLEE: config.callee}
        self.peers = {
            side: Peer(
                dataclasses.replace(
                    sides[side],
                    audio=config.audio and sides[side].audio,
                    packet_ms=config.packet_ms,
                    decode=config.decode,
                    rng=random.Random(rng.getrandbits(64)),
                    # Its own, even when two calls share a template.
                    net=SideNet(),
                    host_addresses=(
                        sides[side].host_addresses
                        if config.lab is None
                        else [config.lab.address(side)]
                    ),
                ),
                self.observers[side],
                self.clock,
                name=f"{config.call_id}/{side}",
            )
            for side in agent_sides
        }
        self.setup_ms: float | None = None
        self.error: str | None = None
        self.hung_up_by: Side | None = None
        self.ended = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        #: actions started by steps that outlive the step (an ICE restart)
        self._actions: set[asyncio.Task[Any]] = set()
        self._end_snapshot: dict[Side, tuple[str, SelectedPair | None]] = {}
        #: when media stopped being due: hang-up, a side ending, or close
        self.media_until_ms: float | None = None
        self.network = CallNetwork(
            config.nat,
            {side: peer.config.net for side, peer in self.peers.items()},
            self.observers,
            config.seed,
            self.local_side,
            self.clock,
            lab=config.lab,
        )

    # -- lifecycle --------------------------------------------------------
    async def connect(self) -> None:
        """Signal the call and wait until it is connected; each kind says how."""
        raise NotImplementedError

    async def prepare_media(self) -> None:
        """Pre-encode the audio loop off the event loop, before signalling, so
        its CPU never delays a handshake (``setup_ms``)."""
        if self.config.audio:
            await prepare_opus(self.config.packet_ms)
        # Watch the loop from signalling on: a stall during setup makes
        # ``setup_ms`` the agent's, and its check inconclusive.
        stall_watch().add(self)

    async def wait_connected(self) -> None:
        """Wait until every agent side is connected; then watch for the end."""
        timeout = self.config.connect_timeout_s
        await asyncio.gather(*(p.wait_connected(timeout) for p in self.peers.values()))
        # Setup ends when both sides' DTLS is connected (media flows from
        # then), not when the later side's connection state said so.
        # Each side's from the kernel's receive time of the flight that
        # completed its handshake (a busy loop reads it late; the wire does not).
        self.setup_ms = max(
            o.dtls_connected_at_ms or o.connected_at_ms or 0.0
            for o in self.observers.values()
        )
        for side, peer in self.peers.items():
            self._watchers.append(asyncio.create_task(self._watch(side, peer)))
        stall_watch().add(self)

    def note_stall(self, late_ms: float, woke: float) -> None:
        """The agent's event loop woke ``late_ms`` late at ``woke``
        (``time.monotonic``; see :mod:`agent.call.stallwatch`)."""
        self.observer(None).note(
            LOOP_STALL,
            cause=AGENT_STALL,
            t_ms=self.clock() - (time.monotonic() - woke) * 1000.0 - late_ms,
            stall_ms=round(late_ms, 1),
        )

    async def _watch(self, side: Side, peer: Peer) -> None:
        await peer.ended.wait()
        self._media_ends()
        self.ended.set()

    def _media_ends(self) -> None:
        if self.media_until_ms is None:
            self.media_until_ms = self.clock()

    async def close(self) -> None:
        # What the report shows is the call as it was when the scenario ended,
        # not after our own teardown.
        self._end_snapshot = {
            side: (str(peer.state), peer.selected_pair)
            for side, peer in self.peers.items()
        }
        self._media_ends()
        for woke, late_ms in stall_watch().discard(self):
            self.note_stall(late_ms, woke)
        for task in self._watchers:
            task.cancel()
        for action in list(self._actions):
            action.cancel()
        await asyncio.gather(*self._actions, return_exceptions=True)
        for peer in self.peers.values():
            try:
                await asyncio.wait_for(peer.close(), timeout=5)
            except (TimeoutError, ConnectionError) as exc:
                logger.warning("%s: close did not finish cleanly: %s", peer.name, exc)
        await self.network.aclose()
        for side, observer in self.observers.items():
            sender = self.peers[side].sender
            if sender is not None:
                observer.note_sender_late(sender.late)
            observer.finish(self.media_until_ms if self.setup_ms is not None else None)

    # -- StepTarget -------------------------------------------------------
    async def hangup(self, side: Side) -> None:
        self.hung_up_by = side
        self._media_ends()
        self.note(side, "hangup")
        await self.peers[side].close()
        # Let the far end notice (close_notify, then its revive window) so the
        # report shows how it ended, not how our teardown cut it short.
        others = [peer for s, peer in self.peers.items() if s is not side]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(peer.ended.wait() for peer in others)),
                HANGUP_GRACE_S,
            )
        except TimeoutError:
            pass

    async def restart_ice(self, side: Side, cause: str | None) -> None:
        """``side`` restarts ICE (new ufrag/pwd, new generation); returns once the
        re-offer is under way. The observers record how the restart ends."""
        peer = self._agent_peer(side)
        self._start_action(
            peer.restart_ice(trigger="step", cause=cause or "manual"),
            f"{peer.name}: ICE restart",
        )
        await asyncio.sleep(0)

    async def rehandshake_dtls(
        self,
        side: Side,
        *,
        rotate_certificate: bool,
        ice_restart: bool,
        cause: str | None,
    ) -> None:
        """``side`` starts a new DTLS association on the live call."""
        peer = self._agent_peer(side)
        self._start_action(
            peer.rehandshake_dtls(
                rotate_certificate=rotate_certificate,
                ice_restart=ice_restart,
                trigger="step",
                cause=cause or "manual",
            ),
            f"{peer.name}: DTLS rehandshake",
        )
        await asyncio.sleep(0)

    async def set_direction(self, side: Side, direction: str) -> None:
        """``side`` re-offers a new audio direction (hold/resume)."""
        peer = self._agent_peer(side)
        self._start_action(
            peer.hold.set_direction(direction), f"{peer.name}: re-offer {direction}"
        )
        await asyncio.sleep(0)

    async def fail_over(self, side: Side, *, ice_restart: bool) -> None:
        """``side`` behaves like an SBC failing over to its backup."""
        peer = self._agent_peer(side)
        self._start_action(
            peer.fail_over(ice_restart=ice_restart), f"{peer.name}: failover"
        )
        await asyncio.sleep(0)

    async def apply_fault(
        self, side: Side | None, fault: str, params: FaultParams
    ) -> None:
        """Start the network fault registered as ``fault`` on ``side``'s
        sockets (``None``: on the call's NAT)."""
        await self.network.apply_fault(side, fault, params)
        await asyncio.sleep(0)

    def _agent_peer(self, side: Side) -> Peer:
        peer = self.peers.get(side)
        if peer is None:
            raise CallError(f"the {side} is not played by the agent in this call")
        return peer

    def _start_action(self, coro: Awaitable[Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except (AgentError, TimeoutError) as exc:
                # The observers already hold the outcome (failed/incomplete);
                # the call goes on, as it would for a real app.
                logger.info("%s failed: %s", what, exc)
                self.note(None, f"{what} failed: {exc or 'timed out'}")

        task = asyncio.create_task(guarded())
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    def observer(self, side: Side | None) -> PeerObserver:
        """The observer for ``side``; the local one if the agent is not ``side``."""
        return (
            self.observers.get(side or self.local_side)
            or self.observers[self.local_side]
        )

    def note(self, side: Side | None, text: str) -> None:
        self.observer(side).note(text)

    def record_step(
        self, side: Side | None, do: str, params: Mapping[str, JsonValue]
    ) -> None:
        observer = self.observer(side)
        observer.add(
            StepEvent(
                t_ms=observer.now_ms(),
                side=observer.side,
                detail=StepDetail(
                    do=do, target=None if side is None else str(side), params=params
                ),
            )
        )

    # -- result -----------------------------------------------------------
    def final_state(self) -> str:
        state = self.peers[self.local_side].state
        if self.setup_ms is None:
            return "never_connected"
        return str(state)

    def result(self, *, duration_ms: float) -> dict[str, Any]:
        """This call's entry in the JSON report (docs/report.md), as JSON."""
        return self.entry(duration_ms=duration_ms).to_json()

    def entry(self, *, duration_ms: float) -> CallEntry:
        """This call's typed report entry."""
        thresholds = self.config.thresholds
        timeline = build_timeline(*(o.events for o in self.observers.values()))
        sides: dict[str, SideEntry | RemoteSideEntry] = {}
        for side, side_observer in self.observers.items():
            peer = self.peers[side]
            state, pair = self._end_snapshot.get(
                side, (str(peer.state), peer.selected_pair)
            )
            cert = certificate_info(peer)
            sides[str(side)] = SideEntry(
                metrics=side_observer.metrics(thresholds),
                address=peer.config.host_addresses[0],
                selected_pair=None
                if pair is None
                else PairInfo.from_stack(pair.to_dict()),
                final_state=state,
                certificate=CertificateInfo(
                    fingerprint_sha256=cert["fingerprint_sha256"],
                    not_after=cert["not_after"],
                ),
                certificates=list(peer.certificates),
                packets_sent=0 if peer.sender is None else peer.sender.packets_sent,
                frames_decoded=(
                    None
                    if peer.receiver is None or not self.config.decode
                    else peer.receiver.frames_decoded
                ),
            )
        media: dict[str, MediaEntry] = {}
        for receiver_side in Side:
            direction = f"{receiver_side.other}_to_{receiver_side}"
            sender_peer = self.peers.get(receiver_side.other)
            packets_sent = (
                None
                if sender_peer is None
                else 0
                if sender_peer.sender is None
                else sender_peer.sender.packets_sent
            )
            # False: a receive-only sender by design (nothing to measure)
            sends = (
                None
                if sender_peer is None or sender_peer.negotiated is None
                else sender_peer.negotiated.sends
            )
            receiver_peer = self.peers.get(receiver_side)
            if sends is None and receiver_peer and receiver_peer.negotiated:
                # A far end's sender: our negotiated direction says whether
                # it sends (a WHIP client's far end sends nothing).
                sends = None if receiver_peer.negotiated.receives else False
            observer: PeerObserver | None = self.observers.get(receiver_side)
            stats = None if observer is None else observer.media_stats()
            unsent = (
                None
                if sender_peer is None or sender_peer.sender is None
                else sender_peer.sender.packets_unsent
            )
            if observer is None:
                # The remote receives this direction; we cannot see its arrivals.
                media[direction] = MediaEntry(
                    packets_sent=packets_sent, sends=sends, observed=False
                )
            elif stats is None:
                media[direction] = MediaEntry(
                    packets_sent=packets_sent, sends=sends, packets_received=0
                )
            else:
                media[direction] = MediaEntry.received(
                    packets_sent,
                    sends,
                    stats,
                    shares=gap_shares(timeline, direction, stats),
                    packets_unsent=unsent,
                    receive_lag_ms=observer.receive_lag_max_ms,
                    not_due=observer.not_due.intervals(),
                    setup_ms=self.setup_ms,
                )
        return CallEntry(
            id=self.config.call_id,
            mode=self.mode,
            local_side=self.local_side.value,
            seed=self.config.seed,
            started_at=iso_timestamp(self.started_at),
            duration_ms=round(duration_ms, 1),
            setup_ms=None if self.setup_ms is None else round(self.setup_ms, 1),
            connected=self.setup_ms is not None,
            final_state=self.final_state(),
            ended_early=self.ended.is_set() and self.hung_up_by is None,
            hung_up_by=None if self.hung_up_by is None else self.hung_up_by.value,
            error=self.error,
            metrics=self.observer(self.local_side).metrics(thresholds),
            sides=sides,
            media=media,
            events=timeline,
            lab=None if self.config.lab is None else lab_entry(self.config.lab),
        )


def certificate_info(peer: Peer) -> dict[str, Any]:
    """The certificate in use, as the report shows it (the stack's description,
    with the report's timestamp format)."""
    info = stack_certificate_info(peer.certificate, timestamp=iso_timestamp)
    return {
        "fingerprint_sha256": info["fingerprint_sha256"],
        "not_after": info["not_after"],
    }


class LoopbackCall(Call):
    """Two agent peers calling each other over loopback, signalling in-process."""

    mode = "loopback"

    async def connect(self) -> None:
        """Offer/answer in-process, then wait until both sides are connected."""
        caller, callee = self.peers[Side.CALLER], self.peers[Side.CALLEE]
        # Renegotiations either side starts (ICE restarts) go to the other.
        caller.renegotiate = callee.accept_offer
        callee.renegotiate = caller.accept_offer
        await self.network.start_lab()
        self.network.start()
        await self.prepare_media()
        try:
            answer = await callee.accept_offer(await caller.create_offer())
            await caller.accept_answer(answer)
        except OSError as exc:
            raise CallError(f"cannot bind on loopback: {exc}") from exc
        await self.wait_connected()
