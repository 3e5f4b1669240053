"""The interrupt record (agent.cli.interrupts): which signal, and what it cancels."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from agent.cli.interrupts import Interrupts


async def test_a_signal_cancels_the_attached_task_and_is_named() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        task = asyncio.create_task(asyncio.sleep(30))
        with interrupts.cancelling(task):
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
    assert interrupts.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


async def test_a_signal_before_the_task_cancels_it_when_attached() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        os.kill(os.getpid(), signal.SIGINT)  # e.g. while modules load
        assert interrupts.received == "SIGINT"
        task = asyncio.create_task(asyncio.sleep(30))
        with interrupts.cancelling(task):
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)


def test_a_second_signal_stops_waiting() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert interrupts.received == "SIGINT"


def test_installing_twice_keeps_the_first_owner() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        with interrupts.installed():
            pass
        assert interrupts.is_installed
    assert not interrupts.is_installed
