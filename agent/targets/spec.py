"""What a far end *is*: a parsed ``--target`` / ``target:`` and its capabilities.

Theory of operation
-------------------
Every scenario plays the agent as the **caller** and the target as the
**callee**: ``side: callee`` steps are the far end's, and a far end nobody
here wrote can only do what it can do. :class:`Capabilities` says what that
is, per kind; :func:`refusals` compares a scenario's steps and settings with
it before any call is placed, so ``callagent check --target`` refuses a step
the target cannot perform (a WHIP endpoint cannot restart ICE on its own;
a browser cannot change a live RTCPeerConnection's certificate) in one line
instead of running a call that could only fail for the wrong reason.

Target syntax:

* ``agent`` (the default): the built-in far end, both sides played here;
* ``whip+http://…`` / ``whip+https://…``: any RFC 9725 endpoint, the agent is
  its WHIP client;
* ``browser:chromium``, ``browser:firefox``: launched headless by callagent,
  which serves the page; the page calls the agent over ``/ws``;
* ``janus``: a Janus (echotest over its HTTP API) that callagent launches
  in the call's kernel lab, behind nothing, with the agent behind the lab's
  NAT; ``janus+http(s)://HOST:PORT/janus[?admin=URL&secret=S]``: a Janus of
  the user's own, reached from this host's namespace (with its admin API,
  ``handle_info`` becomes the far end's view);
* ``gstreamer``: GStreamer's webrtcbin in a child process of the system
  Python (:mod:`agent.targets.gstreamer`), in the call's kernel lab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlencode

from agent.errors import UsageError
from agent.net.faults import FAULTS

__all__ = [
    "Capabilities",
    "StepView",
    "Target",
    "TargetError",
    "TargetKind",
    "parse_target",
    "refusals",
]


class TargetError(UsageError):
    """A ``--target`` / ``target:`` that cannot be used (exit 2)."""


class TargetKind(StrEnum):
    AGENT = "agent"
    WHIP = "whip"
    BROWSER = "browser"
    GSTREAMER = "gstreamer"
    JANUS = "janus"


@dataclass(frozen=True)
class Capabilities:
    """What the far end can do on a live call, as measured for its kind."""

    #: starts an ICE restart itself (``ice.restart`` on the callee)
    restart_ice: bool
    #: changes its DTLS certificate on a live call (a far-end rehandshake)
    change_certificate: bool
    #: after the agent's address moves, sends to the new one by itself
    #: (peer-reflexive learning, RFC 8445 §7.3.1.3); None: not known
    follows_moved_peer: bool | None
    #: sends its candidates as it gathers them (RFC 8838)
    trickles: bool
    #: hangs up on request (``hangup`` on the callee)
    hang_up: bool
    #: answers re-offers from the agent (anything but an ICE restart needs one)
    answers_reoffers: bool
    #: handshakes a new DTLS association when the agent re-offers a new
    #: certificate fingerprint with an ICE restart (RFC 8842 §5); None: not known
    takes_new_certificate: bool | None = None
    #: answers the agent's ICE restart with new credentials (RFC 8445 §9); an
    #: answer with its old ones makes the restart ``rejected``
    takes_ice_restart: bool | None = True

    def as_dict(self) -> dict[str, bool | None]:
        return dataclasses.asdict(self)


AGENT_CAPABILITIES = Capabilities(
    restart_ice=True,
    change_certificate=True,
    follows_moved_peer=True,
    trickles=False,
    hang_up=True,
    answers_reoffers=True,
    takes_new_certificate=True,
)
#: What RFC 9725 lets any endpoint do: the client restarts, nothing else.
WHIP_CAPABILITIES = Capabilities(
    restart_ice=False,
    change_certificate=False,
    follows_moved_peer=None,
    trickles=False,
    hang_up=False,
    answers_reoffers=False,
    takes_new_certificate=False,
)
#: Measured here (docs/targets.md): both restart with pc.restartIce(); no
#: browser can change a live RTCPeerConnection's certificate.
BROWSER_CAPABILITIES = {
    "chromium": Capabilities(
        restart_ice=True,
        change_certificate=False,
        follows_moved_peer=True,
        trickles=True,
        hang_up=True,
        answers_reoffers=True,
        takes_new_certificate=True,
    ),
    "firefox": Capabilities(
        restart_ice=True,
        change_certificate=False,
        # issue 13: after our port changes Firefox never moves to the new pair
        follows_moved_peer=False,
        trickles=True,
        hang_up=True,
        answers_reoffers=True,
        # Measured (docs/targets.md): Firefox ESR 153 answers the re-offer and
        # completes the ICE restart, but keeps its first DTLS association and
        # never answers the agent's new handshake (its MediaTransportHandler
        # builds a transport's DTLS flow only when it has none).
        takes_new_certificate=False,
    ),
}
#: Measured here with Debian's GStreamer 1.22 (docs/targets.md): webrtcbin
#: answers re-offers but keeps its ufrag on a restart (the agent's restart is
#: ``rejected``), has no API to restart or change its certificate by itself.
GSTREAMER_CAPABILITIES = Capabilities(
    restart_ice=False,
    change_certificate=False,
    # libnice learns the agent's new peer-reflexive address (~0.8 s, measured)
    follows_moved_peer=True,
    trickles=False,
    hang_up=False,
    answers_reoffers=True,
    # A restart rides on the rejected ICE restart: never completes.
    takes_new_certificate=False,
    takes_ice_restart=False,
)
#: Janus 1.1.2's echotest, measured here (issue 13, docs/targets.md): it
#: answers the agent's re-offers (an ICE restart moves its pair) but never
#: starts one; it stores a new remote fingerprint and never handshakes again
#: (media goes on over the old association); it hangs up only when its
#: session goes. A moved peer: libnice (controlled) does not move on
#: peer-reflexive checks alone (with ``ice_profile: rfc`` it keeps sending to
#: the old port, as issue 13 saw), but it does move to a pair the agent
#: nominates again, which the default libwebrtc profile does from the new
#: port within a ping interval: measured, it follows.
JANUS_CAPABILITIES = Capabilities(
    restart_ice=False,
    change_certificate=False,
    follows_moved_peer=True,
    # half-trickle: it takes trickled candidates, its own are in its answer
    trickles=False,
    hang_up=False,
    answers_reoffers=True,
    takes_new_certificate=False,
)


@dataclass(frozen=True)
class Target:
    """One far end: what the user wrote, its kind and what it can do."""

    text: str
    kind: TargetKind
    capabilities: Capabilities
    #: the WHIP endpoint or the user's Janus API (``http(s)://…``, the
    #: ``whip+`` / ``janus+`` dropped); None for a Janus callagent launches
    url: str | None = None
    #: ``chromium`` or ``firefox``
    browser: str | None = None
    #: a user's Janus: its admin API and secret (``?admin=…&secret=…``)
    admin_url: str | None = None
    admin_secret: str | None = None
    #: what the user wrote, when ``text`` (shown, reported) leaves a secret out
    written: str | None = None

    def as_argument(self) -> str:
        """The target as ``--target`` takes it (a worker process's argv)."""
        return self.written or self.text

    @property
    def launches_janus(self) -> bool:
        """callagent runs this far end itself, inside the call's kernel lab."""
        return self.kind is TargetKind.JANUS and self.url is None

    @property
    def is_agent(self) -> bool:
        return self.kind is TargetKind.AGENT

    @property
    def needs_lab(self) -> bool:
        """Every call needs a kernel lab: the far end lives in its outside
        namespace (libnice skips loopback): a launched Janus, GStreamer."""
        return self.launches_janus or self.kind is TargetKind.GSTREAMER

    def __str__(self) -> str:
        return self.text


AGENT = Target("agent", TargetKind.AGENT, AGENT_CAPABILITIES)


def parse_target(text: str | None) -> Target:
    """``text`` as a :class:`Target`; :class:`TargetError` in one line if not."""
    if text is None or text == "agent":
        return AGENT
    shown = text if len(text) <= 80 else text[:77] + "..."
    scheme, sep, rest = text.partition("://")
    if text.startswith("browser:"):
        name = text.removeprefix("browser:")
        if name not in BROWSER_CAPABILITIES:
            known = ", ".join(f"browser:{b}" for b in BROWSER_CAPABILITIES)
            raise TargetError(f"unknown browser target {shown!r}; known: {known}")
        return Target(
            text, TargetKind.BROWSER, BROWSER_CAPABILITIES[name], browser=name
        )
    if text == "gstreamer":
        return Target(text, TargetKind.GSTREAMER, GSTREAMER_CAPABILITIES)
    if text == "janus":
        return Target(text, TargetKind.JANUS, JANUS_CAPABILITIES)
    if sep and scheme in ("janus+http", "janus+https"):
        return _janus_target(text, scheme, rest, shown)
    if sep and scheme in ("whip+http", "whip+https"):
        if not rest or rest.startswith("/"):
            raise TargetError(f"target {shown!r} has no host")
        url = f"{scheme.removeprefix('whip+')}://{rest}"
        return Target(text, TargetKind.WHIP, WHIP_CAPABILITIES, url=url)
    raise TargetError(
        f"unknown target {shown!r}; use agent, whip+http(s)://HOST/PATH, "
        "browser:chromium, browser:firefox, gstreamer, janus or "
        "janus+http(s)://HOST/janus"
    )


def _janus_target(text: str, scheme: str, rest: str, shown: str) -> Target:
    """``janus+http(s)://HOST:PORT/PATH[?admin=URL&secret=S]``."""
    if not rest or rest.startswith("/"):
        raise TargetError(f"target {shown!r} has no host")
    where, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    admin, secret = params.pop("admin", None), params.pop("secret", None)
    if params:
        raise TargetError(
            f"target {shown!r}: unknown parameter {sorted(params)[0]!r} "
            "(known: admin, secret)"
        )
    if admin is not None and not admin.startswith(("http://", "https://")):
        raise TargetError(f"target {shown!r}: admin must be an http(s):// URL")
    if secret is not None and admin is None:
        raise TargetError(f"target {shown!r}: secret without admin")
    url = f"{scheme.removeprefix('janus+')}://{where}"
    # What the report shows: never the admin secret.
    shown_params = {} if admin is None else {"admin": admin}
    shown_text = f"{scheme}://{where}" + (
        f"?{urlencode(shown_params)}" if shown_params else ""
    )
    return Target(
        shown_text,
        TargetKind.JANUS,
        JANUS_CAPABILITIES,
        url=url,
        admin_url=admin,
        admin_secret=secret,
        written=text,
    )


@dataclass(frozen=True)
class StepView:
    """A scenario step as the targets layer sees it (it sits below scenario)."""

    index: int
    do: str
    side: str | None
    params: Mapping[str, Any]


#: The agent plays this side against a remote target; the target the other.
AGENT_SIDE, FAR_SIDE = "caller", "callee"


def refusals(
    target: Target,
    steps: Iterable[StepView],
    *,
    far_end_settings: Sequence[str] = (),
    nat_side: str | None = None,
) -> list[tuple[str, str]]:
    """``(where, why)`` for each thing in a scenario ``target`` cannot do.

    ``far_end_settings`` names the callee peer settings the file changed: they
    configure the built-in far end, which a remote target is not.
    """
    if target.is_agent:
        return []
    caps = target.capabilities
    out: list[tuple[str, str]] = []
    for name in far_end_settings:
        out.append(
            (
                f"peers.callee.{name}",
                f"configures the built-in far end; {target} is the callee here",
            )
        )
    if nat_side == FAR_SIDE:
        out.append(
            (
                "network.nat.side",
                f"the callee is {target}; only the agent (caller) can be put "
                "behind the NAT",
            )
        )
    for step in steps:
        why = _step_refusal(target, caps, step)
        if why is not None:
            out.append((f"steps[{step.index}]", f"{step.do} on the {step.side}: {why}"))
    return out


def _step_refusal(target: Target, caps: Capabilities, step: StepView) -> str | None:
    fault = FAULTS.get(step.do)
    if step.side == FAR_SIDE:
        if fault is not None:
            return f"{target}'s network is not the agent's to impair"
        needed = {
            "ice.restart": ("restart_ice", "cannot restart ICE itself"),
            "dtls.rehandshake": (
                "change_certificate",
                "cannot start a DTLS rehandshake or change its certificate",
            ),
            "sbc.failover": ("change_certificate", "cannot fail over to a backup"),
            "hangup": ("hang_up", "cannot be told to hang up"),
        }.get(step.do)
        if needed is None:
            return f"{target} cannot perform it"
        capability, reason = needed
        return None if getattr(caps, capability) else f"{target} {reason}"
    if step.side == AGENT_SIDE and not caps.answers_reoffers:
        rotates = step.do == "dtls.rehandshake" and step.params.get(
            "rotate_certificate", True
        )
        if step.do == "sbc.failover" or rotates:
            return (
                f"needs a re-offer with a new certificate, and {target} "
                "renegotiates nothing but ICE restarts (RFC 9725 §4.3)"
            )
    return None
