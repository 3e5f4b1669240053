"""SRTP sessions with a lean per-packet call.

pylibsrtp's ``Session.protect`` and ``unprotect`` allocate a length cell
(``ffi.new``), check the packet's type and length four ways and call a helper
to test the result, each time: on the media path, where every RTP packet is
protected once and unprotected once in the same process, that was 8 % of the
profiled CPU. :class:`SrtpSession` keeps pylibsrtp for everything but the
per-packet call: it builds the ``pylibsrtp.Session`` (policy, keys, the
``srtp_t`` and its cleanup) and then calls libsrtp through the same compiled
binding on the session's own buffer, with one length cell allocated once.
The results and errors are pylibsrtp's: the protected or verified bytes, or
``pylibsrtp.Error`` with libsrtp's message.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp
from pylibsrtp import _binding

__all__ = ["SrtpSession", "srtp_policy", "srtp_session"]

_lib: Any = _binding.lib
_ffi: Any = _binding.ffi
#: libsrtp's status texts, by code (pylibsrtp's table)
_ERRORS: list[str] = pylibsrtp.ERRORS
#: room pylibsrtp keeps for the SRTP and SRTCP trailers (tag, index, MKI)
_RTP_TRAILER: int = pylibsrtp.SRTP_MAX_TRAILER_LEN
_RTCP_TRAILER: int = pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN


class SrtpSession:
    """One direction's SRTP context (see module)."""

    def __init__(self, session: pylibsrtp.Session) -> None:
        #: owns the ``srtp_t`` (freed with it) and the buffer used below
        self._session = session
        self._srtp = session._srtp[0]
        self._cdata = session._cdata
        self._buffer = session._buffer
        self._room = len(session._buffer)
        self._length = _ffi.new("int *")

    @property
    def context(self) -> Any:
        """The ``srtp_t`` (a cffi pointer), for the fast lane's C calls
        (``agent/stack/fastroute.py``); valid while this session lives."""
        return self._srtp

    def _process(self, data: bytes, func: Any, trailer: int) -> bytes:
        size = len(data)
        if size > self._room - trailer:
            raise ValueError("packet is too long")
        buffer = self._buffer
        buffer[0:size] = data
        length = self._length
        length[0] = size
        status = func(self._srtp, self._cdata, length)
        if status:
            raise pylibsrtp.Error(_ERRORS[status])
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def protect(self, packet: bytes) -> bytes:
        return self._process(packet, _lib.srtp_protect, _RTP_TRAILER)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._process(packet, _lib.srtp_protect_rtcp, _RTCP_TRAILER)

    def unprotect(self, packet: bytes) -> bytes:
        return self._process(packet, _lib.srtp_unprotect, 0)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._process(packet, _lib.srtp_unprotect_rtcp, 0)


def srtp_session(key: bytes, profile: int, *, outbound: bool) -> SrtpSession:
    return SrtpSession(pylibsrtp.Session(srtp_policy(key, profile, outbound=outbound)))


def srtp_policy(key: bytes, profile: int, *, outbound: bool) -> pylibsrtp.Policy:
    """One direction's policy: any SSRC, a 1024-packet replay window."""
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            if outbound
            else pylibsrtp.Policy.SSRC_ANY_INBOUND
        ),
        srtp_profile=profile,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return policy
