"""The GStreamer far end: webrtcbin answering the agent, in its own process.

Run by the *system* Python (``/usr/bin/python3``, which has PyGObject and
Debian's GStreamer 1.22), never imported by the agent: the agent's
virtualenv has no ``gi``. :mod:`agent.targets.gstreamer` starts it and talks
to it in JSON lines over stdin/stdout:

* in ``{"op": "offer", "sdp": …}`` → out ``{"op": "answer", "sdp": …}``, the
  answer sent once ICE gathering is complete (webrtcbin's candidates are in
  it: no trickle);
* in ``{"op": "view"}`` → out ``{"op": "view", …}``: webrtcbin's own
  ``get-stats`` and states, the far end's view for the report;
* in ``{"op": "hangup"}`` (or stdin closed) → the pipeline stops, the
  process exits 0;
* out ``{"op": "error", "message": …}`` on anything that goes wrong.

The pipeline is a live 48 kHz sine through Opus at 20 ms into webrtcbin
(payload type taken from the offer), and whatever arrives into a fakesink.
webrtcbin in GStreamer 1.22 never restarts ICE (it keeps its ufrag on a
restart offer) and uses an RSA certificate: both are what the agent must
meet in the field, so they are left as they are.
"""

# mypy: ignore-errors

from __future__ import annotations

import json
import re
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402


def say(**message) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def opus_payload_type(sdp: str) -> int:
    found = re.search(r"^a=rtpmap:(\d+) opus/48000", sdp, re.MULTILINE | re.IGNORECASE)
    return int(found.group(1)) if found else 111


