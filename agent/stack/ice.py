"""ICE on top of aioice 0.13, with what a test agent needs and aioice lacks.

aioice's ``Connection`` gathers host candidates from every interface *except*
127.0.0.1 and offers no way to see the wire or the selected pair. For a test
agent both are wrong: calls must run on addresses we choose on purpose (loopback
by default; nothing here may depend on the machine's other interfaces), and the
observer must see every datagram (the DTLS wire tap) and every change of the
selected pair (``selected_pair_changes``).

:class:`AgentIceConnection` subclasses ``aioice.Connection``:

* ``gather_candidates`` binds exactly the given host addresses (RFC 8445 §5.1.1.1
  host candidates; no STUN/TURN unless configured).
* ``sendto``/``data_received`` pass every non-STUN datagram to a tap callback
  before the normal path (the wire tap of DESIGN.md).
* SRTP takes a short path both ways (:mod:`agent.stack.icemedia`).
* ``check_complete`` reports a change of the nominated pair.
* every socket's traffic passes through the side's network (:class:`SideNet`):
  impairment filters (drop, delay) and a route (a rebind, an address change, a
  NAT) that ``agent/net`` installs; a :class:`SocketTap` is one socket's face
  (both in :mod:`agent.stack.icenet`, re-exported here).
* the selected pair *follows* the far end to a new address inside one
  generation, as libwebrtc does: a controlling agent nominates a pair that a
  triggered check validated (aioice's aggressive nomination, RFC 8445 §7.3.1.4),
  and a controlled agent switches at once on USE-CANDIDATE (RFC 8445
  §7.3.1.5; a libwebrtc far end nominates on every ping) and, with the
  libwebrtc profile, to a valid pair that is receiving when the selected one
  has stopped receiving (libwebrtc's controlled-side rule).
* ``query_consent`` is replaced by pings on the selected pair at the cadence
  of the side's ICE profile (:mod:`agent.stack.ice_profile`: libwebrtc's, with
  USE-CANDIDATE when controlling, or RFC 7675's), with an expiry that
  *reports* expiry (aioice silently closes the connection after ~30 s, which
  aiortc then shows as ``closed``, not ``failed``); the expiry rules are
  :class:`agent.stack.liveness.ConsentFreshness`. Every datagram received
  stamps ``last_received`` for ``disconnected`` detection.
* the check list fails only when no check is in flight or due (RFC 8445
  §6.1.2.6, §7.2.5.3.3): while the far end was heard lately its own checks,
  and the triggered checks on peer-reflexive pairs they cause (§7.3.1.3-4),
  are still due, so aioice's "every pair failed" is held
  (:func:`agent.stack.liveness.ice_failure_held_s`).

ICE restarts (RFC 8445 §9) are generations: each generation is a fresh
:class:`AgentIceConnection` — new ufrag/pwd, new sockets, its own checks and
consent — so the credentials of each generation are validated by its own agent,
correctly by construction. :class:`~agent.stack.icemux.IceMux` stands where
aiortc's DTLS transport expects its ICE transport: it receives from every live
generation and sends on the newest generation that has a selected pair. Media
therefore keeps flowing on the old generation until the new one is selected
(make-before-break), and the DTLS association rides across the restart
untouched, as in browsers.

Private aioice names used here are listed in :mod:`agent.stack.pins` and pinned by
a test, so an upgrade fails loudly in one place.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import aioice
from aioice import stun
from aioice.ice import CandidatePair, server_reflexive_candidate
from aiortc import RTCIceGatherer

from agent.stack.config import CONSENT_EXPIRY_S, CONSENT_INTERVAL_S, IceProfile
from agent.stack.fastroute import reader as fast_reader
from agent.stack.hostsockets import host_candidates
from agent.stack.ice_profile import (
    WEAK_RECEIVE_TIMEOUT_S,
    follows_far_end,
    libwebrtc_ping_interval_s,
    nominates_on_ping,
    stable_ping_interval_s,
)
from agent.stack.iceconnect import PromptChecks
from agent.stack.icemedia import IceMediaPath, MediaSink
from agent.stack.icemux import IceMux
from agent.stack.icenet import (
    Address,
    DatagramFilter,
    Delay,
    FilteredTransport,
    SideNet,
    SocketFactory,
    SocketRoute,
    SocketTap,
    WireDirection,
)
from agent.stack.liveness import ConsentFreshness, ice_failure_held_s
from agent.stack.selected import SelectedPair

logger = logging.getLogger(__name__)


WireTap = Callable[[WireDirection, bytes], None]
PairListener = Callable[[SelectedPair], None]

#: libwebrtc's WEAK_CONNECTION_RECEIVE_TIMEOUT: a pair that received nothing
#: this long is no longer "receiving", and a controlled agent may leave it.
RECEIVING_TIMEOUT_S = 2.5
#: server-reflexive gathering gives up after this long (RFC 8489 would retry 39 s)
SRFLX_TIMEOUT_S = 3.0


def _describe_pair(pair: CandidatePair) -> SelectedPair:
    return SelectedPair(
        local=pair.local_addr,
        remote=pair.remote_addr,
        local_type=pair.local_candidate.type,
        remote_type=pair.remote_candidate.type,
    )


class AgentIceConnection(IceMediaPath, PromptChecks, aioice.Connection):
    """An aioice connection bound to chosen host addresses, with taps."""

    def __init__(
        self,
        *,
        host_addresses: list[str],
        consent_interval_s: float | None = None,
        consent_expiry_s: float = CONSENT_EXPIRY_S,
        rng: random.Random | None = None,
        net: SideNet | None = None,
        receiving_timeout_s: float = RECEIVING_TIMEOUT_S,
        ice_profile: IceProfile = IceProfile.LIBWEBRTC,
        media_path: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("use_ipv6", False)
        super().__init__(**kwargs)
        self.host_addresses = list(host_addresses)
        self.wire_tap: WireTap | None = None
        self.pair_listener: PairListener | None = None
        self._last_selected: SelectedPair | None = None
        self.ice_profile = ice_profile
        #: the interval between pings on a healthy selected pair
        self.consent_interval_s = stable_ping_interval_s(
            ice_profile, consent_interval_s
        )
        self.consent_expiry_s = consent_expiry_s
        self._rng = rng or random.Random()
        #: loop time of the last datagram (STUN or data) from the far end
        self.last_received: float | None = None
        #: set once consent has expired (RFC 7675 §5.1)
        self.consent_expired = asyncio.Event()
        #: the consent clock of the running ``query_consent`` (None before it)
        self.consent: ConsentFreshness | None = None
        #: impairments on this generation's sockets only, applied before the
        #: side's (``net.filters``)
        self.filters: list[DatagramFilter] = []
        #: the side's network, shared across generations (see :class:`SideNet`)
        self.net = net or SideNet()
        self.receiving_timeout_s = receiving_timeout_s
        self._taps: list[SocketTap] = []
        #: loop time of the last datagram per (socket id, far-end address)
        self._received_on: dict[tuple[int, Address], float] = {}
        #: a held ICE failure is looked at again then
        self._failure_recheck: asyncio.TimerHandle | None = None
        self.init_media_path(media_path)

    @property
    def tie_breaker(self) -> int:
        return int(self._tie_breaker)

    @tie_breaker.setter
    def tie_breaker(self, value: int) -> None:
        # Keep one tie-breaker across generations, so a role conflict after a
        # restart resolves the same way as before it (RFC 8445 §7.3.1.1).
        self._tie_breaker = value

    def _stamp(self) -> None:
        self.last_received = asyncio.get_running_loop().time()

    # -- gathering -------------------------------------------------------
    async def gather_candidates(self) -> None:
        """Gather host candidates on the chosen addresses only, and a
        server-reflexive one per host socket when the side has a STUN server."""
        if self._local_candidates_start:
            return
        self._local_candidates_start = True
        for component in sorted(self._components):
            if self.net.socket_factory is not None:
                self._local_candidates += await host_candidates(self, component)
                continue
            self._local_candidates += await self.get_component_candidates(
                component=component, addresses=self.host_addresses
            )
        for protocol in self._protocols:
            self._filter_socket(protocol)
        if self.net.stun_server is not None:
            # After the sockets are routed: the STUN request must go out the
            # way the side's traffic does (through its NAT), RFC 8445 §5.1.1.2.
            for protocol in list(self._protocols):
                await self._gather_srflx(protocol, self.net.stun_server)
        self._local_candidates_end = True

    async def _gather_srflx(self, protocol: Any, server: Address) -> None:
        try:
            candidate, _ = await asyncio.wait_for(
                server_reflexive_candidate(protocol, server), SRFLX_TIMEOUT_S
            )
        except (stun.TransactionError, TimeoutError, OSError) as exc:
            logger.info(
                "%s: no server-reflexive candidate from %s: %s", self, server, exc
            )
            return
        local = protocol.local_candidate
        # RFC 8445 §5.1.3: a srflx equal to its base (no NAT) is redundant.
        if (candidate.host, candidate.port) != (local.host, local.port):
            self._local_candidates.append(candidate)

    def attach_net(self, net: SideNet) -> None:
        """Join the side's shared network (idempotent); live sockets move too."""
        if net is self.net:
            return
        self.net = net
        for tap in self._taps:
            if tap not in net.taps:
                net.taps.append(tap)

    def verdict(
        self, direction: WireDirection, data: bytes, addr: Address
    ) -> float | None:
        """Seconds of delay for this datagram, or None when it is dropped."""
        if not self.filters and not self.net.filters:
            return 0.0  # nothing impairs this side: every datagram's case
        delay = 0.0
        for chain in (self.filters, self.net.filters):
            for impairment in list(chain):
                verdict = impairment.admit(direction, data, addr)
                if verdict is False:
                    return None
                if isinstance(verdict, Delay):
                    delay += max(0.0, verdict.seconds)
        return delay

    def _filter_socket(self, protocol: Any) -> None:
        """Route one socket's traffic, both ways, through the side's network."""
        tap = SocketTap(self, protocol)
        self._taps.append(tap)
        self.net.taps.append(tap)
        self.add_media_tap(protocol, tap)

        def datagram_received(data: bytes, addr: Any) -> None:
            tap.deliver(data, (addr[0], addr[1]), None, True)

        def sendto(data: bytes, addr: Any = None) -> None:
            tap.outbound(data, (addr[0], addr[1]))

        protocol.datagram_received = datagram_received
        try:
            protocol.transport.sendto = sendto
        except AttributeError:
            # uvloop's transport is a C type with a read-only sendto.
            protocol.transport = FilteredTransport(protocol.transport, sendto)
        # Arrival times from the kernel, not from when the loop got round to
        # the datagram (a stalled loop must not look like a network gap).
        tap.read_kernel_time(fast_reader)

    # -- following the far end to a new address (same generation) ---------
    def note_received(
        self, protocol: Any, addr: Address, data: bytes, at: float
    ) -> None:
        # ``at``: when it reached the host (the monotonic clock, as the loop's)
        self._received_on[(protocol.id, addr)] = at
        if not self.ice_controlling and data and data[0] > 3:
            # RFC 7983: not STUN. Media arriving on a valid non-selected pair.
            chosen = self._nominated.get(1)
            if chosen and (chosen.protocol, chosen.remote_addr) == (protocol, addr):
                return  # on the selected pair: the usual case, nothing to follow
            pair = self._valid_pair(protocol, addr)
            if pair is not None:
                self._maybe_follow(pair, at)

    def _valid_pair(self, protocol: Any, addr: Address) -> CandidatePair | None:
        for pair in self._check_list:
            if (
                pair.protocol is protocol
                and pair.remote_addr == addr
                and pair.state == CandidatePair.State.SUCCEEDED
            ):
                return pair
        return None

    def _maybe_follow(self, pair: CandidatePair, now: float) -> None:
        """libwebrtc's controlled side: leave a selected pair that stopped
        receiving for a valid pair that receives (the far end moved: a NAT
        rebinding, a path change)."""
        selected = self._nominated.get(pair.component)
        if selected is None or selected is pair or self._closing:
            return
        if not follows_far_end(self.ice_profile):
            return
        last = self._received_on.get((selected.protocol.id, selected.remote_addr))
        if last is not None and now - last < self.receiving_timeout_s:
            return
        heard = self._received_on.get((pair.protocol.id, pair.remote_addr))
        if heard is None or now - heard >= self.receiving_timeout_s:
            return
        logger.info("%s: selected pair follows the far end to %s", self, pair)
        pair.nominated = True
        self._nominated[pair.component] = pair
        self._notify_selected()

    # -- wire tap --------------------------------------------------------
    async def sendto(self, data: bytes, component: int) -> None:
        if self.wire_tap is not None:
            self.wire_tap(WireDirection.OUTBOUND, data)
        await super().sendto(data, component)

    def data_received(self, data: bytes, component: int) -> None:
        self._stamp()
        if self.wire_tap is not None:
            self.wire_tap(WireDirection.INBOUND, data)
        super().data_received(data, component)

    def request_received(self, message: stun.Message, addr: Any, protocol: Any) -> None:
        # A far end's check or consent request is a sign of life too.
        self._stamp()
        super().request_received(message, addr, protocol)

    # -- ICE failure (RFC 8445) --------------------------------------------
    def _check_list_maybe_fail(self) -> None:
        if self._check_list_done or self._closing:
            return
        loop = asyncio.get_running_loop()
        last_heard = max(self._received_on.values(), default=None)
        held_s = ice_failure_held_s(loop.time(), last_heard)
        if held_s > 0 and self._failure_pending():
            # The far end is checking us: its checks, and the triggered
            # checks on the peer-reflexive pairs they create, are due.
            if self._failure_recheck is not None:
                self._failure_recheck.cancel()
            self._failure_recheck = loop.call_later(held_s, self._check_list_maybe_fail)
            return
        super()._check_list_maybe_fail()

    def _failure_pending(self) -> bool:
        """Whether aioice would declare the check list failed right now."""
        if self._remote_candidates_expected():
            return False
        states = [p.state for p in self._check_list]
        done = (CandidatePair.State.SUCCEEDED, CandidatePair.State.FAILED)
        if any(state not in done for state in states):
            return False
        succeeded = CandidatePair.State.SUCCEEDED in states
        return self.ice_controlling or not succeeded

    # -- pings on the selected pair: consent (RFC 7675), nomination ----------
    async def query_consent(self) -> None:
        """Pings on the selected pair at the profile's cadence; expiry is
        reported, not a close.

        The expiry rules are :class:`ConsentFreshness`'s and the cadence and
        nomination :mod:`agent.stack.ice_profile`'s; this loop only sends the
        pings and reads the clock."""
        assert self.remote_password is not None
        loop = asyncio.get_running_loop()
        consent = ConsentFreshness(
            interval_s=self.consent_interval_s,
            expiry_s=self.consent_expiry_s,
            rng=self._rng,
            started_at=loop.time(),
        )
        self.consent = consent
        rtt_samples = 0
        missing_response = False
        while True:
            if self.ice_profile is IceProfile.LIBWEBRTC:
                last = self.last_received
                delay = libwebrtc_ping_interval_s(
                    self.consent_interval_s,
                    rtt_samples=rtt_samples,
                    missing_response=missing_response,
                    receiving=last is not None
                    and loop.time() - last < WEAK_RECEIVE_TIMEOUT_S,
                )
            else:
                delay = consent.next_check_in()
            await asyncio.sleep(delay)
            nominate = (
                nominates_on_ping(self.ice_profile, controlling=self.ice_controlling)
                and not self.remote_is_lite
            )
            for pair in list(self._nominated.values()):
                request = self.build_request(pair, nominate=nominate)
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=self.remote_password.encode("utf8"),
                        retransmissions=0,
                    )
                except stun.TransactionError:
                    consent.unanswered()
                    missing_response = True
                else:
                    consent.answered(loop.time())
                    rtt_samples += 1
                    missing_response = False
                    self._stamp()
            if consent.expired(loop.time()):
                logger.info("%s: consent expired", self)
                self.consent_expired.set()
                return

    @property
    def consent_failures(self) -> int:
        return 0 if self.consent is None else self.consent.failures

    # -- selected pair ---------------------------------------------------
    def check_complete(self, pair: CandidatePair) -> None:
        super().check_complete(pair)
        if (
            not self.ice_controlling
            and pair.state == CandidatePair.State.SUCCEEDED
            and self._nominated
        ):
            # A triggered check toward a far end that moved just succeeded.
            self._maybe_follow(pair, asyncio.get_running_loop().time())
        self._notify_selected()

    def _notify_selected(self) -> None:
        pair = self._nominated.get(1)
        if pair is None:
            return
        selected = _describe_pair(pair)
        if selected != self._last_selected:
            self._last_selected = selected
            if self.pair_listener is not None:
                self.pair_listener(selected)

    @property
    def selected_pair(self) -> SelectedPair | None:
        pair = self._nominated.get(1)
        return None if pair is None else _describe_pair(pair)


