"""A restart the far end never made is not a completed restart.

webrtcbin answers an ICE-restart offer (or a WHIP PATCH) with its old
ufrag/pwd and keeps sending on its old sockets. The far end here is a real
peer of our own stack on real loopback sockets that does just that: the
restart offer reaches it with our *old* credentials (the restart is lost on
its way, as webrtcbin loses it), so it answers, unmodified, with its own old
ones. The restart must end ``rejected`` and media must keep flowing on the
old generation, both ways, well past the time a replaced generation lives.
"""

from __future__ import annotations

import asyncio

from agent.stack.config import RETIRE_AFTER_S
from agent.stack.peer import Peer
from tests.support.peers import connected_pair, packets_after, ufrag


def without_restart(offer: str, peer: Peer) -> str:
    """``offer`` as a far end that ignores restarts reads it: our old
    generation's credentials, no candidates of the new one."""
    old = peer.generations[0].gatherer.getLocalParameters()
    lines = []
    for line in offer.replace("\r\n", "\n").strip().split("\n"):
        if line.startswith("a=ice-ufrag:"):
            line = f"a=ice-ufrag:{old.usernameFragment}"
        elif line.startswith("a=ice-pwd:"):
            line = f"a=ice-pwd:{old.password}"
        elif line.startswith("a=candidate:"):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


async def test_an_answer_with_the_old_credentials_rejects_the_restart() -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:

        async def far_end_ignoring_restarts(offer: str) -> str:
            return await callee.accept_offer(without_restart(offer, caller))

        caller.renegotiate = far_end_ignoring_restarts
        old_pair = caller.selected_pair
        old_callee_ufrag = ufrag(callee)
        await packets_after(rec_a, 10)

        assert not await asyncio.wait_for(caller.restart_ice(), 15)

        assert rec_a.restarts == [("started", 1, "local"), ("rejected", 1, "")]
        assert rec_b.restarts == []  # the far end never restarted
        assert ufrag(callee) == old_callee_ufrag
        # The old generation stays in use: same pair, its socket not retired.
        assert caller.pending is None and caller.ice_generation == 0
        assert caller.selected_pair == old_pair
        assert caller.current is caller.generations[0]
        loop = asyncio.get_running_loop()
        end = loop.time() + RETIRE_AFTER_S + 1.0
        while loop.time() < end:
            # 25 packets (0.5 s) each way, again and again, past the moment
            # a replaced generation's socket would have closed.
            await packets_after(rec_a, 25, timeout=2)
            await packets_after(rec_b, 25, timeout=2)
    finally:
        await caller.close()
        await callee.close()