class FarEnd:
    def __init__(self) -> None:
        self.loop = GLib.MainLoop()
        self.pipeline: Gst.Pipeline | None = None
        self.webrtc = None
        self.states: list[str] = []
        self.local_ufrags: list[str] = []
        self.received = 0
        self.reoffers = 0
        self.last_arrival: float | None = None
        self.max_gap_ms = 0.0

    # -- pipeline --------------------------------------------------------
    def build(self, payload_type: int) -> None:
        self.pipeline = Gst.parse_launch(
            "webrtcbin name=w bundle-policy=max-bundle "
            "audiotestsrc is-live=true wave=sine freq=440 "
            "! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 "
            "! opusenc frame-size=20 ! rtpopuspay pt="
            f"{payload_type} ! application/x-rtp,media=audio,encoding-name=OPUS,"
            f"clock-rate=48000,payload={payload_type} ! w."
        )
        self.webrtc = self.pipeline.get_by_name("w")
        self.webrtc.connect("pad-added", self.on_pad)
        self.webrtc.connect("notify::ice-connection-state", self.on_state)
        self.webrtc.connect("notify::connection-state", self.on_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        self.pipeline.set_state(Gst.State.PLAYING)

    def on_pad(self, _element, pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        pad.add_probe(Gst.PadProbeType.BUFFER, self.on_buffer)

    def on_buffer(self, _pad, _info):
        now = time.monotonic()
        if self.last_arrival is not None:
            self.max_gap_ms = max(self.max_gap_ms, (now - self.last_arrival) * 1000)
        self.last_arrival = now
        self.received += 1
        return Gst.PadProbeReturn.OK

    def on_state(self, webrtc, _spec) -> None:
        ice = webrtc.get_property("ice-connection-state").value_nick
        connection = webrtc.get_property("connection-state").value_nick
        self.states.append(f"{ice}/{connection}")
        say(op="state", ice=ice, connection=connection)

    def on_error(self, _bus, message) -> None:
        error, _debug = message.parse_error()
        say(op="error", message=f"gstreamer: {error.message}")

    # -- signalling ------------------------------------------------------
    def offer(self, sdp: str) -> None:
        if self.pipeline is None:
            self.build(opus_payload_type(sdp))
        else:
            self.reoffers += 1
        ok, message = GstSdp.SDPMessage.new_from_text(sdp)
        if ok != GstSdp.SDPResult.OK:
            say(op="error", message="the offer is not SDP webrtcbin can parse")
            return
        offer = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.OFFER, message
        )
        promise = Gst.Promise.new_with_change_func(self.on_remote_set, None)
        self.webrtc.emit("set-remote-description", offer, promise)

    def on_remote_set(self, promise, _data) -> None:
        promise.wait()
        promise = Gst.Promise.new_with_change_func(self.on_answer, None)
        self.webrtc.emit("create-answer", None, promise)

    def on_answer(self, promise, _data) -> None:
        promise.wait()
        reply = promise.get_reply()
        answer = reply.get_value("answer") if reply is not None else None
        if answer is None:
            error = reply.get_value("error") if reply is not None else None
            say(op="error", message=f"webrtcbin made no answer: {error}")
            return
        self.webrtc.emit("set-local-description", answer, Gst.Promise.new())
        GLib.timeout_add(20, self.answer_when_gathered)

    def answer_when_gathered(self) -> bool:
        gathering = self.webrtc.get_property("ice-gathering-state")
        if gathering != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return True  # keep polling: no trickle, the answer carries all
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
        if found and found.group(1) not in self.local_ufrags:
            self.local_ufrags.append(found.group(1))
        say(op="answer", sdp=sdp)
        return False

    def view(self) -> None:
        promise = Gst.Promise.new_with_change_func(self.on_stats, None)
        self.webrtc.emit("get-stats", None, promise)

    def on_stats(self, promise, _data) -> None:
        promise.wait()
        reply = promise.get_reply()
        sent = received = 0
        pairs: list[str] = []
        for index in range(reply.n_fields() if reply is not None else 0):
            stats = reply.get_value(reply.nth_field_name(index))
            if not isinstance(stats, Gst.Structure):
                continue
            kind = stats.get_value("type")
            nick = kind.value_nick if hasattr(kind, "value_nick") else str(kind)
            if nick == "outbound-rtp":
                sent = max(sent, int(stats.get_value("packets-sent") or 0))
            elif nick == "inbound-rtp":
                received = max(received, int(stats.get_value("packets-received") or 0))
            elif nick == "candidate-pair" and stats.get_value("selected"):
                pairs.append(stats.get_name())
        ice = self.webrtc.get_property("ice-connection-state").value_nick
        connection = self.webrtc.get_property("connection-state").value_nick
        recent = (
            self.last_arrival is not None and time.monotonic() - self.last_arrival < 1
        )
        say(
            op="view",
            version=Gst.version_string(),
            ice_state=ice,
            connection_state=connection,
            packets_sent=sent,
            packets_received=max(received, self.received),
            max_gap_ms=self.max_gap_ms if self.received > 1 else None,
            inbound_recent=recent,
            local_ufrags=self.local_ufrags,
            reoffers_answered=self.reoffers,
            selected_pairs=pairs,
        )

    # -- stdin -----------------------------------------------------------
    def on_stdin(self, channel, condition) -> bool:
        if condition & (GLib.IO_HUP | GLib.IO_ERR):
            self.stop()
            return False
        line = channel.readline()
        if not line:
            self.stop()
            return False
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            say(op="error", message="a request that is not JSON with an op")
            return True
        if op == "offer":
            self.offer(str(request["sdp"]))
        elif op == "view":
            self.view()
        elif op == "hangup":
            self.stop()
            return False
        else:
            say(op="error", message=f"unknown op {op!r}")
        return True

    def stop(self) -> None:
        if self.pipeline is not None:
            self.pipeline.set_state(Gst.State.NULL)
        self.loop.quit()


def main() -> int:
    Gst.init(None)
    if Gst.ElementFactory.find("webrtcbin") is None:
        say(op="error", message="GStreamer has no webrtcbin (gstreamer1.0-plugins-bad)")
        return 1
    far_end = FarEnd()
    channel = GLib.IOChannel.unix_new(sys.stdin.fileno())
    GLib.io_add_watch(
        channel,
        GLib.PRIORITY_DEFAULT,
        GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
        far_end.on_stdin,
    )
    say(op="ready", version=Gst.version_string())
    far_end.loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
