"""The page callagent serves to a browser target: the far end's application.

It is what a small web app does: a fake microphone, one RTCPeerConnection,
``/ws`` signalling to the agent (``access_token`` in the query, RFC 6750
§2.3: a browser WebSocket cannot send headers). It answers the agent's
re-offers (the agent's ICE restart, certificate rotation), restarts ICE
itself with ``pc.restartIce()`` when the scenario says the far end does, and
samples its own ``getStats()`` every :data:`SAMPLE_MS` ms: that is the far
end's view in the report (selected pair changes, local ufrag, DTLS state,
packets in/out, the longest stretch with no audio arriving).

Only IPv4 UDP candidates are handed to the agent. Chromium gathers loopback
(``--allow-loopback-in-peer-connection``); Firefox ESR gathers none here even
with ``media.peerconnection.ice.loopback``, only the host's own interface
address, which the kernel delivers locally: the traffic never leaves the host.
"""

from __future__ import annotations

__all__ = ["PAGE", "SAMPLE_MS"]

SAMPLE_MS = 50

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>callagent far end</title>
<script>
"use strict";
const SAMPLE_MS = __SAMPLE_MS__;
const GATHER_LIMIT_MS = 5000;
const far = {pc: null, socket: null, errors: [], answered: 0, restarts: 0,
             view: {pairChanges: 0, pairs: [], ufrags: [], dtls: null,
                    packetsIn: 0, packetsOut: 0, maxGapMs: 0, lastInAt: null,
                    samples: []}};
window.far = far;

// UDP over IPv4 only: the agent binds one IPv4 address, and TCP candidates
// would only add failed checks.
function usableCandidates(sdp) {
  return sdp.split("\r\n").filter((l) => !l.startsWith("a=candidate:")
    || / udp \d+ \d+\.\d+\.\d+\.\d+ /i.test(l)).join("\r\n");
}

function ufragOf(sdp) {
  const m = /a=ice-ufrag:(\S+)/.exec(sdp || "");
  return m ? m[1] : null;
}

// The end of the gathering round that setLocalDescription starts. Firefox
// resolves setLocalDescription of an ICE restart (its own or the agent's)
// while iceGatheringState still says "complete" from the previous round and
// only then goes gathering -> complete: waiting on the state alone sends an
// answer with no candidates, and the agent has nothing to check (Firefox
// never checks our loopback candidate from its interface address itself).
function gatheringDone(pc) {
  let resolve;
  const done = new Promise((ok) => { resolve = ok; });
  const check = () => {
    if (pc.iceGatheringState === "complete") {
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
  };
  pc.addEventListener("icegatheringstatechange", check);
  return {done, check};
}

function send(message) { far.socket.send(JSON.stringify(message)); }

async function localDescription(pc) {
  const before = pc.localDescription ? ufragOf(pc.localDescription.sdp) : null;
  const round = gatheringDone(pc);
  await pc.setLocalDescription();
  if (ufragOf(pc.localDescription.sdp) === before) {
    round.check();  // no new credentials, no new gathering round
  }
  // Bounded: a round that never ends still gets an answer to the agent.
  await Promise.race([round.done,
                      new Promise((ok) => setTimeout(ok, GATHER_LIMIT_MS))]);
  return usableCandidates(pc.localDescription.sdp);
}

let answerWaiter = null;

async function onMessage(event) {
  const message = JSON.parse(event.data);
  const pc = far.pc;
  try {
    if (message.type === "answer") {
      far.call = message.call || far.call;
      await pc.setRemoteDescription({type: "answer", sdp: message.sdp});
      if (answerWaiter) { answerWaiter(); answerWaiter = null; }
    } else if (message.type === "offer") {
      // The agent re-offers (its ICE restart, a new certificate).
      await pc.setRemoteDescription({type: "offer", sdp: message.sdp});
      send({type: "answer", sdp: await localDescription(pc)});
      far.answered += 1;
    } else if (message.type === "error") {
      far.errors.push(message.message);
    } else if (message.type === "bye") {
      far.bye = message.reason || "bye";
    }
  } catch (e) {
    far.errors.push(String(e));
  }
}

function answered() {
  return new Promise((resolve) => { answerWaiter = resolve; });
}

async function call(url) {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection();
  far.pc = pc;
  const track = stream.getAudioTracks()[0];
  pc.addTransceiver(track, {direction: "sendrecv", streams: [stream]});
  far.socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    far.socket.onopen = resolve;
    far.socket.onerror = () => reject(new Error("WebSocket to the agent failed"));
  });
  far.socket.onmessage = onMessage;
  const done = answered();
  send({type: "offer", sdp: await localDescription(pc)});
  await done;
  setInterval(sample, SAMPLE_MS);
  return far.call || "";
}

