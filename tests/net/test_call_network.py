"""CallNetwork starting faults by registry lookup, without sockets.

Filter faults need no socket: the side's real :class:`SideNet` holds the
filter and the real observer holds the events, so these run in milliseconds.
Route and NAT faults move real sockets; ``test_faults_live.py`` covers them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.errors import CallError
from agent.net.faults.base import DirectedParams, FaultParams, TimedParams
from agent.net.faults.loss import LossParams
from agent.net.filters import Blackhole, Direction, Loss, Passthrough
from agent.net.network import CallNetwork
from agent.observe.events import to_json
from agent.observe.model import EventType, Initiator, Side
from agent.observe.observer import PeerObserver
from agent.stack.ice import SideNet


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


def network(seed: int = 7) -> tuple[CallNetwork, SideNet, PeerObserver, Clock]:
    clock = Clock()
    side_net = SideNet()
    observer = PeerObserver(Side.CALLER, clock)
    net = CallNetwork(None, {Side.CALLER: side_net}, {Side.CALLER: observer}, seed,
                      Side.CALLER, clock)  # fmt: skip
    return net, side_net, observer, clock


def faults(observer: PeerObserver) -> list[tuple[EventType, dict[str, Any]]]:
    kinds = (EventType.FAULT_START, EventType.FAULT_END)
    return [(e.type, to_json(e.detail)) for e in observer.events if e.type in kinds]


async def test_a_timed_filter_fault_is_installed_then_removed_with_its_events() -> None:
    net, side_net, observer, clock = network()
    params = DirectedParams(duration=0.05, direction=Direction.INBOUND)
    net.apply(Side.CALLER, "net.blackhole", params)
    (hole,) = side_net.filters
    assert isinstance(hole, Blackhole) and hole.direction is Direction.INBOUND
    (start_event,) = [e for e in observer.events if e.type is EventType.FAULT_START]
    assert start_event.initiator is Initiator.NETWORK
    assert start_event.cause == "blackhole"
    start = to_json(start_event.detail)
    assert start["fault"] == "blackhole"
    assert start["direction"] == "inbound"
    assert start["duration_ms"] == 50.0
    clock.now_ms = 50.0
    async with asyncio.timeout(2):
        # The fault's own timer removes it; await that state, bounded.
        while side_net.filters:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    (_, end) = faults(observer)[1]
    assert end["fault_id"] == start["fault_id"] and end["dropped"] == 0
    assert end["duration_ms"] == 50.0


async def test_an_untimed_fault_lasts_until_the_call_closes() -> None:
    net, side_net, observer, _ = network()
    net.apply(Side.CALLER, "net.noop", TimedParams(cause="control"))
    assert isinstance(side_net.filters[0], Passthrough)
    net.close()
    assert side_net.filters == []
    (_, start), (_, end) = faults(observer)
    assert end["ended_by"] == "call ended" and start["fault"] == "noop"
    assert [e.cause for e in observer.events] == ["control", "control"]


async def test_fault_seeds_come_from_the_call_seed_and_are_recorded() -> None:
    def loss_seed(call_seed: int, params: LossParams) -> tuple[int, Loss]:
        net, side_net, observer, _ = network(call_seed)
        net.apply(Side.CALLER, "net.loss", params)
        (loss,) = side_net.filters
        assert isinstance(loss, Loss)
        return faults(observer)[0][1]["seed"], loss

    first, _ = loss_seed(7, LossParams(rate=0.5))
    assert loss_seed(7, LossParams(rate=0.5))[0] == first  # replayable
    assert loss_seed(8, LossParams(rate=0.5))[0] != first
    seed, loss = loss_seed(7, LossParams(rate=0.5, seed=42))
    assert seed == 42
    assert loss.rate == 0.5


async def test_faults_are_numbered_in_order() -> None:
    net, _, observer, _ = network()
    net.apply(Side.CALLER, "net.noop", TimedParams())
    net.apply(Side.CALLER, "net.blackhole", DirectedParams())
    assert [d["fault_id"] for _, d in faults(observer)] == [1, 2]


@pytest.mark.parametrize(
    ("side", "name", "params", "message"),
    [
        (Side.CALLEE, "net.blackhole", DirectedParams(), "does not play the callee"),
        (None, "net.noop", TimedParams(), "does not play the None"),
        (None, "nat.flush", FaultParams(), "this call has no NAT"),
        (Side.CALLER, "net.teleport", FaultParams(), "unknown network fault"),
    ],
)
def test_a_fault_the_call_cannot_take_is_a_call_error(
    side: Side | None, name: str, params: FaultParams, message: str
) -> None:
    net, side_net, observer, _ = network()
    with pytest.raises(CallError, match=message):
        net.apply(side, name, params)
    assert side_net.filters == [] and observer.events == []


def test_params_of_another_fault_are_a_programming_error() -> None:
    net, _, _, _ = network()
    with pytest.raises(TypeError, match=r"net\.loss takes LossParams"):
        net.apply(Side.CALLER, "net.loss", DirectedParams())
