"""Headless Chromium (a peer nobody here wrote) against the agent's endpoint.

The page is served from another origin (its own port on 127.0.0.1), named with
``cors_origins`` (``--cors-origin``), so CORS is exercised as a real browser
WHIP client would. Chromium gets a fake microphone
(``--use-fake-device-for-media-stream``). Each test asserts from both sides:
the agent's report or live view, and the browser's ``getStats()``.

* WHIP: POST with a fake-mic offer, audio both ways, DELETE, report written.
* Issue 4: ``pc.restartIce()`` sent as a WHIP PATCH (If-Match: the ETag) and
  honoured by the agent: a new local ufrag in the browser's stats, media keeps
  flowing, and the agent counts exactly one remote-initiated restart.
* Issue 4: the agent restarts ICE toward the browser over ``/ws``; the browser
  answers the re-offer, media keeps flowing, the agent counts one local restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import Chromium, Page
from tests.support.http import serve_pages
from tests.support.whip import serve_agent

pytestmark = pytest.mark.browser

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>callagent WHIP / ws client</title>
<script>
"use strict";

// Resolves with the candidates gathered, once this gathering round ends.
function gatheringDone(pc) {
  return new Promise((resolve) => {
    const found = [];
    const listener = (e) => {
      if (e.candidate && e.candidate.candidate) {
        found.push(e.candidate.candidate);
      } else if (!e.candidate) {
        pc.removeEventListener("icecandidate", listener);
        resolve(found);
      }
    };
    pc.addEventListener("icecandidate", listener);
  });
}

function attr(sdp, name) {
  const match = new RegExp("a=" + name + ":(.*)").exec(sdp);
  return match ? match[1].trim() : null;
}

async function micConnection() {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection();
  const track = stream.getAudioTracks()[0];
  pc.addTransceiver(track, {direction: "sendrecv", streams: [stream]});
  return pc;
}

// --- WHIP (RFC 9725) ---
async function whipCall(endpoint) {
  const pc = await micConnection();
  const done = gatheringDone(pc);
  await pc.setLocalDescription();
  await done;
  const response = await fetch(endpoint, {
    method: "POST",
    headers: {"Content-Type": "application/sdp"},
    body: pc.localDescription.sdp,
  });
  const answer = await response.text();
  if (response.status !== 201) throw new Error(`POST ${response.status}: ${answer}`);
  window.whip = {
    pc,
    answer,
    resource: new URL(response.headers.get("Location"), endpoint).href,
    etag: response.headers.get("ETag"),
  };
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  return {resource: whip.resource, etag: whip.etag};
}

// restartIce(), then the new ufrag/pwd and candidates as a WHIP PATCH; the
// endpoint's sdpfrag replaces the ICE lines of the previous answer.
async function whipRestart() {
  const pc = whip.pc;
  pc.restartIce();
  const done = gatheringDone(pc);
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const candidates = await done;
  const mid = pc.getTransceivers()[0].mid;
  const ufrag = attr(offer.sdp, "ice-ufrag");
  const frag = [
    "a=ice-options:trickle", `a=group:BUNDLE ${mid}`,
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", `a=mid:${mid}`,
    `a=ice-ufrag:${ufrag}`, `a=ice-pwd:${attr(offer.sdp, "ice-pwd")}`,
    ...candidates.map((c) => "a=" + c), "a=end-of-candidates",
  ].join("\r\n") + "\r\n";
  const response = await fetch(whip.resource, {
    method: "PATCH",
    headers: {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": whip.etag},
    body: frag,
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`PATCH ${response.status}: ${text}`);
  const oldEtag = whip.etag;
  whip.etag = response.headers.get("ETag");
  const remoteCandidates = text.split("\r\n")
    .filter((l) => l.startsWith("a=candidate:"));
  let sdp = whip.answer
    .replace(/a=ice-ufrag:.*\r\n/g, `a=ice-ufrag:${attr(text, "ice-ufrag")}\r\n`)
    .replace(/a=ice-pwd:.*\r\n/g, `a=ice-pwd:${attr(text, "ice-pwd")}\r\n`)
    .replace(/a=candidate:.*\r\n/g, "")
    .replace(/a=end-of-candidates\r\n/g, "");
  const lines = remoteCandidates.map((c) => c + "\r\n").join("");
  sdp = sdp.replace(/(a=ice-pwd:.*\r\n)/, `$1${lines}a=end-of-candidates\r\n`);
  whip.answer = sdp;
  await pc.setRemoteDescription({type: "answer", sdp});
  return {ufrag, oldEtag, etag: whip.etag, remoteUfrag: attr(text, "ice-ufrag")};
}

async function whipHangup() {
  const response = await fetch(whip.resource, {method: "DELETE"});
  whip.pc.close();
  return response.status;
}

// --- /ws (callagent's own channel) ---
async function wsCall(url) {
  const pc = await micConnection();
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error("WebSocket failed"));
  });
  window.ws = {pc, socket, offersAnswered: 0, errors: [], call: null};
  const answered = new Promise((resolve) => { ws.gotAnswer = resolve; });
  socket.onmessage = async (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "answer") {
      ws.call = message.call;
      await pc.setRemoteDescription({type: "answer", sdp: message.sdp});
      ws.gotAnswer();
    } else if (message.type === "offer") {
      // The agent re-offers (e.g. its ICE restart): answer with a complete SDP.
      await pc.setRemoteDescription({type: "offer", sdp: message.sdp});
      const done = gatheringDone(pc);
      await pc.setLocalDescription();
      // Only an ICE restart gathers again; otherwise the answer is complete.
      if (pc.iceGatheringState !== "complete") await done;
      socket.send(JSON.stringify({type: "answer", sdp: pc.localDescription.sdp}));
      ws.offersAnswered += 1;
    } else if (message.type === "error") {
      ws.errors.push(message.message);
    }
  };
  const done = gatheringDone(pc);
  await pc.setLocalDescription();
  await done;
  socket.send(JSON.stringify({type: "offer", sdp: pc.localDescription.sdp}));
  await answered;
  return ws.call;
}

// --- getStats ---
async function audioStats(pc) {
  const stats = await pc.getStats();
  const out = {inbound: 0, outbound: 0, localUfrag: null, remoteUfrag: null};
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      out.inbound = report.packetsReceived || 0;
    } else if (report.type === "outbound-rtp" && report.kind === "audio") {
      out.outbound = report.packetsSent || 0;
    } else if (report.type === "transport" && report.selectedCandidatePairId) {
      const pair = stats.get(report.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      out.localUfrag = report.iceLocalUsernameFragment
                       || (local && local.usernameFragment) || null;
      out.remoteUfrag = (remote && remote.usernameFragment) || null;
    }
  }
  out.state = pc.connectionState;
  return out;
}
</script>
"""


