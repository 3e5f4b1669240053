"""The call a target's scenario runs on: one factory per kind of far end."""

from __future__ import annotations

from collections.abc import Callable

from agent.call.calls import Call, CallConfig, LoopbackCall
from agent.call.remote import WhipClientCall
from agent.targets.spec import Target, TargetKind

__all__ = ["CallFactory", "call_factory"]

CallFactory = Callable[[CallConfig], Call]


def call_factory(target: Target, *, token: str | None = None) -> CallFactory:
    """Builds each call of a scenario whose far end is ``target``."""
    if target.kind is TargetKind.AGENT:
        return LoopbackCall
    if target.kind is TargetKind.WHIP:
        url = target.url
        assert url is not None
        WhipClientCall.check_url(url)

        def whip_call(config: CallConfig) -> Call:
            return WhipClientCall(config, url, token=token)

        return whip_call
    if target.kind is TargetKind.GSTREAMER:
        from agent.targets.gstreamer import GStreamerCall

        def gstreamer_call(config: CallConfig) -> Call:
            return GStreamerCall(config, target)

        return gstreamer_call
    if target.kind is TargetKind.JANUS:
        from agent.targets.janus.call import JanusCall

        def janus_call(config: CallConfig) -> Call:
            return JanusCall(config, target)

        return janus_call
    # Imported here: the browser drivers are only loaded when a browser is used.
    from agent.targets.browser.call import BrowserCall

    def browser_call(config: CallConfig) -> Call:
        return BrowserCall(config, target)

    return browser_call
