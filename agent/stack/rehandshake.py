"""The DTLS rehandshake span as a state machine (no I/O).

A rehandshake is *announced* (the observer opens its span: initiator, trigger,
cause), then a new association is *set up* on the live call, then it *completes*
or *fails*; a call that ends meanwhile leaves it *incomplete*. Between the
announcement and the association there may be a re-offer in flight (a new
certificate's fingerprint must reach the far end first, JSEP §5.2.1), so the two
steps are separate states::

    IDLE --begin--> ANNOUNCED --associate--> HANDSHAKING
      ^               |  |                      |
      |               |  +--begin (joins)       |
      +----fail/stop--+      <--complete/fail/stop--+

* A far end's ClientHello that arrives while our own announced rehandshake
  waits for its re-offer's answer *joins* it (``begin`` in ANNOUNCED): one
  rehandshake, not two.
* The outcome of an association this span did not start (one whose
  rehandshake was already aborted) is stale and ignored.
* Anything else raises :class:`IllegalRehandshakeTransition`: a second
  association while one is being set up is a bug, not a network event.

:class:`agent.stack.dtls.SrtpTransport` drives it; the listener hears
``started`` on the way out of IDLE and ``ended`` on the way back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RehandshakeState(enum.StrEnum):
    IDLE = "idle"
    ANNOUNCED = "announced"
    HANDSHAKING = "handshaking"


class RehandshakeEvent(enum.StrEnum):
    BEGIN = "begin"
    ASSOCIATE = "associate"
    COMPLETE = "complete"
    FAIL = "fail"
    STOP = "stop"


_S, _E = RehandshakeState, RehandshakeEvent

#: (state, event) -> next state; a missing pair is illegal.
REHANDSHAKE_TRANSITIONS: dict[
    tuple[RehandshakeState, RehandshakeEvent], RehandshakeState
] = {
    (_S.IDLE, _E.BEGIN): _S.ANNOUNCED,
    (_S.IDLE, _E.FAIL): _S.IDLE,  # an abort with nothing open: nothing to say
    (_S.IDLE, _E.STOP): _S.IDLE,
    (_S.ANNOUNCED, _E.BEGIN): _S.ANNOUNCED,  # joins the announced one
    (_S.ANNOUNCED, _E.ASSOCIATE): _S.HANDSHAKING,
    (_S.ANNOUNCED, _E.FAIL): _S.IDLE,  # e.g. the re-offer was refused
    (_S.ANNOUNCED, _E.STOP): _S.IDLE,
    (_S.HANDSHAKING, _E.COMPLETE): _S.IDLE,
    (_S.HANDSHAKING, _E.FAIL): _S.IDLE,
    (_S.HANDSHAKING, _E.STOP): _S.IDLE,
}


class IllegalRehandshakeTransition(RuntimeError):
    """An event the rehandshake state machine does not allow in its state (a
    programming error in the stack, never the far end's doing)."""


@dataclass(frozen=True)
class Step:
    """What one event did: the states around it, and what to tell the listener."""

    before: RehandshakeState
    after: RehandshakeState
    #: the listener hears "started" (a span opened)
    opened: bool
    #: the listener hears "ended" (a span closed)
    closed: bool


class RehandshakeMachine:
    """One transport's rehandshake span: state, and the association it waits on."""

    def __init__(self) -> None:
        self.state = RehandshakeState.IDLE
        #: number of the association this span set up (HANDSHAKING only)
        self.association: int | None = None

    def handle(self, event: RehandshakeEvent, association: int | None = None) -> Step:
        """Apply ``event``. ``association`` names the association a
        ``associate``/``complete``/``fail`` is about; the outcome of another
        association than the span's is stale and changes nothing."""
        before = self.state
        if (
            event in (_E.COMPLETE, _E.FAIL)
            and association is not None
            and association != self.association
        ):
            return Step(before, before, opened=False, closed=False)
        after = REHANDSHAKE_TRANSITIONS.get((before, event))
        if after is None:
            raise IllegalRehandshakeTransition(
                f"DTLS rehandshake: {event} is not allowed in state {before}"
            )
        self.state = after
        if event is _E.ASSOCIATE:
            self.association = association
        elif after is _S.IDLE:
            self.association = None
        return Step(
            before,
            after,
            opened=before is _S.IDLE and after is _S.ANNOUNCED,
            closed=before is not _S.IDLE and after is _S.IDLE,
        )

    @property
    def idle(self) -> bool:
        return self.state is RehandshakeState.IDLE
