"""A WHIP endpoint that answers an ICE-restart PATCH with its old ufrag/pwd
(what webrtcbin does) did not restart: ``callagent call`` reports the restart
``rejected``, keeps the old generation, and the far end's audio, still sent
there, keeps arriving. The endpoint is a real agent peer on real sockets
behind a small WHIP front that never hands it the PATCH."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from aiortc import sdp

from agent.signaling.sdpfrag import MEDIA_TYPE as SDPFRAG
from agent.signaling.sdpfrag import build_sdpfrag
from tests.support.callagent_cli import call, only_call
from tests.support.http import serve_app
from tests.support.whip import far_end


async def test_a_patch_answered_with_the_old_credentials_is_a_rejected_restart(
    tmp_path: Path,
) -> None:
    peer, listener = far_end()
    patches: list[str] = []

    async def post(request: web.Request) -> web.Response:
        answer = await peer.accept_offer(await request.text())
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": "/whip/r1", "ETag": '"1"'},
        )

    async def patch(request: web.Request) -> web.Response:
        patches.append(await request.text())
        # webrtcbin: no restart is made, its current credentials come back.
        local = peer.gatherer.getLocalParameters()
        candidates = [
            "candidate:" + sdp.candidate_to_sdp(c)
            for c in peer.gatherer.getLocalCandidates()
        ]
        frag = build_sdpfrag(
            ufrag=str(local.usernameFragment),
            pwd=str(local.password),
            candidates=candidates,
        )
        return web.Response(
            status=200, body=frag.encode(), headers={"Content-Type": SDPFRAG}
        )

    async def delete(request: web.Request) -> web.Response:
        await peer.close()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/whip", post)
    app.router.add_patch("/whip/r1", patch)
    app.router.add_delete("/whip/r1", delete)
    scenario = tmp_path / "restart.yaml"
    scenario.write_text(
        "name: whip-restart-rejected\nduration: 5s\n"
        "steps:\n  - {at: 1s, do: ice.restart, side: caller}\n"
        "expect: {call_up: true}\n"
    )
    out = tmp_path / "client.json"
    try:
        async with serve_app(app) as base:
            code, stdout, stderr = await call(
                f"{base}/whip", "--scenario", str(scenario), "--report", str(out)
            )
    finally:
        await peer.close()
    assert code == 0, stdout + stderr
    assert len(patches) == 1
    client = only_call(out)
    (restart,) = [e for e in client["events"] if e["type"] == "ice_restart"]
    assert restart["detail"]["outcome"] == "rejected", json.dumps(restart)
    assert listener.restarts == []  # the far end never restarted
    # The old generation stayed in use: the far end's audio, sent there all
    # along, arrived for the whole call (5 s of 20 ms packets).
    received = client["media"]["callee_to_caller"]["packets_received"]
    assert received > 200, client["media"]
    assert client["media"]["callee_to_caller"]["max_gap_ms"] < 500
    assert listener.rtp > 200  # and ours reached it
