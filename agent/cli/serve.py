"""``callagent serve``: the WHIP endpoint, ``/ws``, ``/calls`` and ``/metrics``.

Runs until SIGINT or SIGTERM, then hangs up every active call, waits until each
call's report is written to ``--report-dir``, and exits 0. It binds 127.0.0.1
unless told otherwise: the endpoint answers anyone who can reach it, so exposing
it is a choice (use ``--token`` then).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from rich.console import Console

from agent.call.remote import CallServer
from agent.errors import AgentError
from agent.report.writer import write_text_atomic
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
    if args.report_dir is not None:
        _check_report_dir(args.report_dir)
    backend = CallServer(
        address=args.address,
        max_calls=args.max_calls,
        report_dir=args.report_dir,
        run_meta=run_metadata,
    )
    server = WhipServer(
        backend, ServerSettings(token=args.token, max_body=args.max_body)
    )
    runner = web.AppRunner(
        server.app, handle_signals=False, access_log=None, shutdown_timeout=2.0
    )
    await runner.setup()
    host, port = args.listen
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    base = f"http://{shown}:{bound_port}"
    # One machine-readable line first (tests and scripts wait for it).
    print(f"callagent: serving WHIP at {base}/whip", flush=True)
    console.print(
        f"  /ws (signalling), /calls, /metrics; media on {args.address}; "
        f"{'token required' if args.token else 'no token'}; "
        f"reports: {args.report_dir or 'not written'}; Ctrl-C to stop",
        highlight=False,
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        active = len(backend.calls)
        await backend.shutdown(f"server shutdown ({', '.join(received) or 'stop'})")
        await runner.cleanup()
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
