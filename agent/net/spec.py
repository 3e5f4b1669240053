"""What a network fault is, as data: the scenario layer builds it, the call
layer applies it. No I/O here, so both sides of that contract can import it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FaultKind(enum.StrEnum):
    BLACKHOLE = "blackhole"
    LOSS = "loss"
    DELAY = "delay"
    JITTER = "jitter"
    MTU = "mtu"
    REBIND = "rebind"
    ADDRESS_CHANGE = "address_change"
    PATH_CHANGE = "path_change"
    NAT_REBIND = "nat_rebind"
    NAT_FLUSH = "nat_flush"

    @property
    def default_cause(self) -> str:
        """The field cause a fault of this kind stands for, unless told."""
        return _DEFAULT_CAUSES[self]

    @property
    def instant(self) -> bool:
        """Happens at once and stays (a move), rather than lasting a while."""
        return self in _INSTANT


_DEFAULT_CAUSES = {
    FaultKind.BLACKHOLE: "blackhole",
    FaultKind.LOSS: "packet_loss",
    FaultKind.DELAY: "delay",
    FaultKind.JITTER: "jitter",
    FaultKind.MTU: "mtu",
    # A new source port is exactly what a NAT rebinding looks like to the far end.
    FaultKind.REBIND: "nat_rebind",
    FaultKind.ADDRESS_CHANGE: "vpn_reconnect",
    FaultKind.PATH_CHANGE: "path_change",
    FaultKind.NAT_REBIND: "nat_rebind",
    FaultKind.NAT_FLUSH: "firewall_eviction",
}
_INSTANT = frozenset(
    {
        FaultKind.REBIND,
        FaultKind.ADDRESS_CHANGE,
        FaultKind.PATH_CHANGE,
        FaultKind.NAT_REBIND,
        FaultKind.NAT_FLUSH,
    }
)


@dataclass(frozen=True)
class FaultSpec:
    """One fault: its kind, the cause it stands for, and its parameters."""

    kind: FaultKind
    cause: str | None = None
    #: None: until the call ends (ignored for instant faults)
    duration_s: float | None = None
    #: ``both``, ``inbound`` or ``outbound``, seen from the faulted side
    direction: str = "both"
    loss_rate: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    max_bytes: int = 0
    #: the new local address (address_change, path_change)
    address: str | None = None
    #: None: derived from the call's seed (recorded in the report either way)
    seed: int | None = None

    @property
    def effective_cause(self) -> str:
        return self.cause or self.kind.default_cause
