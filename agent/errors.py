"""The exception tree of callagent, and whose fault each one is.

::

    AgentError                 root: the CLI prints each of lines(), exit != 0
    ├── ScenarioError          bad input: a scenario file (names file, line, field)
    │   └── ScenarioErrors     several files are bad: one ScenarioError each
    ├── UsageError             bad input on the command line (an unwritable --report)
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

    def lines(self) -> list[str]:
        """What the CLI prints: one line per problem (usually one)."""
        return [str(self)]


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


class ScenarioErrors(ScenarioError):
    """Several scenario files are invalid: every one is reported, not the first.

    A suite run with one broken file would otherwise take one fix-and-rerun
    per file to learn what is broken.
    """

    def __init__(self, errors: list[ScenarioError]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        super().__init__(f"{count} scenario file{'s' if count != 1 else ''} invalid")

    def lines(self) -> list[str]:
        return [line for error in self.errors for line in error.lines()]


class UsageError(AgentError):
    """A command-line value cannot be used (an output path that cannot be
    written, an empty path). The message names the option and the reason."""

    exit_code = 2


class SignalingError(AgentError):
    """The remote sent something we cannot use (SDP, HTTP status, JSON)."""

    exit_code = 2


class CallError(AgentError):
    """ICE, DTLS or media failed on a call."""


class NetworkLabError(AgentError):
    """The network lab cannot be built here; the message says what is missing."""