def only_report(directory: Path, pattern: str) -> dict[str, Any]:
    (path,) = directory.glob(pattern)
    report = json.loads(path.read_text())
    assert isinstance(report, dict)
    return report


async def stats(page: Page, pc: str) -> dict[str, Any]:
    result = await page.evaluate(f"audioStats({pc})")
    assert isinstance(result, dict)
    return result


async def wait_inbound_more_than(page: Page, pc: str, count: int) -> None:
    await page.wait_for(
        f"audioStats({pc}).then((s) => s.inbound > {count})", timeout=15
    )


@asynccontextmanager
async def ws_call(
    chromium: Chromium, tmp_path: Path
) -> AsyncIterator[tuple[Page, Any]]:
    """A Chromium page connected to the agent over ``/ws`` with audio flowing
    both ways; on exit the page says ``bye`` and the call's report is written."""
    async with (
        serve_pages({"/": PAGE}) as page_origin,
        serve_agent(report_dir=tmp_path, cors_origins=(page_origin,)) as served,
    ):
        page = await chromium.new_page(f"{page_origin}/")
        ws_url = served.base_url.replace("http://", "ws://") + "/ws"
        call_id = await page.evaluate(f"wsCall({json.dumps(ws_url)})", timeout=20)
        await page.wait_for("ws.pc.connectionState === 'connected'", timeout=15)
        await wait_inbound_more_than(page, "ws.pc", 20)
        served_call = served.backend.calls[call_id]
        await asyncio.wait_for(served_call.connected.wait(), 10)
        yield page, served_call
        await page.evaluate("ws.socket.send(JSON.stringify({type: 'bye'})), true")
        assert served_call.task is not None
        await asyncio.wait_for(asyncio.shield(served_call.task), 15)


