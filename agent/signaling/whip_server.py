"""The WHIP endpoint (RFC 9725) and the live views, as an aiohttp application.

Theory of operation
-------------------
``POST /whip`` with an SDP offer creates a *WHIP session*: a resource at
``/whip/<id>`` (an unguessable id, RFC 9725 §4.2 and §7) that answers
``201 Created`` with the SDP answer, ``Location`` and a strong ``ETag``
identifying the current ICE session. On the resource:

=========  =====================================  =================================
method     body                                   result
=========  =====================================  =================================
PATCH      sdpfrag, same ufrag/pwd (or none)      trickle candidates: 204
PATCH      sdpfrag, new ufrag/pwd                 ICE restart: 200, our new ufrag/
                                                  pwd/candidates, a new ETag
DELETE     —                                      the call ends: 200
=========  =====================================  =================================

Preconditions (RFC 9110 §13.1.1, RFC 6585 §3): an ICE restart must carry
``If-Match`` (``*`` as RFC 9725 §4.3.2 asks, or ``"*"`` as its example writes,
or the current ETag), else 428; an
``If-Match`` naming another ETag gets 412, for a trickle too (the candidates
belong to an ICE session that no longer exists).

Errors are one line of ``text/plain``: 400 (unusable SDP or candidates, no
audio), 401 (missing or wrong bearer token, RFC 6750; compared in constant
time), 403 (a cross-origin request from an origin not allowed), 404, 405, 408
(body too slow), 413 (body over the limit), 415 (wrong ``Content-Type`` or a
``Content-Encoding``), 428, 412, 503 (at the concurrent-call limit, with
``Retry-After``). Remote input is checked at one boundary each: SDP by
:func:`~agent.stack.peer.parse_sdp`, candidates by
:mod:`agent.signaling.candidates`, bodies, tokens and origins by
:mod:`agent.signaling.http_checks`. A handler never lets an exception out: a
bug in one request is a 500 and the server keeps serving the others.

Cross-origin access (CORS) is opt-in: with ``cors_origins`` the listed origins
may use the endpoint from a web page; with a token and no list any origin may
(``*``: a page cannot know the token); with neither, a request whose
``Origin`` is another site's gets 403, so a web page the user happens to open
cannot read ``/calls`` or place calls through a local ``serve`` (this covers
``/ws`` too, which browsers do not guard with CORS). The same application
serves ``GET /calls`` (JSON), ``GET /metrics`` (Prometheus text) and the
``/ws`` signalling channel (:mod:`agent.signaling.ws`);
:mod:`agent.signaling.guard` limits connections and how long they may idle.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from agent.errors import AgentError, SignalingError
from agent.signaling.candidates import CandidateBudget, check_sdp_candidates
from agent.signaling.guard import ConnectionGuard, Limits
from agent.signaling.http_checks import (
    SDP,
    ClientGone,
    authorized,
    cors_headers,
    plain_error,
    preflight,
    read_body,
    unauthorized,
)
from agent.signaling.sdpfrag import MEDIA_TYPE as SDPFRAG
from agent.signaling.sdpfrag import SdpFrag, build_sdpfrag, parse_sdpfrag
from agent.signaling.session import (
    CallBackend,
    CallSession,
    IceCredentials,
    OfferContext,
    ServerBusy,
)
from agent.signaling.ws import serve_ws
from agent.stack.peer import parse_sdp

logger = logging.getLogger(__name__)

__all__ = ["Listening", "ServerSettings", "WhipResource", "WhipServer"]

#: An audio offer from a browser is 3-6 KiB; 64 KiB leaves room and no more.
DEFAULT_MAX_BODY = 64 * 1024
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class ServerSettings:
    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    #: web origins (``scheme://host:port``) allowed to use the endpoint from a page
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)


@dataclass
class WhipResource:
    """One WHIP session: its call, current ETag and the far end's ICE credentials."""

    id: str
    session: CallSession
    remote_ufrag: str
    remote_pwd: str
    mid: str
    etag: str = field(default_factory=lambda: new_etag())
    #: remote candidates the current ICE session has taken (offer + trickle)
    budget: CandidateBudget = field(default_factory=CandidateBudget)


def new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


#: What an ICE-restart PATCH may send as "any": RFC 9110's bare ``*``, and
#: ``"*"``, the quoted form RFC 9725 §4.3.2's own example uses (clients that
#: follow the example got 412 and their restart never happened).
IF_MATCH_ANY = frozenset({"*", '"*"'})


