"""``net.path_change``: the side sends from another local address while the old
one still receives — a route change (Wi-Fi to wired, a multi-homed host)."""

from __future__ import annotations

from agent.net.faults.address_change import MoveParams
from agent.net.faults.base import RouteFault, register
from agent.net.routes import PathChange as PathChangeRoute


@register
class PathChange(RouteFault[MoveParams]):
    name = "net.path_change"
    Params = MoveParams
    default_cause = "path_change"
    summary = "the side sends from another local address; the old one stays alive"

    def route(self, params: MoveParams) -> PathChangeRoute:
        return PathChangeRoute(str(params.address))