async def test_chromium_calls_the_whip_endpoint_with_a_fake_microphone(
    chromium: Chromium, tmp_path: Path
) -> None:
    async with (
        serve_pages({"/": PAGE}) as page_origin,
        serve_agent(report_dir=tmp_path, cors_origins=(page_origin,)) as served,
    ):
        page = await chromium.new_page(f"{page_origin}/")
        await page.evaluate(f"whipCall({json.dumps(served.whip)})", timeout=20)
        await page.wait_for("whip.pc.connectionState === 'connected'", timeout=15)
        await wait_inbound_more_than(page, "whip.pc", 50)  # audio from the agent
        # and the browser has sent a second of its fake microphone's audio
        await page.wait_for(
            "audioStats(whip.pc).then((s) => s.outbound > 75)", timeout=15
        )
        (served_call,) = served.backend.calls.values()
        await asyncio.wait_for(served_call.connected.wait(), 10)
        browser = await stats(page, "whip.pc")
        assert await page.evaluate("whipHangup()") == 200

    (call,) = only_report(tmp_path, "whip-*.json")["calls"]
    assert call["connected"] and call["error"] is None, call["error"]
    assert call["mode"] == "whip-server" and call["hung_up_by"] == "caller"
    received = call["media"]["caller_to_callee"]
    assert received["packets_received"] > 50, (received, browser)  # the fake mic
    assert "Chrome" in call["sides"]["caller"]["user_agent"]
    assert browser["inbound"] > 50 and browser["outbound"] > 50, browser


async def test_chromium_restart_ice_over_whip_patch_is_honoured(
    chromium: Chromium, tmp_path: Path
) -> None:
    async with (
        serve_pages({"/": PAGE}) as page_origin,
        serve_agent(report_dir=tmp_path, cors_origins=(page_origin,)) as served,
    ):
        page = await chromium.new_page(f"{page_origin}/")
        await page.evaluate(f"whipCall({json.dumps(served.whip)})", timeout=20)
        await page.wait_for("whip.pc.connectionState === 'connected'", timeout=15)
        await wait_inbound_more_than(page, "whip.pc", 20)
        before = await stats(page, "whip.pc")
        assert before["localUfrag"], f"getStats shows no local ufrag: {before}"
        (served_call,) = served.backend.calls.values()
        agent_before = served_call.live()["media"]["caller_to_callee"]

        restart = await page.evaluate("whipRestart()", timeout=20)
        assert restart["etag"] != restart["oldEtag"]
        assert restart["ufrag"] != before["localUfrag"]
        # The browser's selected pair now uses the new generation's ufrag...
        await page.wait_for(
            f"audioStats(whip.pc).then((s) => s.localUfrag === "
            f"{json.dumps(restart['ufrag'])} && s.state === 'connected')",
            timeout=15,
        )
        after = await stats(page, "whip.pc")
        # ...and media keeps flowing both ways after it.
        await wait_inbound_more_than(page, "whip.pc", after["inbound"] + 50)
        await served_call.call.peer.restart_settled(15)
        live = served_call.live()
        agent_after = live["media"]["caller_to_callee"]
        assert agent_after["packets_received"] > agent_before["packets_received"] + 50
        assert live["metrics"]["ice_restarts"] == {
            "total": 1,
            "local": 0,
            "remote": 1,
            "level": "warning",
        }
        assert await page.evaluate("whipHangup()") == 200

    (call,) = only_report(tmp_path, "whip-*.json")["calls"]
    assert call["error"] is None, call["error"]
    restarts = [e for e in call["events"] if e["type"] == "ice_restart"]
    assert [(e["initiator"], e["detail"]["outcome"]) for e in restarts] == [
        ("remote", "completed")
    ]
    assert call["metrics"]["ice_restarts"]["remote"] == 1


