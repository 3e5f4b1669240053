"""A WHIP client (RFC 9725 §4.2-4.4): POST the offer, PATCH ICE, DELETE.

Every failure of the far end — unreachable, a non-2xx status, a wrong content
type, a missing ``Location`` — becomes one :class:`~agent.errors.SignalingError`
sentence naming the URL and what was wrong; aiohttp's exceptions are
translated here and nowhere else.

An ICE restart is the only renegotiation WHIP has (§4.3.2): the new ufrag/pwd
and candidates go in a PATCH with ``If-Match: *`` and the endpoint's reply
fragment carries its new credentials. :func:`answer_with_ice` rewrites the
previous answer with them, so a JSEP peer can apply the result as an ordinary
answer to its ICE-restart offer.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from agent.errors import SignalingError
from agent.signaling.sdpfrag import MEDIA_TYPE as SDPFRAG
from agent.signaling.sdpfrag import build_sdpfrag, parse_sdpfrag
from agent.signaling.session import IceCredentials

logger = logging.getLogger(__name__)

__all__ = ["WhipClient", "answer_with_ice", "check_http_url", "check_whip_url"]

SDP = "application/sdp"
TIMEOUT_S = 10.0
#: The most of a response body we read. An answer is a few KiB; an endpoint
#: that sends megabytes is broken or hostile (30 MB was read before the limit).
MAX_RESPONSE_BYTES = 256 * 1024


def check_http_url(url: str, must: str) -> URL:
    """``url`` if it is an http(s) URL with a host, else one
    :class:`SignalingError` line: ``must`` says what it must be."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise SignalingError(f"not a URL: {url!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SignalingError(f"{must}, got {url!r}")
    return parsed


def check_whip_url(url: str) -> URL:
    return check_http_url(url, "WHIP endpoint must be an http(s) URL")


class WhipClient:
    """One WHIP session seen from the client; use as an async context manager."""

    def __init__(
        self, url: str, *, token: str | None = None, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.url = check_whip_url(url)
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s)
        )
        self.resource: URL | None = None
        self.etag: str | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        body: str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, CIMultiDict[str], str]:
        all_headers = {**self._headers, **(headers or {})}
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        try:
            async with self._http.request(
                method, url, data=body, headers=all_headers
            ) as response:
                too_big = SignalingError(
                    f"{method} {url}: the response is larger than "
                    f"{MAX_RESPONSE_BYTES} bytes (an answer is a few KiB)"
                )
                length = response.content_length
                if length is not None and length > MAX_RESPONSE_BYTES:
                    raise too_big
                raw = bytearray()
                async for chunk in response.content.iter_any():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise too_big
                # SDP and sdpfrag are UTF-8 (RFC 8866 §5); garbage stays visible.
                text = raw.decode("utf-8", errors="replace")
                # Header names are case-insensitive (RFC 9110 §5.1): a plain
                # dict lost the "Etag" an aiohttp endpoint sends, so trickles
                # went out without the If-Match RFC 9725 §4.3.1 requires.
                return response.status, CIMultiDict(response.headers), text
        except TimeoutError as exc:
            raise SignalingError(f"{method} {url}: no response in time") from exc
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise SignalingError(f"{method} {url}: cannot reach it: {reason}") from exc

    @staticmethod
    def _status_error(method: str, url: URL, status: int, text: str) -> SignalingError:
        first = text.strip().splitlines()[0][:200] if text.strip() else ""
        return SignalingError(
            f"{method} {url} answered {status}" + (f": {first}" if first else "")
        )

    async def offer(self, sdp: str) -> str:
        """POST the offer; return the answer SDP and remember the resource."""
        status, headers, text = await self._request(
            "POST", self.url, body=sdp, content_type=SDP
        )
        if status != 201:
            raise self._status_error("POST", self.url, status, text)
        content_type = headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != SDP:
            raise SignalingError(
                f"POST {self.url}: answer has Content-Type "
                f"{content_type or 'none'}, not {SDP}"
            )
        location = headers.get("Location")
        if not location:
            raise SignalingError(f"POST {self.url}: 201 without a Location header")
        self.resource = self.url.join(URL(location))
        self.etag = headers.get("ETag")
        return text

    async def restart_ice(self, local: IceCredentials, mid: str) -> IceCredentials:
        """PATCH our new ICE credentials (RFC 9725 §4.3.2); the endpoint's new ones."""
        resource = self._require_resource("PATCH")
        frag = build_sdpfrag(
            ufrag=local.ufrag, pwd=local.pwd, candidates=local.candidates, mid=mid
        )
        status, headers, text = await self._request(
            "PATCH",
            resource,
            body=frag,
            content_type=SDPFRAG,
            headers={"If-Match": "*"},
        )
        if status != 200:
            raise self._status_error("PATCH", resource, status, text)
        self.etag = headers.get("ETag", self.etag)
        remote = parse_sdpfrag(text)
        if remote.ufrag is None or remote.pwd is None:
            raise SignalingError(
                f"PATCH {resource}: the restart answer has no ice-ufrag/ice-pwd"
            )
        return IceCredentials(remote.ufrag, remote.pwd, remote.candidates)

    async def trickle(self, candidates: list[str], *, end: bool, mid: str) -> None:
        resource = self._require_resource("PATCH")
        lines = [f"a=mid:{mid}", *(f"a={c}" for c in candidates)]
        if end:
            lines.append("a=end-of-candidates")
        headers = {} if self.etag is None else {"If-Match": self.etag}
        status, _, text = await self._request(
            "PATCH",
            resource,
            body="\r\n".join(lines) + "\r\n",
            content_type=SDPFRAG,
            headers=headers,
        )
        if status not in (200, 204):
            raise self._status_error("PATCH", resource, status, text)

    async def delete(self) -> None:
        """End the session (RFC 9725 §4.2); a 404 means it had ended already."""
        if self.resource is None:
            return
        resource, self.resource = self.resource, None
        status, _, text = await self._request("DELETE", resource)
        if status not in (200, 202, 204, 404):
            raise self._status_error("DELETE", resource, status, text)

    def _require_resource(self, method: str) -> URL:
        if self.resource is None:
            raise SignalingError(f"{method} before the WHIP session was created")
        return self.resource


def answer_with_ice(answer: str, ice: IceCredentials) -> str:
    """``answer`` with its ICE credentials and candidates replaced by ``ice``.

    WHIP renegotiates nothing but ICE (RFC 9725 §4.3.2: the rest of the
    previous answer still applies), so this is the far end's answer to an
    ICE-restart offer.
    """
    lines = answer.replace("\r\n", "\n").strip().split("\n")
    out: list[str] = []
    sections = 0
    placed = False
    new_candidates = [*(f"a={c}" for c in ice.candidates), "a=end-of-candidates"]
    for line in lines:
        if line.startswith(("a=candidate:", "a=end-of-candidates")):
            continue
        if line.startswith("m="):
            sections += 1
            if sections == 2 and not placed:
                out.extend(new_candidates)
                placed = True
        elif line.startswith("a=ice-ufrag:"):
            line = f"a=ice-ufrag:{ice.ufrag}"
        elif line.startswith("a=ice-pwd:"):
            line = f"a=ice-pwd:{ice.pwd}"
        out.append(line)
    if sections == 0:
        raise SignalingError("previous answer has no media section")
    if not placed:
        # Candidates belong to the bundle's first (transport) section.
        out.extend(new_candidates)
    return "\r\n".join(out) + "\r\n"
