"""DTLS rehandshakes for real: new associations on a live call, keys swapped,
media kept; certificate rotation and expiry, SBC failover, far-end profiles, and
a rehandshake that fails but is still reported."""

from __future__ import annotations

import asyncio

from agent.stack.dtls import make_certificate, sha256_fingerprint
from agent.stack.ice import WireDirection
from agent.stack.peer import CertExpiryPolicy, FarEndProfile, Peer, PeerState
from tests.support.peers import (
    Recorder,
    connect,
    connected_pair,
    make_peer,
    packets_after,
)


def completed(recorder: Recorder) -> list[tuple[str, str, str]]:
    return [r for r in recorder.rehandshakes if r[0] != "started"]


async def settled(recorder: Recorder, timeout: float = 10) -> None:
    await recorder.until(lambda: bool(completed(recorder)), timeout)


async def media_flows_both_ways(rec_a: Recorder, rec_b: Recorder) -> None:
    await packets_after(rec_a, 25)
    await packets_after(rec_b, 25)


def remote_fingerprint(peer: Peer) -> str:
    return {f.algorithm: f.value for f in peer.dtls.remote_fingerprints}["sha-256"]


async def test_new_association_without_signalling_swaps_keys_and_keeps_media() -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        # The answerer took a=setup:active, so the caller is the DTLS server; a
        # rehandshake without a new certificate is a fresh ClientHello from it.
        assert caller.dtls.role == "server"
        await packets_after(rec_b, 10)
        assert await asyncio.wait_for(
            caller.rehandshake_dtls(rotate_certificate=False), 15
        )
        await settled(rec_b)
        assert rec_a.rehandshakes == [
            ("started", "local", "step"),
            ("completed", "", ""),
        ]
        assert rec_b.rehandshakes == [
            ("started", "remote", "client_hello"),
            ("completed", "", ""),
        ]
        # A second association on each side, now the current one, roles swapped.
        assert len(caller.dtls.associations) == len(callee.dtls.associations) == 2
        assert caller.dtls.current is caller.dtls.associations[1]
        assert (caller.dtls.role, callee.dtls.role) == ("client", "server")
        # The DTLS transport never left "connected": no state churn, no drop.
        assert rec_a.dtls_states == rec_b.dtls_states == ["connecting", "connected"]
        await media_flows_both_ways(rec_a, rec_b)
        assert caller.state is callee.state is PeerState.CONNECTED
    finally:
        await caller.close()
        await callee.close()


async def test_certificate_rotation_from_either_side_is_signalled_and_handshaken() -> (
    None
):
    for side in ("caller", "callee"):
        caller, rec_a, callee, rec_b = await connected_pair()
        try:
            rotating, other = (caller, callee) if side == "caller" else (callee, caller)
            rec_r, rec_o = (rec_a, rec_b) if side == "caller" else (rec_b, rec_a)
            old = sha256_fingerprint(rotating.certificate)
            assert await asyncio.wait_for(rotating.rehandshake_dtls(), 15)
            await settled(rec_o)
            new = sha256_fingerprint(rotating.certificate)
            assert new != old
            # The far end learnt the new fingerprint from the re-offer and
            # validated the new association against it.
            assert remote_fingerprint(other) == new
            assert rec_r.rehandshakes[0] == ("started", "local", "step")
            assert rec_o.rehandshakes[0] == ("started", "remote", "fingerprint_change")
            assert completed(rec_r) == completed(rec_o) == [("completed", "", "")]
            # Roles are kept by a signalled rehandshake (a=setup unchanged).
            assert (caller.dtls.role, callee.dtls.role) == ("server", "client")
            # The report's certificate list shows both windows.
            assert [c["reason"] for c in rotating.certificates] == ["initial", "step"]
            # No ICE restart was asked for, so none happened.
            assert caller.ice_generation == callee.ice_generation == 0
            await media_flows_both_ways(rec_a, rec_b)
        finally:
            await caller.close()
            await callee.close()


async def test_expiring_certificate_is_rotated_with_cause_cert_expiry() -> None:
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        # Swap in a certificate that expires in a second, as the scenario's
        # certificate_lifetime does at call setup.
        short = make_certificate(1.0)
        caller.use_certificate(short, "test")
        await settled(rec_a, timeout=8)
        assert rec_a.rehandshakes[0] == ("started", "local", "cert_expiry")
        assert completed(rec_a) == [("completed", "", "")]
        assert caller.certificates[1]["expired_at_ms"] > 0
        assert sha256_fingerprint(caller.certificate) != sha256_fingerprint(short)
        await media_flows_both_ways(rec_a, rec_b)
    finally:
        await caller.close()
        await callee.close()


