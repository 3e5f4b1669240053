"""``callagent serve``: the WHIP endpoint, ``/ws``, ``/calls`` and ``/metrics``.

Runs until SIGINT or SIGTERM, then hangs up every active call, waits until each
call's report is written to ``--report-dir``, and exits 0. It binds 127.0.0.1
unless told otherwise: the endpoint answers anyone who can reach it, so exposing
it is a choice. A non-loopback ``--listen`` needs ``--token``, or ``--open`` to
say the endpoint is meant to be open. ``--listen`` and ``--address`` must be
addresses of this host (checked against its interface list, nothing is sent):
a media address that is not ours makes every call fail.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ifaddr
from rich.console import Console

from agent.call.server import CallServer
from agent.errors import AgentError
from agent.report.writer import write_text_atomic
from agent.signaling.guard import Limits, quiet_resource_errors
from agent.signaling.whip_server import DEFAULT_MAX_BODY, ServerSettings, WhipServer

__all__ = ["add_serve_parser", "cmd_serve"]


class ServeError(AgentError):
    """The server cannot start (address in use, bad --listen)."""

    exit_code = 2


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"--listen must be HOST:PORT like 127.0.0.1:8080, got {text!r}"
        )
    return host, int(port)


def web_origin(text: str) -> str:
    """``scheme://host[:port]`` exactly as a browser sends it in ``Origin``."""
    scheme, sep, rest = text.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
        raise argparse.ArgumentTypeError(
            f"--cors-origin must be an origin like http://127.0.0.1:3000 "
            f"(scheme, host, port; no path), got {text!r}"
        )
    return text


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def local_addresses() -> set[IpAddress]:
    """Addresses of this host's interfaces (read from the kernel, nothing sent)."""
    found: set[IpAddress] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            found.add(ipaddress.ip_address(text))
    return found


def is_local(ip: IpAddress, local: set[IpAddress]) -> bool:
    # All of 127.0.0.0/8 is this host's on Linux, not just lo's 127.0.0.1.
    return ip.is_loopback or ip in local


