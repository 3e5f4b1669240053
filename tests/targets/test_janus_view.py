"""Folding Janus admin ``handle_info`` samples into the far end's view (pure;
the shape is Janus 1.1.2's, as tests/targets/test_janus.py sees it live)."""

from __future__ import annotations

from typing import Any

from agent.targets.janus.view import SAMPLE_S, HandleSample, far_end_view


def info(received: int, *, pair: str = "A <-> B", ufrag: str = "u1") -> dict[str, Any]:
    return {
        "flags": {"ready": True},
        "sdps": {"local": f"v=0\r\na=ice-ufrag:{ufrag}\r\n"},
        "webrtc": {
            "ice": {"state": "ready", "selected-pair": pair},
            "dtls": {"dtls-state": "connected"},
            "media": {
                "0": {
                    "type": "audio",
                    "stats": {"in": {"packets": received}, "out": {"packets": 7}},
                }
            },
        },
    }


def test_pairs_ufrags_packets_and_the_longest_silence() -> None:
    samples = [
        HandleSample(0.0, info(10)),
        HandleSample(0.25, info(22)),
        # nothing arrives for a second: a rebind
        HandleSample(0.5, info(22)),
        HandleSample(1.0, info(22)),
        HandleSample(1.25, info(22, pair="A <-> C", ufrag="u2")),
        HandleSample(1.5, info(40, pair="A <-> C", ufrag="u2")),
        HandleSample(1.75, info(52, pair="A <-> C", ufrag="u2")),
    ]
    view = far_end_view(samples, reoffers_answered=1, errors=[])
    assert view is not None
    assert view.selected_pairs == ["A <-> B", "A <-> C"]
    assert view.selected_pair_changes == 1
    assert view.local_ufrags == ["u1", "u2"]
    assert view.packets_received == 52 and view.packets_sent == 7
    # grew at 0.25, next at 1.5: at least 1.25 - one period of silence
    assert view.max_gap_ms == round((1.25 - SAMPLE_S) * 1000, 1)
    assert view.inbound_recent and view.reoffers_answered == 1
    assert view.ice_state == "ready" and view.dtls_state == "connected"
    assert view.connection_state == "connected"


def test_audio_that_stopped_is_not_recent() -> None:
    samples = [HandleSample(t / 4, info(5 if t < 2 else 9)) for t in range(12)]
    view = far_end_view(samples, reoffers_answered=0, errors=["x"])
    assert view is not None and not view.inbound_recent
    assert view.errors == ["x"]
    assert far_end_view([], reoffers_answered=0, errors=[]) is None
