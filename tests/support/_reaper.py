"""Run a command as a Linux child subreaper; kill and reap its whole tree on demand.

Usage: python -I -S _reaper.py WORKDIR COMMAND [ARGS...]

Started by chromium.py (stdin = a pipe from the test process).  It starts COMMAND
in a new process group (pid written to WORKDIR/child.pid) and, because it is a
child subreaper, every orphaned descendant (Chromium's zygote, renderers, GPU and
network processes) is re-parented to it rather than to init.  When

* stdin reaches EOF (the test closed it, or the test process died, even by
  SIGKILL), or
* it gets SIGTERM/SIGINT/SIGHUP, or
* COMMAND exits,

it SIGKILLs COMMAND's process group and every remaining child, reaps them all, and
removes WORKDIR, then exits with COMMAND's exit status.  So when this process has
been reaped nothing of the browser is left, not even a zombie, whatever init does.

Standard library only; no asyncio (it runs with -I -S for a fast start).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

_PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans go to init as usual
        pass


def _children() -> list[int]:
    """Pids whose parent is this process (live or zombie)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Format: pid (comm) state ppid ...; comm may contain spaces/parens.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: _reaper.py WORKDIR COMMAND [ARGS...]", file=sys.stderr)
        return 2
    workdir, command = Path(argv[0]), argv[1:]
    _set_subreaper()
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    (workdir / "child.pid").write_text(f"{child.pid}\n")

    def kill_all() -> None:
        for target in (-child.pid, *_children()):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        kill_all()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    def watch_stdin() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        kill_all()

    threading.Thread(target=watch_stdin, daemon=True).start()

    status = 0
    while True:
        try:
            pid, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child.pid:
            status = os.waitstatus_to_exitcode(raw)
            child.returncode = status  # keep Popen from reaping/complaining later
        if child.returncode is not None:
            # The browser is gone: take its helpers down with it, including any
            # that were just re-parented to us from outside its process group.
            kill_all()
    shutil.rmtree(workdir, ignore_errors=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