async def test_agent_restarts_ice_toward_chromium_over_ws(
    chromium: Chromium, tmp_path: Path
) -> None:
    async with ws_call(chromium, tmp_path) as (page, served_call):
        call_id = served_call.call_id
        before = await stats(page, "ws.pc")

        assert await asyncio.wait_for(served_call.call.peer.restart_ice(), 20)
        assert await page.evaluate("ws.offersAnswered") == 1
        await page.wait_for(
            f"audioStats(ws.pc).then((s) => s.localUfrag !== "
            f"{json.dumps(before['localUfrag'])} && s.state === 'connected')",
            timeout=15,
        )
        after = await stats(page, "ws.pc")
        await wait_inbound_more_than(page, "ws.pc", after["inbound"] + 50)
        live = served_call.live()
        assert live["metrics"]["ice_restarts"] == {
            "total": 1,
            "local": 1,
            "remote": 0,
            "level": "warning",
        }
        assert await page.evaluate("ws.errors") == []
        agent_received = live["media"]["caller_to_callee"]["packets_received"]

    (call,) = only_report(tmp_path, f"{call_id}.json")["calls"]
    assert call["mode"] == "ws-server" and call["error"] is None
    assert call["metrics"]["ice_restarts"]["local"] == 1
    assert call["media"]["caller_to_callee"]["packets_received"] >= agent_received


async def remote_certificate(page: Page) -> str | None:
    """The fingerprint of the agent's certificate as Chromium's getStats sees it."""
    result = await page.evaluate(
        """ws.pc.getStats().then((stats) => {
          for (const report of stats.values()) {
            if (report.type === "transport" && report.remoteCertificateId) {
              const cert = stats.get(report.remoteCertificateId);
              return cert ? cert.fingerprint : null;
            }
          }
          return null;
        })"""
    )
    assert result is None or isinstance(result, str)
    return result


@pytest.mark.parametrize("ice_restart", [False, True])
async def test_agent_rotates_its_certificate_and_chromium_handshakes_again(
    chromium: Chromium, tmp_path: Path, ice_restart: bool
) -> None:
    """Issue 5: a re-offer with a new fingerprint (with or without an ICE
    restart) makes Chromium set up a new DTLS association on the live call."""
    async with ws_call(chromium, tmp_path) as (page, served_call):
        peer = served_call.call.peer
        old = await remote_certificate(page)
        assert (
            old is not None
            and old.upper() == peer.certificates[0]["fingerprint_sha256"].upper()
        )

        done = await asyncio.wait_for(
            peer.rehandshake_dtls(rotate_certificate=True, ice_restart=ice_restart),
            20,
        )
        assert done, [a.error for a in peer.dtls.associations]
        new_fingerprint = peer.certificates[-1]["fingerprint_sha256"].upper()
        assert new_fingerprint != old.upper()
        # Chromium's stats now show the agent's new certificate: a new
        # handshake happened on its side too, and the call is still up.
        await page.wait_for(
            "ws.pc.getStats().then((stats) => [...stats.values()].some((r) => "
            f"r.type === 'certificate' && r.fingerprint.toUpperCase() === "
            f"{json.dumps(new_fingerprint)}))",
            timeout=15,
        )
        assert await remote_certificate(page) is not None
        assert (await remote_certificate(page) or "").upper() == new_fingerprint
        after = await stats(page, "ws.pc")
        await wait_inbound_more_than(page, "ws.pc", after["inbound"] + 50)
        live = served_call.live()
        assert live["metrics"]["dtls_rehandshakes"] == {
            "total": 1,
            "local": 1,
            "remote": 0,
            "level": "warning",
        }
        assert live["metrics"]["ice_restarts"]["total"] == (1 if ice_restart else 0)
