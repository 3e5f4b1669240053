"""What every request to ``serve`` passes before WHIP looks at it: its origin
(CORS), its bearer token, and its body.

These are the HTTP boundary of :mod:`agent.signaling.whip_server` (and of
``/calls``, ``/metrics`` and ``/ws`` on the same application): each check
either lets the request on or is the whole answer, one line of
``text/plain`` (:func:`plain_error`) with its status — 401 (token, RFC 6750;
compared in constant time), 403 (an origin not allowed), 408 (body too slow),
413 (body over the limit), 415 (wrong ``Content-Type`` or a
``Content-Encoding``), 400 (a body that is not UTF-8 or is cut short).
"""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from agent.signaling.sdpfrag import MEDIA_TYPE as SDPFRAG

__all__ = [
    "SDP",
    "ClientGone",
    "authorized",
    "cors_headers",
    "plain_error",
    "preflight",
    "read_body",
    "unauthorized",
]

SDP = "application/sdp"

EXPOSE_HEADERS = {
    "Access-Control-Expose-Headers": "Location, ETag, Accept-Patch, Link",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "600",
}


def plain_error(status: int, reason: str, **headers: str) -> web.Response:
    # One line, so a client can show it as is.
    text = " ".join(reason.split())
    return web.Response(status=status, text=text + "\n", headers=headers)


class ClientGone(Exception):
    """The client closed the connection before its request body was in."""


def cors_headers(
    request: web.Request, *, origins: tuple[str, ...], token: str | None
) -> dict[str, str] | None:
    """The CORS headers for this request; None if its origin is refused."""
    if not origins and token is not None:
        # A page on any origin may call, but it must know the token.
        return {"Access-Control-Allow-Origin": "*", **EXPOSE_HEADERS}
    origin = request.headers.get("Origin")
    if origin is None or origin == f"{request.scheme}://{request.host}":
        return {}  # not a browser's cross-origin request
    if origin in origins:
        return {
            "Access-Control-Allow-Origin": origin,
            "Vary": "Origin",
            **EXPOSE_HEADERS,
        }
    return None


async def preflight(request: web.Request) -> web.StreamResponse:
    """The answer to an ``OPTIONS`` (a browser's CORS preflight)."""
    headers = dict(PREFLIGHT_HEADERS)
    if request.path == "/whip":
        headers["Accept-Post"] = SDP
    elif request.path.startswith("/whip/"):
        headers["Accept-Patch"] = SDPFRAG
    return web.Response(status=204, headers=headers)


def authorized(
    request: web.Request, expected: str | None, *, query_token: bool = False
) -> bool:
    """Bearer token (RFC 6750 §2.1), or ``access_token`` in the query
    (§2.3) where headers cannot be set (a browser's WebSocket)."""
    if expected is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" and query_token:
        given = request.query.get("access_token", "")
    elif scheme.lower() != "bearer":
        given = ""
    # surrogatepass: header bytes that are not UTF-8 (``Bearer \\xff``)
    # arrive as surrogates; they compare unequal instead of raising.
    return hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"),
        expected.encode("utf-8", "surrogatepass"),
    )


def unauthorized() -> web.Response:
    return plain_error(
        401,
        "missing or wrong bearer token",
        **{"WWW-Authenticate": 'Bearer realm="callagent"'},
    )


async def read_body(
    request: web.Request, media_type: str, *, limit: int, timeout_s: float
) -> str | web.Response:
    """The body as text, or the error answer; :class:`ClientGone` if the
    client left before it was in."""
    if request.content_type != media_type:
        return plain_error(
            415,
            f"Content-Type must be {media_type}, got {request.content_type or 'none'}",
        )
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        # RFC 9110 §15.5.16: an unsupported content coding is 415.
        return plain_error(
            415,
            f"Content-Encoding {coding[:40]!r} is not accepted; send the body as is",
            **{"Accept-Encoding": "identity"},
        )
    length = request.content_length
    if length is not None and length > limit:
        return plain_error(413, f"request body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        return plain_error(
            408,
            f"request body not received within {timeout_s:g} s",
            Connection="close",
        )
    except web.RequestPayloadError as exc:
        # Broken chunked framing and the like: the client's error.
        return plain_error(400, f"request body is malformed: {exc}")
    except ConnectionError as exc:
        raise ClientGone from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return plain_error(400, "request body is not UTF-8 text")
