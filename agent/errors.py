"""The exception tree of callagent, and whose fault each one is.

::

    AgentError                 root: the CLI prints str(exc) as one line, exit != 0
    ├── ScenarioError          bad input: a scenario file (names file, line, field)
    ├── SignalingError         bad input from a remote: garbage SDP, bad HTTP answer
    ├── CallError              the call itself failed: ICE, DTLS or media
    └── NetworkLabError        the network lab cannot be built (missing privilege/tool)

Foreign exceptions (aiortc, aioice, OpenSSL, pydantic, yaml) are translated into
these at one boundary each, with ``raise ... from exc`` so the cause is kept for
``--debug``.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error callagent reports to a user."""

    exit_code = 1


class ScenarioError(AgentError):
    """A scenario file is invalid. The message names file, line and field."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if path is not None:
            where = path if line is None else f"{path}:{line}"
        parts = [p for p in (where, field) if p]
        super().__init__(": ".join([*parts, message]))


class SignalingError(AgentError):
    """The remote sent something we cannot use (SDP, HTTP status, JSON)."""

    exit_code = 2


class CallError(AgentError):
    """ICE, DTLS or media failed on a call."""


class NetworkLabError(AgentError):
    """The network lab cannot be built here; the message says what is missing."""
