"""``clean``: what a SIGKILLed run left behind goes, and nothing else does."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import textwrap

import pytest

from agent.errors import NetworkLabError
from agent.net.lab.clean import clean, lab_namespaces
from agent.net.lab.lab import Lab
from agent.net.lab.shell import list_namespaces, run_checked

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("root_lab")]

# A run that builds a lab, starts a far-end process inside it, and is then
# SIGKILLed: its ``finally`` never runs.
_DOOMED_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from agent.net.lab.lab import Lab
    from agent.net.lab.topology import Role

    async def main() -> None:
        lab = Lab(run_id=sys.argv[1])
        await lab.build()
        far_end = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", lab.namespace(Role.OUTSIDE), "sleep", "60",
            stdout=asyncio.subprocess.DEVNULL,
        )
        print("up", far_end.pid, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_clean_removes_one_run_then_all_runs_and_nothing_else() -> None:
    run_a, run_b = f"a{secrets.token_hex(3)}", f"b{secrets.token_hex(3)}"
    unrelated = f"cx-{secrets.token_hex(3)}-0-nat"  # another prefix
    near_miss = f"ca-{secrets.token_hex(3)}"  # our prefix, not a lab name
    for name in (unrelated, near_miss):
        await run_checked(["ip", "netns", "add", name])
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DOOMED_RUN,
        run_a,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert doomed.stdout is not None
        async with asyncio.timeout(20):
            word, far_end_pid = (await doomed.stdout.readline()).split()
        assert word == b"up"
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        await Lab(run_id=run_b).build()  # left up: no teardown, as if killed

        names_a = await lab_namespaces(run_a)
        names_b = await lab_namespaces(run_b)
        assert len(names_a) == 3 and len(names_b) == 3

        assert sorted(await clean(run_a)) == sorted(names_a)
        # The far end left inside (it would keep the namespace alive) is gone.
        assert not _running(int(far_end_pid))
        present = await list_namespaces()
        assert not set(names_a) & set(present)
        assert set(names_b) <= set(present)

        removed = await clean()
        assert set(names_b) <= set(removed)
        present = await list_namespaces()
        assert not set(names_b) & set(present)
        assert {unrelated, near_miss} <= set(present)
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
        await clean(run_a)
        await clean(run_b)
        for name in (unrelated, near_miss):
            await run_checked(["ip", "netns", "del", name])


async def test_clean_refuses_a_malformed_run_id() -> None:
    with pytest.raises(NetworkLabError, match="run id"):
        await clean("ab-cd")
