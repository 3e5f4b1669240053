"""A call whose far end is Janus's echotest plugin, over the Janus HTTP API.

Theory of operation
-------------------
The agent is the caller. :meth:`JanusCall.connect` creates a Janus session,
attaches ``janus.plugin.echotest``, and sends the message ``{"audio": true,
"video": false}`` with its (complete, non-trickle) offer; the plugin's event
on the session's long poll carries Janus's answer, with Janus's candidates in
it (Janus half-trickles). Janus echoes the agent's audio back: media both
ways. An ICE restart by the agent is a re-offer with new credentials, sent as
another echotest message with the JSEP; Janus answers with a new ufrag and
moves its pair. Janus never starts a restart, never changes its certificate,
does not follow a moved peer, and does not hang up by itself
(:data:`~agent.targets.spec.JANUS_CAPABILITIES`).

Where Janus runs:

* ``--target janus``: callagent launches it (:mod:`.launcher`) in the call's
  kernel lab, in the ``out`` namespace (behind nothing); the agent's media
  sockets are in ``in``, behind the lab's NAT when the scenario has one, so
  the scenario's NAT faults act on a real far end. The API is reached on
  Janus's own loopback from a socket opened in ``out``: signalling stays off
  the faulted path. The admin API is always on: ``handle_info`` is sampled
  into ``sides.callee.view``.
* ``--target janus+http://HOST:PORT/janus``: the user's Janus, reached from
  this host's namespace; with ``?admin=URL&secret=S`` its ``handle_info`` is
  the view too.

At the end the view is taken first (the call as the scenario left it), the
agent's side closes, then the session is detached and destroyed and a
launched Janus stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from agent.call.calls import CallConfig
from agent.call.remote import RemoteCall
from agent.errors import CallError, SignalingError
from agent.net.lab import Role
from agent.observe.model import Side
from agent.signaling.janus import JanusClient
from agent.targets.janus.launcher import JanusProcess
from agent.targets.janus.view import HandleSampler, far_end_view
from agent.targets.spec import Target

__all__ = ["ECHOTEST", "JanusCall"]

logger = logging.getLogger(__name__)

ECHOTEST = "janus.plugin.echotest"
#: what the echotest plugin is asked for: audio only, echoed back
ECHO_BODY: dict[str, Any] = {"audio": True, "video": False}


class JanusCall(RemoteCall):
    """The agent (caller) and Janus's echotest (callee), over the HTTP API."""

    def __init__(self, config: CallConfig, target: Target) -> None:
        if target.url is not None and config.lab is None:
            config = _toward(config, target.url)
        super().__init__(config, side=Side.CALLER, mode="janus")
        self.target = target
        self.janus: JanusProcess | None = None
        self.client: JanusClient | None = None
        self.sampler: HandleSampler | None = None
        self.reoffers_answered = 0
        self.remote_info = dataclasses.replace(
            self.remote_info, target=str(target), endpoint=target.url
        )
        self.peer.renegotiate = self._renegotiate
        self._view_taken = False

    async def connect(self) -> None:
        await self.network.start_lab()
        self.network.start()
        await self.prepare_media()
        self.client = await self._open_client()
        client = self.client
        await client.create_session()
        await client.attach(ECHOTEST)
        self.remote_info = dataclasses.replace(
            self.remote_info,
            resource=f"session {client.session_id}, handle {client.handle_id}",
        )
        await self.offer_first(self._offer)
        if client.admin_url is not None:
            self.sampler = HandleSampler(client.handle_info)
            self.sampler.start()
        await self.wait_connected()

    async def _open_client(self) -> JanusClient:
        target = self.target
        if not target.launches_janus:
            assert target.url is not None
            return JanusClient(
                target.url,
                admin_url=target.admin_url,
                admin_secret=target.admin_secret,
            )
        lab = self.config.lab
        if lab is None:
            raise CallError("the janus target runs Janus in the call's kernel lab")
        self.janus = JanusProcess(lab.lab.namespace(Role.OUTSIDE))
        await self.janus.start()
        self.note(
            None, f"far end: Janus {self.janus.version} in {self.janus.namespace}"
        )
        return JanusClient(
            self.janus.api_url,
            admin_url=self.janus.admin_url,
            admin_secret=self.janus.admin_secret,
            socket_factory=self.janus.socket_factory,
        )

    async def _offer(self, offer: str) -> str:
        """An echotest message with our offer; Janus's answer SDP."""
        assert self.client is not None
        _, jsep = await self.client.message(
            ECHO_BODY, {"type": "offer", "sdp": offer, "trickle": False}
        )
        if jsep is None or jsep.get("type") != "answer" or "sdp" not in jsep:
            raise SignalingError("Janus echotest replied without an SDP answer")
        return str(jsep["sdp"])

    async def _renegotiate(self, offer: str) -> str:
        # Our ICE restart or certificate rotation: the echotest takes
        # renegotiations as another message with a JSEP offer.
        answer = await self._offer(offer)
        self.reoffers_answered += 1
        self.learn_remote(answer, "answer")
        return answer

    # -- what Janus cannot do (refused by check; here for direct use) ------
    async def restart_ice(self, side: Side, cause: str | None) -> None:
        if side is not self.local_side:
            raise CallError(f"{self.target} cannot restart ICE itself")
        await super().restart_ice(side, cause)

    # -- the end ------------------------------------------------------------
    async def _take_view(self) -> None:
        if self.sampler is None or self._view_taken:
            return
        self._view_taken = True
        await self.sampler.stop()
        await self.sampler.sample()  # the call as the scenario left it
        view = far_end_view(
            self.sampler.samples,
            reoffers_answered=self.reoffers_answered,
            errors=self.sampler.errors,
        )
        if view is not None:
            self.remote_info = dataclasses.replace(self.remote_info, view=view)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._take_view(), 5.0)
        try:
            lab = self.config.lab
            if self.janus is None or lab is None or not lab.owned:
                # Its session goes first: a user's Janus keeps running.
                await super().close()
                if self.client is not None:
                    await self.client.close()
            else:
                # Our own Janus: the lab's teardown ends it with its namespace.
                await super().close()
                if self.client is not None:
                    await self.client.close(hang_up=False)
        finally:
            if self.janus is not None:
                await self.janus.stop()


def _toward(config: CallConfig, url: str) -> CallConfig:
    """The agent binds the address this host would use toward the user's
    Janus, unless the scenario named one: aioice gathers nothing else, and
    127.0.0.1 reaches no Janus on another host."""
    default = CallConfig(call_id="").caller.host_addresses
    if config.caller.host_addresses != default:
        return config
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((socket.gethostbyname(host), 9))
            local = str(probe.getsockname()[0])
        finally:
            probe.close()
    except OSError:
        return config
    caller = dataclasses.replace(config.caller, host_addresses=[local])
    return dataclasses.replace(config, caller=caller)