// The far end's own ICE restart: what an app does with restartIce().
async function restart() {
  const pc = far.pc;
  pc.restartIce();
  const done = answered();
  send({type: "offer", sdp: await localDescription(pc)});
  await done;
  far.restarts += 1;
  return far.restarts;
}

function hangup() {
  send({type: "bye", reason: "the browser hung up"});
  far.pc.close();
  return true;
}

async function sample() {
  const pc = far.pc;
  if (!pc || pc.signalingState === "closed") return;
  const stats = await pc.getStats();
  const now = performance.now();
  const view = far.view;
  let packetsIn = 0, packetsOut = 0, pair = null, ufrag = null, dtls = null;
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      packetsIn += report.packetsReceived || 0;
    } else if (report.type === "outbound-rtp" && report.kind === "audio") {
      packetsOut += report.packetsSent || 0;
    } else if (report.type === "transport") {
      dtls = report.dtlsState || dtls;
      if (report.selectedCandidatePairId) pair = report.selectedCandidatePairId;
      ufrag = report.iceLocalUsernameFragment || ufrag;
    } else if (report.type === "candidate-pair" && report.selected) {
      pair = pair || report.id;  // Firefox marks the pair, no transport field
    }
  }
  if (pair) {
    const p = stats.get(pair);
    const local = p && stats.get(p.localCandidateId);
    const remote = p && stats.get(p.remoteCandidateId);
    const at = (c) => `${c.address || c.ip}:${c.port}`;
    const text = local && remote ? `${at(local)} -> ${at(remote)}` : pair;
    ufrag = ufrag || (local && local.usernameFragment) || null;
    if (view.pairs.length === 0 || view.pairs[view.pairs.length - 1] !== text) {
      if (view.pairs.length > 0) view.pairChanges += 1;
      view.pairs.push(text);
    }
  }
  if (!ufrag) ufrag = pc.localDescription ? ufragOf(pc.localDescription.sdp) : null;
  if (ufrag && view.ufrags[view.ufrags.length - 1] !== ufrag) view.ufrags.push(ufrag);
  if (packetsIn > view.packetsIn) {
    if (view.lastInAt !== null) {
      view.maxGapMs = Math.max(view.maxGapMs, now - view.lastInAt);
    }
    view.lastInAt = now;
  }
  view.packetsIn = packetsIn;
  view.packetsOut = packetsOut;
  view.dtls = dtls || view.dtls;
  view.connection = pc.connectionState;
  view.ice = pc.iceConnectionState;
}

async function farView() {
  await sample();
  const view = far.view;
  const now = performance.now();
  return {
    selected_pair_changes: view.pairChanges,
    selected_pairs: view.pairs.slice(-10),
    local_ufrags: view.ufrags,
    dtls_state: view.dtls,
    connection_state: view.connection || null,
    ice_state: view.ice || null,
    packets_received: view.packetsIn,
    packets_sent: view.packetsOut,
    max_gap_ms: view.lastInAt === null ? null : Math.round(view.maxGapMs),
    inbound_recent: view.lastInAt !== null && now - view.lastInAt < 1500,
    restarts: far.restarts,
    reoffers_answered: far.answered,
    errors: far.errors.slice(-5),
    user_agent: navigator.userAgent,
  };
}
</script>
""".replace("__SAMPLE_MS__", str(SAMPLE_MS))
