"""The step registry: every action a scenario timeline can take, by name.

Theory of operation
-------------------
A scenario file lists steps as ``{at: 5s, do: <name>, side: <caller|callee>,
...params}``. ``do`` picks a :class:`Step` class from :data:`STEPS`; the rest
of the mapping, minus ``at``/``do``/``side``, is validated by that class's own
``Params`` model. This is toxiproxy's shape (each fault a small registered
class built from a declarative ``{type, side, params}`` spec) so a new cause
(ICE restart, DTLS rehandshake, NAT rebind, blackhole, ...) is one class and
one decorator, with no change to the loader or the file format.

A step does not own the call. It gets a :class:`StepTarget`, the narrow face
of a live call that the call layer implements, and asks it to act. When a new
step needs a new capability, add one method to :class:`StepTarget` and
implement it in the call layer; every existing step and test fake keeps
working because a ``Protocol`` is checked structurally, per use.

Writing a step: copy :class:`Noop`, rename, give it a ``Params`` model if it
takes parameters (subclass :class:`StepParams`), say whether ``side`` is
``"required"``, ``"optional"`` or ``"none"``, write a one-line ``summary``,
and decorate it with :func:`register`. The module defining it must be
imported before scenarios are loaded.

Network faults are not written here: they are registered in
:mod:`agent.net.faults`, and :mod:`agent.scenario.steps_net` (which imports
this module, never the other way round) derives one step from each.
"""

from __future__ import annotations

import abc
import re
from typing import ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, StrictBool

from agent.net.faults.params import Cause
from agent.observe.model import Side

__all__ = [
    "RESERVED_KEYS",
    "STEPS",
    "DtlsRehandshake",
    "Hangup",
    "IceRestart",
    "MediaDirection",
    "Noop",
    "SbcFailover",
    "SidePolicy",
    "Step",
    "StepParams",
    "StepTarget",
    "register",
]

SidePolicy = Literal["required", "optional", "none"]

#: Keys of a step mapping that belong to the timeline, not to the step's params.
RESERVED_KEYS = frozenset({"at", "do", "side"})

# Dotted lowercase names group steps by layer: ``net.blackhole``, ``ice.restart``.
_STEP_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")


class StepTarget(Protocol):
    """The live call as a step sees it; the call layer implements this.

    Grows one method per capability later steps need (``restart_ice``,
    ``rehandshake_dtls``, ``impair``...). Keep each method small and named
    for what happens on the wire.
    """

    async def hangup(self, side: Side) -> None:
        """``side`` ends the call (closes its peer connection)."""
        ...

    def note(self, side: Side | None, text: str) -> None:
        """Put a free-text note on the call's timeline (``None``: the call)."""
        ...

    async def restart_ice(self, side: Side, cause: str | None) -> None:
        """``side`` starts an ICE restart (RFC 8445 §9) by re-offering."""
        ...

    async def rehandshake_dtls(
        self,
        side: Side,
        *,
        rotate_certificate: bool,
        ice_restart: bool,
        cause: str | None,
    ) -> None:
        """``side`` starts a new DTLS association on the live call."""
        ...

    async def set_direction(self, side: Side, direction: str) -> None:
        """``side`` re-offers asking for ``direction`` (no ICE restart)."""
        ...

    async def fail_over(self, side: Side, *, ice_restart: bool) -> None:
        """``side`` acts as an SBC failing over to a backup with no DTLS state."""
        ...


class StepParams(BaseModel):
    """Base for a step's parameters: unknown keys are errors, values immutable.

    Used as-is, it is the empty model of a step that takes no parameters.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(abc.ABC):
    """One action on the scenario timeline. Subclass, then :func:`register`."""

    #: what scenario files write after ``do:``; dotted lowercase, unique
    name: ClassVar[str]
    #: whether ``side:`` must be given, may be given, or must not be given
    side: ClassVar[SidePolicy]
    #: the step's parameters, written inline next to ``at``/``do``/``side``
    Params: ClassVar[type[BaseModel]] = StepParams
    #: one line for ``callagent steps``
    summary: ClassVar[str]
    #: the call is over once this step ran; the runner ends the scenario early
    ends_call: ClassVar[bool] = False

    def required_side(self, side: Side | None) -> Side:
        """``side`` of a ``side = "required"`` step (StepSpec enforces it;
        this guards direct callers)."""
        if side is None:
            raise ValueError(f"{self.name} needs a side")
        return side

    @abc.abstractmethod
    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        """Act on ``target``. ``params`` is an instance of ``self.Params``."""


StepClass = TypeVar("StepClass", bound=type[Step])

#: Every registered step by name. Read-only outside :func:`register`.
STEPS: dict[str, type[Step]] = {}


def register(cls: StepClass) -> StepClass:
    """Class decorator: add ``cls`` to :data:`STEPS` under ``cls.name``.

    Checks here are for the step's author, so they raise plain ``TypeError``/
    ``ValueError`` at import time rather than a user-facing ``ScenarioError``.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
        raise TypeError(
            f"{cls.__qualname__}.name must be a dotted lowercase name like "
            f"'net.blackhole', got {name!r}"
        )
    if getattr(cls, "side", None) not in ("required", "optional", "none"):
        raise TypeError(
            f"{cls.__qualname__}.side must be 'required', 'optional' or 'none'"
        )
    summary = getattr(cls, "summary", None)
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary:
        raise TypeError(f"{cls.__qualname__}.summary must be one non-empty line")
    params = cls.Params
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(f"{cls.__qualname__}.Params must be a pydantic model")
    if params.model_config.get("extra") != "forbid":
        # A misspelt parameter must be an error, not a silently ignored key.
        raise TypeError(f"{cls.__qualname__}.Params must set extra='forbid'")
    # "params" too: StepSpec accepts an already-built ``params=`` in code.
    clashing = (RESERVED_KEYS | {"params"}).intersection(params.model_fields)
    if clashing:
        raise TypeError(
            f"{cls.__qualname__}.Params cannot use the reserved field names "
            f"{sorted(clashing)}"
        )
    if name in STEPS:
        other = STEPS[name]
        raise ValueError(
            f"step name {name!r} is already registered by "
            f"{other.__module__}.{other.__qualname__}"
        )
    STEPS[name] = cls
    return cls


