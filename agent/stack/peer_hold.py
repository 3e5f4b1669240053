"""Hold and resume of a :class:`~agent.stack.peer.Peer` by offer/answer.

A re-offer may change the audio direction (RFC 3264 §8.4: ``recvonly`` or
``inactive`` puts the other side's sending on hold, ``sendrecv`` resumes).
:mod:`agent.stack.negotiation` settles the direction (JSEP §5.3.1); here the
peer acts on it: its RTP sender stops or resumes, and its listener hears the
new direction (media to this side due or not, for the receiver's verdict).
Kept beside the facade, as :mod:`agent.stack.peer_ice` is, so ``peer.py``
stays one concern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.errors import CallError

if TYPE_CHECKING:
    from agent.stack.peer import Peer


class PeerHold:
    """The direction a peer last acted on, and the re-offer that changes it."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        #: the direction last negotiated and acted on (None: none yet)
        self.direction: str | None = None

    async def set_direction(self, direction: str) -> None:
        """Re-offer asking for ``direction`` (``recvonly``/``inactive``: this
        side stops sending, a hold; ``sendrecv``: it resumes), no ICE restart."""
        peer = self.peer
        if peer.negotiated is None or peer.renegotiate is None:
            raise CallError(f"{peer.name}: no established call to re-offer on")
        peer.negotiation.want_direction(direction)
        await peer._renegotiate(await peer.create_offer())

    async def follow(self) -> None:
        """After an offer/answer settled: the sender follows the negotiated
        direction, and the listener hears of a change."""
        peer = self.peer
        neg = peer.negotiated
        if neg is None or neg.local_direction == self.direction:
            return
        self.direction = neg.local_direction
        peer._listener.on_media_direction(neg.local_direction)
        if peer.sender is not None:
            if neg.sends:
                peer.sender.start()
            else:
                await peer.sender.stop()
