"""A call whose far end is GStreamer's ``webrtcbin``, in a child process.

Theory of operation
-------------------
The agent's virtualenv has no PyGObject, and GStreamer is a system library:
:class:`GStreamerCall` runs :mod:`agent.targets.gstreamer_child` with the
system Python (``/usr/bin/python3``, or ``$CALLAGENT_GST_PYTHON``) and talks
to it in JSON lines over its stdin/stdout. The agent plays the caller and
offers; webrtcbin answers once its ICE gathering is complete (its candidates
are in the answer: no trickle). A re-offer (the agent's ICE restart,
certificate rotation) goes the same way. webrtcbin in GStreamer 1.22 keeps
its ufrag when answering a restart, so the agent's restart comes out
``rejected`` (the old generation stays in use), exactly as against a field
GStreamer. Before the call is torn down the child's ``get-stats`` view goes
into the report as ``sides.callee.view``.

webrtcbin gathers through libnice, which skips loopback and ``veth*``
interfaces: the child needs a host interface with an address (it reaches the
agent's 127.0.0.1 sockets through the kernel's local delivery; the traffic
never leaves the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from agent.call.calls import CallConfig
from agent.call.remote import RemoteCall
from agent.errors import CallError, SignalingError
from agent.observe.model import Side
from agent.report.entries import FarEndView
from agent.targets.spec import Target

__all__ = ["GStreamerCall", "child_python"]

logger = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("gstreamer_child.py")
#: a line from the child may carry an SDP with many candidates
LINE_LIMIT = 1 << 20
#: starting GStreamer and its plugin registry (cold cache: seconds)
READY_TIMEOUT_S = 30.0


def child_python() -> str:
    """The Python that runs the child: one with PyGObject (``gi``)."""
    # Debian's python3-gi lives in the system Python, not in whatever python3
    # comes first on PATH (a virtualenv's, pyenv's).
    return os.environ.get("CALLAGENT_GST_PYTHON") or "/usr/bin/python3"


class GStreamerCall(RemoteCall):
    """The agent (caller) and GStreamer webrtcbin (callee), over a pipe."""

    def __init__(self, config: CallConfig, target: Target) -> None:
        super().__init__(config, side=Side.CALLER, mode="gstreamer")
        self.target = target
        self.process: asyncio.subprocess.Process | None = None
        self.remote_info = dataclasses.replace(self.remote_info, target=str(target))
        self.peer.renegotiate = self._exchange
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._view_taken = False

    async def connect(self) -> None:
        lab = self.config.lab
        if lab is None:
            raise CallError(
                f"{self.target} runs in the kernel lab only (libnice skips "
                "loopback): run with --lab kernel"
            )
        await self.network.start_lab()
        self.network.start()
        await self.prepare_media()
        python = child_python()
        namespace = lab.lab.namespace(lab.role(Side.CALLEE))
        try:
            self.process = await asyncio.create_subprocess_exec(
                "ip",
                "netns",
                "exec",
                namespace,
                python,
                "-u",
                str(CHILD),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=LINE_LIMIT,
            )
        except OSError as exc:
            raise CallError(f"cannot start GStreamer's Python {python}: {exc}") from exc
        self._reader = asyncio.create_task(self._read())
        ready = await self._reply("ready", READY_TIMEOUT_S)
        self.note(None, f"far end: GStreamer {ready.get('version', '?')} webrtcbin")
        await self.offer_first(self._exchange)
        await self.wait_connected()

    async def _exchange(self, offer: str) -> str:
        """One offer to webrtcbin, its answer back (also the renegotiation)."""
        async with self._lock:
            await self._send({"op": "offer", "sdp": offer})
            reply = await self._reply("answer", self.config.connect_timeout_s)
        return str(reply["sdp"])

    # -- the pipe --------------------------------------------------------
    async def _send(self, message: dict[str, Any]) -> None:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            raise SignalingError("the GStreamer far end is not running")
        process.stdin.write(json.dumps(message).encode() + b"\n")
        try:
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise SignalingError("the GStreamer far end went away") from exc

    async def _read(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                await self._replies.put({"op": "error", "message": "a line too long"})
                continue
            if not line:
                await self._replies.put({"op": "gone"})
                return
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("op") == "state":
                self.note(
                    Side.CALLEE,
                    f"webrtcbin: ice {message.get('ice')}, "
                    f"connection {message.get('connection')}",
                )
                continue
            await self._replies.put(message)

    async def _reply(self, op: str, within_s: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(within_s):
                while True:
                    message = await self._replies.get()
                    if message.get("op") == op:
                        return message
                    if message.get("op") == "error":
                        raise SignalingError(str(message.get("message")))
                    if message.get("op") == "gone":
                        raise SignalingError(_gone_reason(op))
        except TimeoutError:
            raise SignalingError(
                f"GStreamer sent no {op} in {within_s:.0f} s"
            ) from None

    async def _take_view(self) -> None:
        if self.process is None or self._view_taken:
            return
        self._view_taken = True
        async with self._lock:
            await self._send({"op": "view"})
            raw = await self._reply("view", 5.0)
        view = FarEndView(
            source="webrtcbin get-stats",
            selected_pair_changes=max(0, len(raw.get("selected_pairs") or []) - 1),
            selected_pairs=[str(p) for p in raw.get("selected_pairs") or []],
            local_ufrags=[str(u) for u in raw.get("local_ufrags") or []],
            dtls_state=None,
            connection_state=_text(raw.get("connection_state")),
            ice_state=_text(raw.get("ice_state")),
            packets_received=int(raw.get("packets_received") or 0),
            packets_sent=int(raw.get("packets_sent") or 0),
            max_gap_ms=_number(raw.get("max_gap_ms")),
            inbound_recent=bool(raw.get("inbound_recent")),
            restarts=0,
            reoffers_answered=int(raw.get("reoffers_answered") or 0),
        )
        self.remote_info = dataclasses.replace(
            self.remote_info,
            view=view,
            user_agent=f"GStreamer {raw.get('version', '?')} webrtcbin",
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._take_view()
        try:
            await super().close()
        finally:
            await self._stop_child()

    async def _stop_child(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(SignalingError):
                await self._send({"op": "hangup"})
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _gone_reason(op: str) -> str:
    return (
        f"the GStreamer far end exited before its {op} (is python3-gi with "
        "gir1.2-gst-plugins-bad-1.0 and gstreamer1.0-nice installed? "
        "scripts/install-gstreamer.sh)"
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)