def if_match_allows(header: str, etag: str) -> bool:
    """RFC 9110 §13.1.1: ``*`` or a list of entity-tags, strong comparison."""
    tags = [tag.strip() for tag in header.split(",")]
    return bool(IF_MATCH_ANY.intersection(tags)) or etag in tags


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Listening:
    """A running server: where it listens, and how to stop it."""

    host: str
    port: int
    runner: web.AppRunner
    server: asyncio.Server

    @property
    def base_url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    async def close(self) -> None:
        self.server.close()
        await self.runner.cleanup()  # closes the open connections too
        await self.server.wait_closed()


class WhipServer:
    """The aiohttp application serving ``/whip``, ``/calls``, ``/metrics``, ``/ws``."""

    def __init__(self, backend: CallBackend, settings: ServerSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.resources: dict[str, WhipResource] = {}
        self.guard = ConnectionGuard(settings.limits)
        self.app = web.Application(
            middlewares=[self._cors_and_errors],
            # aiohttp itself answers 413 past this, whatever Content-Length says.
            client_max_size=settings.max_body,
        )
        self.app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
        self.app.router.add_post("/whip", self._post)
        self.app.router.add_patch("/whip/{id}", self._patch)
        self.app.router.add_delete("/whip/{id}", self._delete)
        self.app.router.add_get("/calls", self._calls)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/ws", self._ws)

    async def listen(self, host: str, port: int) -> Listening:
        """Serve on ``host:port`` (0: a free port) behind the connection guard."""
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=2.0,
            # A body we did not read (a 401, 403, 415 answered first) is not
            # read afterwards: aiohttp's lingering read would decode it and log
            # a broken gzip or chunked body as an unhandled exception. The
            # connection is closed instead.
            lingering_time=0,
            # Bodies are taken as sent: a Content-Encoding is refused (415),
            # never decoded (no gzip bomb, no decoder error mid-request).
            auto_decompress=False,
        )
        await runner.setup()
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                self.guard.factory(runner.server), host, port
            )
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        return Listening(str(bound_host), int(bound_port), runner, server)

    # -- middleware ---------------------------------------------------------
    @web.middleware
    async def _cors_and_errors(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        connection = self.guard.find(request.transport)
        if connection is not None:
            connection.begin()  # a request head is in: no longer a slow sender
        try:
            return await self._answer(request, handler)
        finally:
            if connection is not None:
                connection.end()

    async def _answer(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        cors = cors_headers(
            request, origins=self.settings.cors_origins, token=self.settings.token
        )
        if cors is None:
            origin = " ".join(request.headers.get("Origin", "").split())[:100]
            return plain_error(
                403,
                f"cross-origin requests from {origin} are not allowed; start "
                "serve with --cors-origin naming that origin (or with --token)",
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                exc = web.HTTPRequestEntityTooLarge(
                    max_size=self.settings.max_body,
                    actual_size=request.content_length or 0,
                    text=f"request body is larger than {self.settings.max_body} "
                    "bytes\n",
                )
            exc.headers.update(cors)
            raise exc from None
        except ClientGone:
            # Nobody is left to answer; not a server error (issue 11, S10).
            logger.debug(
                "%s %s: client went away mid-body", request.method, request.path
            )
            return plain_error(400, "request body incomplete")
        except Exception:
            logger.exception("%s %s: internal error", request.method, request.path)
            response = plain_error(500, "internal error; see the server log")
        if not response.prepared:
            response.headers.update(cors)
        return response

    # -- checks -------------------------------------------------------------
    def authorized(self, request: web.Request, *, query_token: bool = False) -> bool:
        return authorized(request, self.settings.token, query_token=query_token)

    async def _body(self, request: web.Request, media_type: str) -> str | web.Response:
        limit, timeout_s = self.settings.max_body, self.settings.limits.body_timeout_s
        return await read_body(request, media_type, limit=limit, timeout_s=timeout_s)

    def _resource(self, request: web.Request) -> WhipResource | web.Response:
        resource = self.resources.get(request.match_info["id"])
        if resource is None or resource.session.ended.is_set():
            return plain_error(404, "no such WHIP session (ended or never created)")
        return resource

    # -- WHIP ---------------------------------------------------------------
    async def _post(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return unauthorized()
        body = await self._body(request, SDP)
        if isinstance(body, web.Response):
            return body
        self.forget_ended()
        budget = CandidateBudget()
        try:
            offer = parse_sdp(body, "offer")
            audio = next((m for m in offer.media if m.kind == "audio"), None)
            if audio is None:
                raise SignalingError("offer has no audio m-section")
            if audio.ice is None or not audio.ice.usernameFragment:
                raise SignalingError("offer's audio section has no ICE ufrag/pwd")
            budget.take(check_sdp_candidates(body, "offer"))
            context = OfferContext(
                mode="whip-server",
                remote_address=request.remote,
                user_agent=request.headers.get("User-Agent"),
            )
            session, answer = await self.backend.open_call(body, context)
        except ServerBusy as exc:
            return plain_error(503, str(exc), **{"Retry-After": "5"})
        except SignalingError as exc:
            return plain_error(400, str(exc))
        except AgentError as exc:
            # Our side cannot take a call now (no socket, no descriptor).
            logger.warning("cannot open a call: %s", exc)
            return plain_error(
                503, f"cannot open a call: {exc}", **{"Retry-After": "5"}
            )
        resource_id = secrets.token_urlsafe(16)
        resource = WhipResource(
            id=resource_id,
            session=session,
            remote_ufrag=str(audio.ice.usernameFragment),
            remote_pwd=str(audio.ice.password),
            mid=audio.rtp.muxId or "0",
            budget=budget,
        )
        self.resources[resource_id] = resource
        logger.info("WHIP session %s: call %s", resource_id, session.call_id)
        return web.Response(
            status=201,
            body=answer.encode(),
            content_type=SDP,
            headers={
                "Location": f"/whip/{resource_id}",
                "ETag": resource.etag,
                "Accept-Patch": SDPFRAG,
            },
        )

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return unauthorized()
        resource = self._resource(request)
        if isinstance(resource, web.Response):
            return resource
        body = await self._body(request, SDPFRAG)
        if isinstance(body, web.Response):
            return body
        try:
            frag = parse_sdpfrag(body)
        except SignalingError as exc:
            return plain_error(400, str(exc))
        if_match = request.headers.get("If-Match")
        restart = frag.has_credentials and (
            frag.ufrag != resource.remote_ufrag or frag.pwd != resource.remote_pwd
        )
        if restart and if_match is None:
            return plain_error(
                428, "an ICE restart needs If-Match (RFC 9725 §4.3.2: If-Match: *)"
            )
        if if_match is not None and not if_match_allows(if_match, resource.etag):
            return plain_error(
                412, f"If-Match {if_match} is not the current ETag {resource.etag}"
            )
        try:
            if restart:
                return await self._restart(resource, frag)
            await self._trickle(resource, frag)
        except SignalingError as exc:
            return plain_error(400, str(exc))
        return web.Response(status=204)

    async def _trickle(self, resource: WhipResource, frag: SdpFrag) -> None:
        resource.budget.take(len(frag.candidates))
        for candidate in frag.candidates:
            await resource.session.add_candidate(candidate)
        if frag.end_of_candidates:
            await resource.session.add_candidate(None)

    async def _restart(
        self, resource: WhipResource, frag: SdpFrag
    ) -> web.StreamResponse:
        assert frag.ufrag is not None and frag.pwd is not None
        # The fragment was checked whole (parse_sdpfrag): nothing invalid gets
        # this far, so a rejected restart is never started, nor counted.
        resource.budget.restart(len(frag.candidates))
        remote = IceCredentials(frag.ufrag, frag.pwd, frag.candidates)
        local = await resource.session.restart_ice(remote, frag.end_of_candidates)
        resource.remote_ufrag, resource.remote_pwd = frag.ufrag, frag.pwd
        resource.etag = new_etag()
        text = build_sdpfrag(
            ufrag=local.ufrag,
            pwd=local.pwd,
            candidates=local.candidates,
            mid=frag.mid or resource.mid,
        )
        return web.Response(
            status=200,
            body=text.encode(),
            content_type=SDPFRAG,
            headers={"ETag": resource.etag},
        )

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return unauthorized()
        resource = self._resource(request)
        if isinstance(resource, web.Response):
            return resource
        del self.resources[resource.id]
        await resource.session.hang_up(by_remote=True, reason="WHIP DELETE")
        return web.Response(status=200)

    def forget_ended(self) -> None:
        """Drop resources whose call is over (a DELETE then gets 404)."""
        for key in [k for k, r in self.resources.items() if r.session.ended.is_set()]:
            del self.resources[key]

    # -- live views ---------------------------------------------------------
    async def _calls(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return unauthorized()
        self.forget_ended()
        return web.json_response(self.backend.active_calls())

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return unauthorized()
        return web.Response(
            body=self.backend.metrics_text(),
            headers={"Content-Type": PROMETHEUS_TEXT},
        )

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request, query_token=True):
            return unauthorized()
        return await serve_ws(
            request,
            self.backend,
            max_message=self.settings.max_body,
            first_offer_timeout_s=self.settings.limits.header_timeout_s,
        )
