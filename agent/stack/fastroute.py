"""The media path's fast lane: each SRTP datagram in one C call each way.

On a loaded host the per-packet Python of the ordinary media path (sender →
DTLS-SRTP transport → ICE mux → connection → socket tap → socket, and back
through asyncio's selector, the tap, the connection, the transport and the
receiver) is most of the agent's CPU (``benchmarks/README.md``). The fast
lane (``agent/stack/_fastmedia.c``) does that mechanical work in C, and only
that:

* **A route** is what the ordinary path would do with the next packet,
  resolved here in Python by reading each layer's state (the DTLS state and
  association, the mux's sending generation, the selected pair, the socket
  tap, the side's network), together with *guards*: each state the route
  depends on, as ``(object, attribute, kind, expected, key)``.
* **Per packet** the C code reads every guard again; when all still hold it
  writes the RTP header, calls libsrtp (the function pointers of pylibsrtp's
  own compiled binding, on the session the association holds) and the socket,
  or on receipt unprotects and hands ``(ssrc, seq, timestamp, arrival)`` to
  the RTP receiver, stamping the connection's liveness as the ordinary path
  does. When any guard fails it does nothing and the ordinary path takes the
  packet (and the route is resolved again): the ordinary path stays the
  reference, and every impairment, route (NAT, move), ICE restart, DTLS
  rehandshake, held or far-end-moved media keeps going through it.
* **One descriptor per event loop** (``_fastmedia.Group``, an epoll set):
  asyncio watches it instead of every socket, and one callback reads each
  ready socket, instead of a selector key, a handle and a context switch per
  socket per wake-up.

Two guards read asyncio's own transport (``_closing``, ``_buffer_size``, as
``is_closing()`` and ``get_write_buffer_size()`` return them): on a Python
whose transport lacks them the guard fails and the ordinary path runs.

Guards are read per packet, not invalidated by hooks: each is a cold memory
read on a loaded host (~9 µs a packet for the ~20 of a send and a receive on
the 2-core host), but no state change can be missed, including aioice's,
asyncio's and a test's or fault's own list mutations.

Where the extension was not built (no compiler at install) or
``CALLAGENT_PURE_PYTHON_MEDIA=1`` is set, no route is ever resolved and the
agent runs the ordinary path only: the same packets, the same results, more
CPU. ``tests/stack/test_fastroute.py`` runs the same seeded call both ways
and compares what the far end received; the rest of the suite runs on the
lane, and on the ordinary path wherever it impairs, moves or restarts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylibsrtp import _binding

from agent.stack.dtls import DtlsState, SrtpTransport
from agent.stack.icemux import IceMux
from agent.stack.icenet import Address, SocketTap

if TYPE_CHECKING:
    from agent.stack import _fastmedia

try:
    from agent.stack import _fastmedia as native
except ImportError:  # not compiled: the ordinary path only
    native = None  # type: ignore[assignment]

__all__ = [
    "PURE_PYTHON_ENV",
    "Route",
    "available",
    "describe",
    "enabled",
    "native",
    "reader",
    "receive_route",
    "send_route",
    "send_route_for",
]

#: set (to anything but "" or "0") to run the ordinary Python path only
PURE_PYTHON_ENV = "CALLAGENT_PURE_PYTHON_MEDIA"

#: (object, attribute, kind, expected, key): see the module
Guard = tuple[Any, str, int, Any, Any]
#: a send route (see ``_fastmedia.send_rtp``) or a receive route (``Reader``)
Route = tuple[Any, ...]

_ffi: Any = _binding.ffi
_lib: Any = _binding.lib


def available() -> bool:
    """The C extension was built and imports."""
    return native is not None


def enabled() -> bool:
    """Routes are resolved: the extension is there and not switched off."""
    return native is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")


def _function(name: str) -> int:
    return int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, name)))


_PROTECT = _function("srtp_protect")
_UNPROTECT = _function("srtp_unprotect")


def _is(obj: Any, name: str, expected: Any) -> Guard:
    assert native is not None
    return (obj, sys.intern(name), native.GUARD_IS, expected, None)


def _falsy(obj: Any, name: str) -> Guard:
    assert native is not None
    return (obj, sys.intern(name), native.GUARD_FALSY, None, None)


def _item_is(obj: Any, name: str, key: Any, expected: Any) -> Guard:
    assert native is not None
    return (obj, sys.intern(name), native.GUARD_ITEM_IS, expected, key)


def _tap_guards(tap: SocketTap) -> list[Guard] | None:
    """The socket tap's part, as its ``send_media`` and ``deliver`` check:
    our socket open, nothing impairing or routing the side's traffic."""
    connection: Any = tap.connection
    net = connection.net
    transport: Any = tap._transport
    sock = tap._sock
    if (
        sock is None
        or connection.filters
        or net.filters
        or net.route is not None
        or getattr(transport, "_closing", True) is not False
    ):
        return None
    return [
        _is(connection, "net", net),
        _falsy(connection, "filters"),
        _falsy(net, "filters"),
        _is(net, "route", None),
        _is(transport, "_closing", False),
    ]


def _context(session: Any) -> int:
    return int(_ffi.cast("uintptr_t", session.context))