def check_listen_host(host: str, *, token: bool, open_: bool) -> None:
    """Refuse a listen address that is not ours, or exposed without a token."""
    try:
        ips: list[IpAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise ServeError(f"--listen host {host!r} does not resolve: {exc}") from exc
        ips = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    local = local_addresses()
    for ip in ips:
        if not ip.is_unspecified and not is_local(ip, local):
            raise ServeError(
                f"--listen {host}: {ip} is not an address of this host "
                f"(its interfaces have {', '.join(sorted(map(str, local)))})"
            )
    exposed = any(not ip.is_loopback for ip in ips)
    if exposed and not token and not open_:
        raise ServeError(
            f"--listen {host} is reachable from other hosts and no --token is set: "
            "anyone who can reach it could place calls and read /calls; set "
            "--token (or $CALLAGENT_TOKEN), or pass --open if it is meant to be open"
        )


def check_media_address(address: str) -> None:
    """``--address`` must be one unicast address of this host's interfaces."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ServeError(
            f"--address must be an IP address of this host, got {address!r}"
        ) from None
    local = local_addresses()
    if ip.is_unspecified or ip.is_multicast or not is_local(ip, local):
        raise ServeError(
            f"--address {address} is not an address of this host, so no call "
            f"could reach it (its interfaces have "
            f"{', '.join(sorted(map(str, local)))})"
        )


def fit_connections(wanted: int, max_calls: int) -> int:
    """At most as many connections as the descriptor limit leaves room for.

    Running out of descriptors fails every call at once (EMFILE); a lower
    connection limit only turns away the surplus clients.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    # Per call: ICE sockets of two generations, a DTLS socket pair, slack.
    room = soft - 32 - 8 * max_calls
    return max(4, min(wanted, room))


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="answer calls: a WHIP endpoint (and /ws, /calls, /metrics)"
    )
    serve.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8080; port 0: any free port)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("CALLAGENT_TOKEN"),
        help="require this bearer token (default: $CALLAGENT_TOKEN; none: open)",
    )
    serve.add_argument(
        "--report-dir",
        type=Path,
        help="write each ended call's JSON report here (<call id>.json)",
    )
    serve.add_argument(
        "--max-calls",
        type=positive_int,
        default=20,
        help="concurrent calls; more get 503 (default 20)",
    )
    serve.add_argument(
        "--address",
        default="127.0.0.1",
        help="address the agent's ICE binds for media (default 127.0.0.1)",
    )
    serve.add_argument(
        "--max-body",
        type=positive_int,
        default=DEFAULT_MAX_BODY,
        help="largest request body in bytes; more get 413 "
        f"(default {DEFAULT_MAX_BODY})",
    )
    serve.add_argument(
        "--cors-origin",
        type=web_origin,
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (http://host:port) whose pages may use the endpoint; "
        "repeatable (default: none without --token, any with --token)",
    )
    serve.add_argument(
        "--open",
        action="store_true",
        help="allow a non-loopback --listen without --token (the endpoint is "
        "meant to be open to whoever can reach it)",
    )
    serve.add_argument(
        "--max-connections",
        type=positive_int,
        default=Limits.max_connections,
        help="HTTP connections held at once; at the limit the oldest idle one "
        f"is closed (default {Limits.max_connections}, lowered to fit the "
        "open-file limit)",
    )


def _check_report_dir(path: Path) -> None:
    """Fail before serving if reports cannot be written there."""
    probe = path / ".callagent-write-test"
    write_text_atomic(probe, "")
    probe.unlink(missing_ok=True)


async def cmd_serve(
    args: argparse.Namespace,
    console: Console,
    run_metadata: Callable[[int], dict[str, Any]],
) -> int:
    host, port = args.listen
    check_listen_host(host, token=bool(args.token), open_=args.open)
    check_media_address(args.address)
    if args.report_dir is not None:
        _check_report_dir(args.report_dir)
    loop = asyncio.get_running_loop()
    quiet_resource_errors(loop)
    backend = CallServer(
        address=args.address,
        max_calls=args.max_calls,
        report_dir=args.report_dir,
        run_meta=run_metadata,
    )
    connections = fit_connections(args.max_connections, args.max_calls)
    settings = ServerSettings(
        token=args.token or None,
        max_body=args.max_body,
        cors_origins=tuple(args.cors_origin),
        limits=Limits(max_connections=connections),
    )
    server = WhipServer(backend, settings)
    try:
        listening = await server.listen(host, port)
    except OSError as exc:
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    base = listening.base_url
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        stop.set()

    # Before the first line: a script that signals as soon as it reads it
    # must get a graceful stop, not the default SIGTERM death.
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    # One machine-readable line first (tests and scripts wait for it).
    print(f"callagent: serving WHIP at {base}/whip", flush=True)
    origins = ", ".join(settings.cors_origins) or (
        "any (token required)" if settings.token else "none"
    )
    console.print(
        f"  /ws (signalling), /calls, /metrics; media on {args.address}; "
        f"{'token required' if args.token else 'no token'}; "
        f"cross-origin pages: {origins}; at most {connections} connections; "
        f"reports: {args.report_dir or 'not written'}; Ctrl-C to stop",
        highlight=False,
    )

    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        active = len(backend.calls)
        await backend.shutdown(f"server shutdown ({', '.join(received) or 'stop'})")
        await listening.close()
    ended = sum(backend.ended_by_verdict.values())
    print(
        f"callagent: stopped by {received[0] if received else 'request'}; "
        f"{active} active call(s) hung up, {ended} call(s) in total",
        file=sys.stderr,
    )
    if backend.report_errors:
        print(f"callagent: {backend.report_errors[-1]}", file=sys.stderr)
        return 1
    return 0