class AgentIceGatherer(RTCIceGatherer):
    """An ``RTCIceGatherer`` whose connection is an :class:`AgentIceConnection`.

    ``iceServers`` is always explicit: aiortc's default is a public STUN server,
    which this agent must never contact by accident.
    """

    def __init__(
        self,
        *,
        host_addresses: list[str],
        consent_interval_s: float | None = None,
        consent_expiry_s: float = CONSENT_EXPIRY_S,
        rng: random.Random | None = None,
        net: SideNet | None = None,
        ice_profile: IceProfile = IceProfile.LIBWEBRTC,
    ) -> None:
        super().__init__(iceServers=[])
        self.connection = AgentIceConnection(
            host_addresses=host_addresses,
            ice_controlling=False,
            consent_interval_s=consent_interval_s,
            consent_expiry_s=consent_expiry_s,
            rng=rng,
            net=net,
            ice_profile=ice_profile,
            # SRTP goes to the DTLS-SRTP transport by the direct path.
            media_path=True,
        )
        # RTCIceTransport takes the gatherer's connection for send/recv.
        self._connection = self.connection


__all__ = [
    "CONSENT_EXPIRY_S",
    "CONSENT_INTERVAL_S",
    "Address",
    "AgentIceConnection",
    "AgentIceGatherer",
    "DatagramFilter",
    "Delay",
    "IceMux",
    "MediaSink",
    "SelectedPair",
    "SideNet",
    "SocketFactory",
    "SocketRoute",
    "SocketTap",
    "WireDirection",
    "WireTap",
]