def send_route(dtls: SrtpTransport) -> Route | None:
    """Where ``dtls.send_rtp`` would send an RTP packet now, as a route for
    ``_fastmedia.send_rtp``; None when the ordinary path must take it."""
    if not enabled():
        return None
    association = dtls.current
    mux = dtls._link
    if (
        dtls.state is not DtlsState.CONNECTED
        or association is None
        or association.lost
        or association.tx is None
        or not isinstance(mux, IceMux)
    ):
        return None
    connection: Any = mux.sending
    pair = None if connection is None else connection._nominated.get(1)
    if pair is None:
        return None
    tap = connection._media_taps.get(pair.protocol)
    guards = None if tap is None else _tap_guards(tap)
    sock = None if tap is None else tap._sock
    if tap is None or guards is None or sock is None:
        return None
    # asyncio's own queue must be empty, or a direct send would overtake it.
    guards.append(_falsy(tap._transport, "_buffer_size"))
    remote: Address = pair.remote_addr
    assert native is not None
    address = native.sockaddr(remote[0], remote[1])
    if address is None or _family(address) != sock.family:
        return None
    # Each guard is a read of a cold object per packet (~0.5 µs on the
    # loaded 2-core host): only state that can change while the route is
    # held is guarded. Set once and never again, so not guarded: an
    # association's SRTP sessions (``tx``, ``rx``), a socket's tap
    # (``_media_taps``), a connection's ``_media_path``.
    guards += [
        _is(tap, "_sock", sock),
        _is(dtls, "state", DtlsState.CONNECTED),
        _is(dtls, "current", association),
        _is(association, "lost", False),
        _is(mux, "_sending", connection),
        _item_is(connection, "_nominated", 1, pair),
    ]
    return (
        tuple(guards),
        sock.fileno(),
        address,
        _PROTECT,
        _context(association.tx),
        tap._send,
        tap._protocol.error_received,
        remote,
    )


def send_route_for(send: Callable[[bytes], None]) -> Callable[[], Route | None] | None:
    """The route resolver for an RTP sender's ``send``, when it is an
    :class:`SrtpTransport`'s ``send_rtp`` and the fast lane is on."""
    dtls = getattr(send, "__self__", None)
    if (
        not enabled()
        or not isinstance(dtls, SrtpTransport)
        or getattr(send, "__func__", None) is not SrtpTransport.send_rtp
    ):
        return None
    return lambda: send_route(dtls)


def receive_route(tap: SocketTap) -> Route | None:
    """What the ordinary path would do with an RTP datagram read from
    ``tap``'s socket now, as a route for ``_fastmedia.Reader``; None when it
    must take it (and the reader tries again at its next wake-up)."""
    if not enabled():
        return None
    guards = _tap_guards(tap)
    connection: Any = tap.connection
    sink = getattr(connection, "_media_sink", None)
    dtls = getattr(sink, "__self__", None)
    if (
        guards is None
        or connection._media_path is not True
        or not isinstance(dtls, SrtpTransport)
        or getattr(sink, "__func__", None) is not SrtpTransport._on_srtp
    ):
        return None
    association = dtls.current
    receiver = dtls._sink
    if (
        association is None
        or association.lost
        or association.rx is None
        or receiver is None
    ):
        return None
    # Not guarded (see send_route): the SRTP session, ``_media_path``; nor
    # the socket: its reader is removed when it closes.
    guards += [
        _is(connection, "_media_sink", sink),
        _is(connection, "ice_controlling", connection.ice_controlling),
        _is(dtls, "current", association),
        _is(association, "lost", False),
        _is(dtls, "_sink", receiver),
    ]
    expected: Address | None = None
    if not connection.ice_controlling:
        # The controlled side follows a far end that moves: media from
        # anywhere but the selected pair is the ordinary path's to note.
        pair = connection._nominated.get(1)
        if pair is None or pair.protocol is not tap._protocol:
            return None
        expected = pair.remote_addr
        guards.append(_item_is(connection, "_nominated", 1, pair))
    return (
        tuple(guards),
        expected,
        connection._received_on,
        tap._protocol.id,
        connection,
        _UNPROTECT,
        _context(association.rx),
        receiver.rtp_received,
    )


def reader(tap: SocketTap, sock: socket.socket) -> Callable[[], None] | None:
    """Read ``sock`` in C: SRTP on :func:`receive_route` to the receiver, the
    rest to ``tap.deliver``, every socket of the loop behind one descriptor
    (``_fastmedia.Group``). Returns the call that stops it (before the socket
    is closed); None when the lane is off (the tap keeps its Python reader)."""
    if native is None or not enabled():
        return None
    loop = asyncio.get_running_loop()
    group = _groups.get(loop)
    if group is None:
        group = _groups[loop] = native.Group(_reporter(loop))
        loop.add_reader(group.fileno(), group)
    fd = sock.fileno()
    watched = native.Reader(
        fd, tap.deliver, lambda: receive_route(tap), tap._protocol.error_received
    )
    group.add(watched)
    tap.fast_reader = watched
    watching: _fastmedia.Group = group

    def stop() -> None:
        watching.remove(fd)
        if len(watching) == 0 and _groups.get(loop) is watching:
            del _groups[loop]
            if not loop.is_closed():
                loop.remove_reader(watching.fileno())
            watching.close()

    return stop


def _reporter(loop: asyncio.AbstractEventLoop) -> Callable[[BaseException, Any], None]:
    # Weakly: the group is the value of a weak-keyed entry for this loop.
    loop_ref = weakref.ref(loop)

    def report(exc: BaseException, watched: Any) -> None:
        # What asyncio says of a reader callback that raised.
        alive = loop_ref()
        if alive is not None:
            alive.call_exception_handler(
                {"message": f"Exception in callback {watched!r}", "exception": exc}
            )

    return report


#: each event loop's group of socket readers
_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _fastmedia.Group] = (
    weakref.WeakKeyDictionary()
)


def _family(address: bytes) -> int:
    # struct sockaddr: sa_family first, in host byte order (Linux).
    return int.from_bytes(address[:2], sys.byteorder)


def describe() -> str:
    """One line for the log and ``--version``."""
    if native is None:
        return "media path: Python (C extension not built)"
    if not enabled():
        return f"media path: Python ({PURE_PYTHON_ENV} is set)"
    return "media path: C fast lane"