@register
class Noop(Step):
    """Does nothing and records nothing: the minimal step, and the template.

    A scenario uses it to hold a place on the timeline (``{at: 5s, do: noop}``)
    or to check a file without side effects. It concerns neither peer, so it
    takes no ``side``. To write a real step, copy this class and change:

    * ``name``: dotted by layer, e.g. ``"net.blackhole"``;
    * ``side``: ``"required"`` if the action belongs to one peer (it is given
      to :meth:`run` as a :class:`~agent.observe.model.Side`), ``"none"`` if
      it is about the whole call, ``"optional"`` if both make sense;
    * ``Params``: a :class:`StepParams` subclass, e.g.
      ``class Params(StepParams): duration: Duration``; then, in :meth:`run`,
      ``assert isinstance(params, self.Params)`` narrows it for the type
      checker;
    * ``summary``: one line for ``callagent steps``;
    * :meth:`run`: ask the :class:`StepTarget` to act. If it needs something
      the target cannot do yet, add a method to :class:`StepTarget`.
    """

    name = "noop"
    side = "none"
    summary = "do nothing (a placeholder on the timeline)"

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        return None


@register
class Hangup(Step):
    """``side`` ends the call; the runner then ends the scenario early.

    Whatever the far end does afterwards (``closed``, or ``failed`` once consent
    freshness expires, RFC 7675) is for the observer to record, not this step.
    """

    name = "hangup"
    side = "required"
    summary = "the given side hangs up; the scenario ends early"
    ends_call = True

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        # StepSpec enforces side="required"; this guards direct callers.
        if side is None:
            raise ValueError("hangup needs a side")
        await target.hangup(side)


class IceRestartParams(StepParams):
    #: what the restart stands for on the timeline (default ``manual``)
    cause: Cause | None = None


@register
class IceRestart(Step):
    """``side`` restarts ICE: new ufrag/pwd, new candidates, new checks.

    The step returns once the re-offer is under way; the restart itself
    completes (or fails) on the call, make-before-break, and the observers
    record it with ``trigger: step``. The DTLS association is kept.
    """

    name = "ice.restart"
    side = "required"
    Params = IceRestartParams
    summary = "the given side restarts ICE (re-offer with new ufrag/pwd)"

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        assert isinstance(params, IceRestartParams)
        await target.restart_ice(self.required_side(side), params.cause)


class DtlsRehandshakeParams(StepParams):
    #: new certificate, signalled by a re-offer (else: same certificates, a
    #: new ClientHello with no signalling)
    rotate_certificate: StrictBool = True
    #: make the re-offer an ICE restart too (RFC 8829 §5.11's expectation)
    ice_restart: StrictBool = False
    cause: Cause | None = None


@register
class DtlsRehandshake(Step):
    """``side`` starts a new DTLS association on the live call.

    Media keeps flowing under the old keys until the new association is up,
    then switches; the observers count one rehandshake, local on ``side``.
    """

    name = "dtls.rehandshake"
    side = "required"
    Params = DtlsRehandshakeParams
    summary = "the given side starts a new DTLS handshake (rotating its certificate)"

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        assert isinstance(params, DtlsRehandshakeParams)
        await target.rehandshake_dtls(
            self.required_side(side),
            rotate_certificate=params.rotate_certificate,
            ice_restart=params.ice_restart,
            cause=params.cause,
        )


class SbcFailoverParams(StepParams):
    #: the backup also starts a new ICE generation (new ufrag/pwd, new sockets)
    ice_restart: StrictBool = True


@register
class SbcFailover(Step):
    """``side`` fails over to a backup: new certificate, no DTLS state, a
    re-offer; the other side keeps its call and must handshake again."""

    name = "sbc.failover"
    side = "required"
    Params = SbcFailoverParams
    summary = "the given side fails over to a backup SBC (new cert, no DTLS state)"

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        assert isinstance(params, SbcFailoverParams)
        await target.fail_over(self.required_side(side), ice_restart=params.ice_restart)


class MediaDirectionParams(StepParams):
    #: the direction ``side`` asks for, from its own point of view
    direction: Literal["sendrecv", "sendonly", "recvonly", "inactive"]


@register
class MediaDirection(Step):
    """``side`` re-offers with a new audio direction (RFC 3264 §8.4): a hold
    (``recvonly``/``inactive``: ``side`` stops sending; ``sendonly``: the
    other side stops) or a resume (``sendrecv``). No ICE restart, same keys.

    Media a direction's receiver no longer expects is not due: silence from
    when it applied the re-offer until a later one resumes it is no gap, no
    lost packet and not one-way (docs/report.md).
    """

    name = "media.direction"
    side = "required"
    Params = MediaDirectionParams
    summary = "the given side re-offers a new audio direction (hold/resume)"

    async def run(
        self, target: StepTarget, side: Side | None, params: BaseModel
    ) -> None:
        assert isinstance(params, MediaDirectionParams)
        await target.set_direction(self.required_side(side), params.direction)
