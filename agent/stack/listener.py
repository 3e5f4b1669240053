"""What a peer reports (:class:`PeerListener`), and a listener that ignores it.

The observer (``agent/observe``) implements :class:`PeerListener`; the stack
calls it synchronously from the event loop, never from another thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.stack.config import PeerState
from agent.stack.ice import SelectedPair, WireDirection

#: Signalling for renegotiation: hand our offer to the far end, get its answer.
Renegotiate = Callable[[str], Awaitable[str]]


class PeerListener(Protocol):
    """What a peer reports; the observer implements it.

    ``generation`` numbers ICE generations: 0 is the initial one, each ICE
    restart adds one. ``initiator`` is ``"local"`` or ``"remote"``.
    """

    def on_ice_gathering(self, state: str, generation: int) -> None: ...
    def on_ice_state(self, state: str, generation: int) -> None: ...
    def on_dtls_state(self, state: str, at_ms: float | None = None) -> None: ...
    def on_connection_state(self, state: PeerState) -> None: ...
    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None: ...
    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None: ...
    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None: ...
    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None: ...
    def on_dtls_rehandshake_ended(
        self, outcome: str, detail: dict[str, Any]
    ) -> None: ...
    def on_certificate(self, info: dict[str, Any]) -> None: ...
    def on_wire(self, direction: WireDirection, data: bytes) -> None:
        """Each datagram of the ICE agent's ordinary path (STUN, DTLS) as it
        is sent or received; SRTP takes the media path and is not shown."""

    def on_rtp(
        self, ssrc: int, seq: int, timestamp: int, arrival_ms: float
    ) -> None: ...
    def on_rtp_bye(self, ssrc: int) -> None: ...
    def on_media_direction(self, direction: str) -> None: ...


class NullListener:
    """A ``PeerListener`` that ignores everything; subclass it to hear a few events."""

    def on_ice_gathering(self, state: str, generation: int) -> None:
        pass

    def on_ice_state(self, state: str, generation: int) -> None:
        pass

    def on_dtls_state(self, state: str, at_ms: float | None = None) -> None:
        pass

    def on_connection_state(self, state: PeerState) -> None:
        pass

    def on_selected_pair(self, pair: SelectedPair, generation: int) -> None:
        pass

    def on_ice_restart_started(
        self, generation: int, initiator: str, trigger: str, cause: str | None
    ) -> None:
        pass

    def on_ice_restart_ended(
        self, generation: int, outcome: str, pair: SelectedPair | None
    ) -> None:
        pass

    def on_dtls_rehandshake_started(
        self, initiator: str, trigger: str, cause: str | None
    ) -> None:
        pass

    def on_dtls_rehandshake_ended(self, outcome: str, detail: dict[str, Any]) -> None:
        pass

    def on_certificate(self, info: dict[str, Any]) -> None:
        pass

    def on_wire(self, direction: WireDirection, data: bytes) -> None:
        pass

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, arrival_ms: float) -> None:
        pass

    def on_rtp_bye(self, ssrc: int) -> None:
        pass

    def on_media_direction(self, direction: str) -> None:
        pass
