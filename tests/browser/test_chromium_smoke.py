"""Smoke tests for the headless-Chromium harness (fake mic, WebRTC, CDP plumbing).

They also pin down facts the agent interop depends on: Chromium's ICE host
candidates are plain IPs (no mDNS ``.local`` names) and include 127.0.0.1, and
aiortc's SDP parser accepts this Chromium's offers.
"""

from __future__ import annotations

import pytest
from aiortc.sdp import SessionDescription

from tests.support.chromium import BrowserError, BrowserTimeout, Chromium
from tests.support.http import serve_pages

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>callagent browser smoke</title>
<script>
"use strict";

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

function collectCandidates(pc) {
  const found = [];
  pc.addEventListener("icecandidate", (e) => {
    if (e.candidate && e.candidate.candidate) found.push(e.candidate.candidate);
  });
  return found;
}

// Two peer connections in this page, connected to each other (no iceServers,
// non-trickle: each side waits for gathering to complete before answering).
async function startLoopback() {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const a = new RTCPeerConnection();
  const b = new RTCPeerConnection();
  const candidates = collectCandidates(a);
  for (const track of stream.getAudioTracks()) a.addTrack(track, stream);
  await a.setLocalDescription();
  await gathered(a);
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await gathered(b);
  await a.setRemoteDescription(b.localDescription);
  window.loopback = {a, b};
  return {tracks: stream.getAudioTracks().map((t) => t.label), candidates};
}

async function inboundAudioPackets(pc) {
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      return report.packetsReceived || 0;
    }
  }
  return 0;
}

async function selectedPair(pc) {
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      const pair = stats.get(report.selectedCandidatePairId);
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      const show = (c) => `${c.protocol} ${c.address}:${c.port} ${c.candidateType}`;
      return {local: show(local), remote: show(remote)};
    }
  }
  return null;
}

async function audioOffer() {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("audio");
  await pc.setLocalDescription();
  await gathered(pc);
  const sdp = pc.localDescription.sdp;
  pc.close();
  return sdp;
}
</script>
"""


async def test_loopback_call_with_fake_microphone(chromium: Chromium) -> None:
    async with serve_pages({"/": PAGE}) as base_url:
        page = await chromium.new_page(f"{base_url}/")
        setup = await page.evaluate("startLoopback()")
        assert setup["tracks"], f"getUserMedia gave no audio track: {setup}"

        await page.wait_for(
            "loopback.a.connectionState === 'connected'"
            " && loopback.b.connectionState === 'connected'"
        )
        packets = await page.wait_for("inboundAudioPackets(loopback.b)")
        assert packets > 0
        states = await page.evaluate(
            "[loopback.a.connectionState, loopback.b.connectionState]"
        )
        assert states == ["connected", "connected"]

        # Facts the Python agent (listening on 127.0.0.x) relies on.
        candidates: list[str] = setup["candidates"]
        pair = await page.evaluate("selectedPair(loopback.b)")
        info = f"candidates={candidates} selected={pair}"
        assert pair is not None, info
        assert not any(".local " in c for c in candidates), f"mDNS names: {info}"
        assert any(" 127.0.0.1 " in c and " typ host" in c for c in candidates), (
            f"no 127.0.0.1 host candidate: {info}"
        )
        await page.evaluate("loopback.a.close(), loopback.b.close(), true")


async def test_chromium_offer_parses_with_aiortc(chromium: Chromium) -> None:
    async with serve_pages({"/": PAGE}) as base_url:
        page = await chromium.new_page(f"{base_url}/")
        sdp = await page.evaluate("audioOffer()")

    assert isinstance(sdp, str) and sdp.startswith("v=0")
    parsed = SessionDescription.parse(sdp)
    assert [m.kind for m in parsed.media] == ["audio"]
    audio = parsed.media[0]
    assert "opus" in {codec.name.lower() for codec in audio.rtp.codecs}
    assert audio.ice is not None
    assert audio.ice.usernameFragment and audio.ice.password
    assert audio.dtls is not None
    assert any(fp.algorithm == "sha-256" for fp in audio.dtls.fingerprints)
    assert audio.dtls.role == "auto"  # a=setup:actpass
    hosts = {c.ip for c in audio.ice_candidates}
    assert "127.0.0.1" in hosts, f"host candidates: {sorted(hosts)}"
    assert not any(h.endswith(".local") for h in hosts), sorted(hosts)


async def test_harness_reports_js_errors_and_timeouts(chromium: Chromium) -> None:
    page = await chromium.new_page()
    assert await page.evaluate("Promise.resolve({a: [1, 'x', null]})") == {
        "a": [1, "x", None]
    }
    await page.evaluate("console.warn('about to fail'), true")
    with pytest.raises(BrowserError, match=r"threw: Error: boom") as thrown:
        await page.evaluate("Promise.reject(new Error('boom'))")
    assert "about to fail" in str(thrown.value)  # console tail in the message
    with pytest.raises(BrowserTimeout, match=r"still false after 0.2 s"):
        await page.wait_for("window.never", timeout=0.2)
    with pytest.raises(BrowserTimeout, match=r"did not settle within 0.2 s"):
        await page.evaluate("new Promise(() => {})", timeout=0.2)
    assert [e.text for e in page.console if e.level == "warning"] == ["about to fail"]
