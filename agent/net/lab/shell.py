"""The lab's only contact with the host: commands run inside lab namespaces,
the capability check, and sockets opened inside a namespace.

Every state-changing command goes through :func:`run_in`, which prefixes
``ip netns exec <ns>``: nothing here can change the host's own namespace. The
exceptions are ``ip netns add/del/pids`` and ``ip netns list`` themselves,
which create, remove or read lab namespaces by name.

Sockets: :func:`socket_in` opens a socket inside a namespace from a short-lived
thread that ``setns(2)``\\ s into it (a network namespace is per thread; a
socket stays in the namespace it was created in). The caller's event loop then
uses that socket like any other, so one loop per call stays honest — no child
process per namespace, no pickling of datagrams. The thread exits right after,
never returning to a pool while still inside a lab namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import socket
import threading
from collections.abc import Sequence

from agent.errors import NetworkLabError

__all__ = [
    "REQUIRED_TOOLS",
    "list_namespaces",
    "netns_cmd",
    "run_in",
    "socket_in",
    "unavailable_reason",
]

logger = logging.getLogger(__name__)

REQUIRED_TOOLS = ("ip", "nft", "conntrack")
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21  # mounting /run/netns/<name> (ip netns add)
_CLONE_NEWNET = 0x40000000
#: A lab command that takes longer is stuck (conntrack on a huge table, nft on
#: a locked ruleset); bounded so a test or a call never hangs on it.
COMMAND_TIMEOUT_S = 20.0


def _effective_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def unavailable_reason() -> str | None:
    """One line saying why the kernel lab cannot be built here, or None."""
    caps = _effective_caps()
    for bit, name in (
        (_CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (_CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ):
        if os.geteuid() != 0 and not caps & (1 << bit):
            return (
                f"the kernel lab needs root or {name} (running as uid {os.geteuid()})"
            )
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            "the kernel lab needs "
            + ", ".join(missing)
            + " on PATH (packages iproute2, nftables, conntrack)"
        )
    if not os.path.exists("/proc/self/ns/net"):
        return "the kernel lab needs network namespaces (no /proc/self/ns/net)"
    return None


def netns_cmd(namespace: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


async def run(argv: Sequence[str], *, input: str | None = None) -> tuple[int, str, str]:
    """Run a command; ``(returncode, stdout, stderr)``. Bounded in time."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE
            if input is not None
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NetworkLabError(f"lab command {argv[0]!r} cannot start: {exc}") from exc
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            out, err = await proc.communicate(
                input.encode() if input is not None else None
            )
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise NetworkLabError(
            f"lab command timed out after {COMMAND_TIMEOUT_S:.0f} s: {' '.join(argv)}"
        ) from exc
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _one_line(text: str) -> str:
    return " / ".join(
        line.strip() for line in text.strip().splitlines() if line.strip()
    )


async def run_checked(argv: Sequence[str], *, input: str | None = None) -> str:
    """Run a command; its stdout, or a one-line :class:`NetworkLabError`."""
    code, out, err = await run(argv, input=input)
    if code != 0:
        raise NetworkLabError(
            f"lab command failed (exit {code}): {' '.join(argv)}: "
            f"{_one_line(err) or _one_line(out) or 'no output'}"
        )
    logger.debug("lab: %s", " ".join(argv))
    return out


async def run_in(
    namespace: str, argv: Sequence[str], *, input: str | None = None
) -> str:
    """Run ``argv`` inside ``namespace``; stdout, or a one-line
    :class:`NetworkLabError` naming the command and its stderr."""
    return await run_checked(netns_cmd(namespace, argv), input=input)


async def list_namespaces() -> list[str]:
    """Names of every named network namespace on the host (``ip netns list``)."""
    out = await run_checked(["ip", "netns", "list"])
    # Lines look like "name (id: 3)" or just "name".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def socket_in(
    namespace: str,
    kind: socket.SocketKind = socket.SOCK_DGRAM,
    bind: tuple[str, int] | None = None,
) -> socket.socket:
    """A non-blocking IPv4 socket created (and bound) inside ``namespace``.

    Blocking for a few milliseconds (a thread start and join); call it from a
    loop via ``asyncio.to_thread`` only if that matters — the setns happens in
    a fresh thread either way, never in a pooled one.
    """
    result: list[socket.socket] = []
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                _libc_setns(fd)
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, kind)
            try:
                if bind is not None:
                    sock.bind(bind)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            result.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=opener, name=f"setns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise NetworkLabError(
            f"cannot open a socket in lab namespace {namespace}: {errors[0]}"
        ) from errors[0]
    return result[0]