async def test_keep_policy_reports_the_expiry_and_does_not_rehandshake() -> None:
    caller, rec_a, callee, rec_b = await connected_pair(
        cert_expiry=CertExpiryPolicy.KEEP
    )
    try:
        caller.use_certificate(make_certificate(0.5), "test")
        await rec_a.until(
            lambda: any(c.get("expired") for c in rec_a.certificates), timeout=5
        )
        await packets_after(rec_b, 25)
        assert rec_a.rehandshakes == []
    finally:
        await caller.close()
        await callee.close()


async def test_sbc_failover_drops_dtls_state_and_recovers_with_a_new_handshake() -> (
    None
):
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        await packets_after(rec_a, 10)
        assert await asyncio.wait_for(callee.fail_over(ice_restart=True), 20)
        await settled(rec_a)
        await caller.restart_settled(10)
        await callee.restart_settled(10)
        # The caller kept its call: one ICE restart and one new association,
        # both started by the far end.
        assert caller.ice_generation == callee.ice_generation == 1
        assert rec_a.rehandshakes[0] == ("started", "remote", "fingerprint_change")
        assert completed(rec_a) == [("completed", "", "")]
        assert rec_b.rehandshakes[0] == ("started", "local", "failover")
        await media_flows_both_ways(rec_a, rec_b)
        assert caller.state is PeerState.CONNECTED
    finally:
        await caller.close()
        await callee.close()


async def test_far_end_profile_rehandshakes_after_every_ice_restart() -> None:
    caller, rec_a = make_peer("127.0.0.1", 21)
    callee, rec_b = make_peer(
        "127.0.0.2", 22, dtls_profile=FarEndProfile.ON_ICE_RESTART
    )
    caller.renegotiate, callee.renegotiate = callee.accept_offer, caller.accept_offer
    try:
        await connect(caller, callee)
        assert await asyncio.wait_for(caller.restart_ice(), 15)
        await settled(rec_a)
        await settled(rec_b)
        assert rec_b.rehandshakes[0] == ("started", "local", "ice_restart")
        assert rec_a.rehandshakes[0] == ("started", "remote", "client_hello")
        assert completed(rec_a) == completed(rec_b) == [("completed", "", "")]
        await media_flows_both_ways(rec_a, rec_b)
    finally:
        await caller.close()
        await callee.close()


async def test_a_rejected_rehandshake_is_reported_failed_and_the_call_survives() -> (
    None
):
    caller, rec_a, callee, rec_b = await connected_pair()
    try:
        # A new certificate the far end was never told about: its ClientHello
        # is answered, but the fingerprint check fails on both ends.
        caller.dtls.certificate = make_certificate()
        assert not await asyncio.wait_for(
            caller.rehandshake_dtls(rotate_certificate=False), 15
        )
        await settled(rec_b)
        assert rec_a.rehandshakes[-1][0] == "failed"
        assert rec_b.rehandshakes[0] == ("started", "remote", "client_hello")
        assert rec_b.rehandshakes[-1][0] == "failed"
        # The old association still holds: media flows, the call is up.
        await media_flows_both_ways(rec_a, rec_b)
        assert caller.state is callee.state is PeerState.CONNECTED
    finally:
        await caller.close()
        await callee.close()


class DtlsSizes:
    """Records the size of every DTLS datagram crossing a connection."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def admit(self, direction: WireDirection, data: bytes, addr: object) -> bool:
        if data and 20 <= data[0] < 64:
            self.sizes.append(len(data))
        return True


async def test_dtls_mtu_fragments_handshake_flights_to_fit() -> None:
    caller, rec_a, callee, rec_b = await connected_pair(dtls_mtu=300)
    try:
        probe = DtlsSizes()
        assert caller.current is not None
        caller.current.connection.filters.append(probe)
        assert await asyncio.wait_for(caller.rehandshake_dtls(), 15)
        # Both certificate flights crossed the caller's socket, in pieces.
        assert len(probe.sizes) >= 6 and max(probe.sizes) <= 300
        await media_flows_both_ways(rec_a, rec_b)
    finally:
        await caller.close()
        await callee.close()
