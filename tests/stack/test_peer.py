"""Real peers over real loopback UDP: negotiation, connection, media, hangup."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from agent.errors import SignalingError
from agent.stack.peer import PeerState, parse_sdp
from tests.support.peers import connect, make_peer


async def test_call_connects_on_chosen_addresses_and_media_flows_both_ways() -> None:
    caller, rec_a = make_peer("127.0.0.1", 1)
    callee, rec_b = make_peer("127.0.0.2", 2)
    try:
        offer = await caller.create_offer()
        # Only the address we chose, no interface the machine happens to have.
        candidates = [
            line for line in offer.splitlines() if line.startswith("a=candidate:")
        ]
        assert len(candidates) == 1 and " 127.0.0.1 " in candidates[0]
        answer = await callee.accept_offer(offer)
        assert "a=setup:active" in answer and " 127.0.0.2 " in answer
        await caller.accept_answer(answer)
        await asyncio.gather(caller.wait_connected(10), callee.wait_connected(10))

        await asyncio.wait_for(rec_a.got_rtp.wait(), 5)
        await asyncio.wait_for(rec_b.got_rtp.wait(), 5)
        # Each side receives the other's SSRC, with consecutive sequence numbers.
        assert {s for s, *_ in rec_a.rtp} == {callee.ssrc}
        assert {s for s, *_ in rec_b.rtp} == {caller.ssrc}
        seqs = [seq for _, seq, _, _ in rec_b.rtp[:20]]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        assert rec_a.pairs[0].local == caller.selected_pair.local  # type: ignore[union-attr]
        assert rec_a.gathering == ["gathering", "completed"]
        assert rec_a.wire["in"] > 0 and rec_a.wire["out"] > 0
    finally:
        await caller.close()
        await callee.close()
    assert rec_a.states[-1] == "closed"


async def test_hangup_is_seen_by_the_far_end_as_closed() -> None:
    caller, _ = make_peer("127.0.0.1", 3)
    callee, rec_b = make_peer("127.0.0.2", 4)
    try:
        await connect(caller, callee)
        await caller.close()
        # DTLS close_notify reaches the callee, which closes too.
        await asyncio.wait_for(callee.ended.wait(), 5)
        assert callee.state is PeerState.CLOSED
        assert rec_b.states[-2:] == ["connected", "closed"]
    finally:
        await caller.close()
        await callee.close()


async def test_decoding_option_decodes_real_opus() -> None:
    caller, _ = make_peer("127.0.0.1", 5)
    callee, rec_b = make_peer("127.0.0.2", 6, decode=True)
    try:
        await connect(caller, callee)
        await asyncio.wait_for(rec_b.got_rtp.wait(), 5)
        assert callee.receiver is not None
        assert callee.receiver.frames_decoded > 0
        assert callee.receiver.decode_errors == 0
    finally:
        await caller.close()
        await callee.close()


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "remote offer is empty"),
        ("hello world", "remote offer is not SDP"),
        (
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n",
            "has no audio m-section",
        ),
    ],
)
async def test_garbage_offers_are_rejected_with_one_clear_sentence(
    sdp: str, message: str
) -> None:
    callee, _ = make_peer("127.0.0.2", 7)
    try:
        with pytest.raises(SignalingError, match=message) as info:
            await callee.accept_offer(sdp)
        assert "\n" not in str(info.value)
    finally:
        await callee.close()


async def test_offer_without_fingerprint_is_rejected() -> None:
    caller, _ = make_peer("127.0.0.1", 8)
    callee, _ = make_peer("127.0.0.2", 9)
    try:
        offer = await caller.create_offer()
        stripped = "".join(
            line + "\r\n"
            for line in offer.splitlines()
            if not line.startswith("a=fingerprint")
        )
        with pytest.raises(SignalingError, match="no DTLS fingerprint"):
            await callee.accept_offer(stripped)
    finally:
        await caller.close()
        await callee.close()


def test_parse_sdp_keeps_type() -> None:
    assert (
        parse_sdp("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "answer").type
        == "answer"
    )
