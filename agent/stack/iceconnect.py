"""ICE connectivity checks that end when the check list does, not on a tick.

aioice 0.13's ``Connection.connect()`` paces its ordinary checks with
``while self._check_periodic(): await asyncio.sleep(0.02)`` and reads the
check list's outcome only after that loop has ended. A check that succeeds
1.3 ms after it started (loopback, a LAN) therefore completes ICE at the next
20 ms tick: every call's setup waits up to one tick for nothing, and so does
every ICE restart.

:func:`run_checks` is the same procedure with the wait changed. Ordinary
checks still start one per pacing interval (RFC 8445 §6.1.4.2: one check per
Ta; aioice's 20 ms is kept as :data:`CHECK_PACING_S`), but the wait between
two of them is a wait on the check list's outcome, with the interval as its
timeout: the moment a nomination completes the check list (or it fails, or
the connection is closed), the checks end. Triggered checks (RFC 8445
§7.3.1.4) were never paced: aioice starts them from ``check_incoming``.

Everything else is aioice's, in aioice's order: candidate pairs formed and
sorted (§6.1.2.2), the initial pairs unfrozen, the checks received before
``connect()`` answered, the remaining checks cancelled at the end, consent
(:meth:`~agent.stack.ice.AgentIceConnection.query_consent`, RFC 7675) started
on success, and ``ConnectionError("ICE negotiation failed")`` raised on failure
(which aiortc's ``RTCIceTransport`` turns into ``failed``). The failure hold of
:mod:`agent.stack.ice` (``_check_list_maybe_fail``) decides *when* the check
list fails, as before.

Private aioice names used here are pinned in :mod:`agent.stack.pins`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aioice
from aioice.ice import ICE_COMPLETED

#: the interval between two ordinary checks (aioice's Ta)
CHECK_PACING_S = 0.02

if TYPE_CHECKING:
    _Connection = aioice.Connection
else:
    _Connection = object


async def run_checks(connection: aioice.Connection, pacing_s: float) -> None:
    """Perform ICE on ``connection``: return once a pair is nominated for every
    component, raise ``ConnectionError`` if the check list fails or the
    connection is closed (see the module docstring)."""
    if not connection._local_candidates_end:
        raise ConnectionError("Local candidates gathering was not performed")
    if connection.remote_username is None or connection.remote_password is None:
        raise ConnectionError("Remote username or password is missing")

    # Forming candidate pairs (RFC 8445 §6.1.2.2), then the initial states.
    for remote_candidate in connection._remote_candidates:
        connection._pair_remote_candidate(remote_candidate)
    connection.sort_check_list()
    connection._unfreeze_initial()

    # Answer the checks received before connect() (RFC 8445 §7.3.1.4).
    for early_check in connection._early_checks:
        connection.check_incoming(*early_check)
    connection._early_checks.clear()
    connection._early_checks_done = True

    outcome = asyncio.ensure_future(connection._check_list_state.get())
    try:
        # One ordinary check per interval, until the outcome is known.
        while not outcome.done() and connection._check_periodic():
            await asyncio.wait({outcome}, timeout=pacing_s)
        result = await outcome
    finally:
        outcome.cancel()

    for pair in connection._check_list:
        if pair.task:
            pair.task.cancel()

    if result != ICE_COMPLETED:
        raise ConnectionError("ICE negotiation failed")

    # Consent freshness (RFC 7675), where aioice starts it.
    connection._query_consent_task = asyncio.create_task(connection.query_consent())


class PromptChecks(_Connection):
    """Mixed into :class:`~agent.stack.ice.AgentIceConnection` before
    ``aioice.Connection``: its ``connect()`` is :func:`run_checks`."""

    #: the interval between two ordinary checks (a test may lengthen it)
    check_pacing_s: float = CHECK_PACING_S

    async def connect(self) -> None:
        await run_checks(self, self.check_pacing_s)


__all__ = ["CHECK_PACING_S", "PromptChecks", "run_checks"]
