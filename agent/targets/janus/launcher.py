"""A Janus of callagent's own: a minimal config dir, the process inside a
kernel-lab namespace, and its removal.

Why a namespace: Janus's libnice gathers no loopback address and skips
interfaces named ``veth*``, so a Janus on this host's loopback has no
candidate the agent could reach. The kernel lab's ``out`` namespace has
``wan0`` (never ``veth*``) and a default route: Janus gathers its address
there, behind nothing, and the agent calls it from the ``in`` namespace,
behind the lab's NAT when the scenario has one.

The config (:func:`write_config`) loads one plugin (echotest) and one
transport (HTTP, plus its admin API with a fresh secret) by pointing Janus's
plugin and transport folders at a directory holding just those two
libraries: nothing else is loaded or listening. No STUN server (the lab's
outside is "public"), IPv4 only, half-trickle (its candidates are in its
answers).

:meth:`JanusProcess.start` returns once ``GET /janus/info`` answers (polled
with a deadline; a Janus that exits or never answers is one
:class:`~agent.errors.CallError` line with the end of its log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from agent.errors import CallError, NetworkLabError, SignalingError
from agent.net.lab import socket_in
from agent.signaling.janus import JanusClient, SocketFactory

__all__ = [
    "ADMIN_PORT",
    "API_PORT",
    "JANUS_LIBDIR",
    "JanusProcess",
    "janus_unavailable",
    "write_config",
]

logger = logging.getLogger(__name__)

#: Debian's janus package (1.1.2 in bookworm)
JANUS_LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")
API_PORT = 8088
ADMIN_PORT = 7088
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 3.0
_POLL_S = 0.05


def _libdir() -> Path:
    """Where the plugins live (the multiarch dir of this machine)."""
    for candidate in (JANUS_LIBDIR, *Path("/usr/lib").glob("*/janus")):
        if (candidate / "plugins" / "libjanus_echotest.so").exists():
            return candidate
    return JANUS_LIBDIR


def janus_unavailable() -> str | None:
    """One line saying why callagent cannot launch Janus here, or None."""
    if shutil.which("janus") is None:
        return "the janus target needs Janus on PATH (Debian package janus)"
    lib = _libdir()
    for needed in ("plugins/libjanus_echotest.so", "transports/libjanus_http.so"):
        if not (lib / needed).exists():
            return f"the janus target needs {lib / needed} (Debian package janus)"
    return None


def write_config(folder: Path, admin_secret: str) -> None:
    """A minimal Janus config in ``folder``: echotest over HTTP, admin on."""
    lib = _libdir()
    for kind, name in (
        ("plugins", "libjanus_echotest.so"),
        ("transports", "libjanus_http.so"),
    ):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        link = folder / kind / name
        if not link.exists():
            link.symlink_to(lib / kind / name)
    for empty in ("events", "loggers"):
        (folder / empty).mkdir(exist_ok=True)
    (folder / "janus.jcfg").write_text(
        f"""general: {{
  configs_folder = "{folder}"
  plugins_folder = "{folder / "plugins"}"
  transports_folder = "{folder / "transports"}"
  events_folder = "{folder / "events"}"
  loggers_folder = "{folder / "loggers"}"
  debug_level = 4
  admin_secret = "{admin_secret}"
  session_timeout = 60
}}
certificates: {{
}}
media: {{
  ipv6 = false
}}
nat: {{
  nice_debug = false
  full_trickle = false
  ice_lite = false
  ice_tcp = false
}}
plugins: {{
}}
transports: {{
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {API_PORT}
  https = false
}}
admin: {{
  admin_base_path = "/admin"
  admin_http = true
  admin_port = {ADMIN_PORT}
  admin_https = false
}}
"""
    )
    (folder / "janus.plugin.echotest.jcfg").write_text("general: {\n}\n")


def namespace_sockets(namespace: str) -> SocketFactory:
    """TCP sockets opened in ``namespace`` (aiohttp's socket hook)."""

    def open_socket(addr_info: tuple[Any, ...]) -> socket.socket:
        try:
            return socket_in(namespace, socket.SOCK_STREAM)
        except NetworkLabError as exc:
            # aiohttp reports an OSError as "cannot connect": the namespace
            # is gone (the call's lab was removed).
            raise OSError(str(exc)) from exc

    return open_socket


class JanusProcess:
    """One Janus in a lab namespace; :meth:`start`, then :meth:`stop`."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.admin_secret = secrets.token_hex(12)
        self.folder = Path(tempfile.mkdtemp(prefix="callagent-janus-"))
        self.log = self.folder / "janus.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.version: str | None = None

    # Janus is reached on its own loopback, from a socket opened in its
    # namespace: the signalling never crosses the lab's links, so a fault on
    # the agent's path (a blackhole, a NAT flush) hits the media, not the API.
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{API_PORT}/janus"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{ADMIN_PORT}/admin"

    @property
    def socket_factory(self) -> SocketFactory:
        return namespace_sockets(self.namespace)

    async def start(self) -> None:
        reason = janus_unavailable()
        if reason is not None:
            raise CallError(reason)
        write_config(self.folder, self.admin_secret)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.namespace,
                "janus", "-F", str(self.folder), "-L", str(self.log), "-N", "-o",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            raise CallError(f"cannot start janus: {exc}") from exc
        client = JanusClient(self.api_url, socket_factory=self.socket_factory)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    if self.proc.returncode is not None:
                        raise CallError(
                            f"janus exited ({self.proc.returncode}) at start: "
                            f"{self.log_tail()}"
                        )
                    with contextlib.suppress(SignalingError):
                        info = await client.info(timeout_s=1.0)
                        self.version = str(info.get("version_string", "?"))
                        return
                    await asyncio.sleep(_POLL_S)
        except TimeoutError as exc:
            await self.stop()
            raise CallError(
                f"janus did not answer /janus/info within {START_TIMEOUT_S:g} s: "
                f"{self.log_tail()}"
            ) from exc
        except BaseException:
            await self.stop()
            raise
        finally:
            await client.close()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "no log"
        tail = [line.strip() for line in text.splitlines() if line.strip()]
        return " / ".join(tail[-lines:]) or "empty log"

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a while; the config dir goes too."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
