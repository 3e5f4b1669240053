"""The ``callagent`` command (see :mod:`agent.cli.main`).

:func:`launch` is the console entry point. It takes over SIGINT/SIGTERM
*before* importing the command, whose imports (aiortc, cryptography) take
about a second: a Ctrl-C then would otherwise be a ``KeyboardInterrupt``
traceback instead of exit 130 and a report marked incomplete.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def launch(argv: Sequence[str] | None = None) -> int:
    from agent.cli.interrupts import INTERRUPTS

    INTERRUPTS.install()
    try:
        from agent.cli.main import main
    except KeyboardInterrupt:  # a second signal while importing
        print("callagent: interrupted", file=sys.stderr)
        return 130
    return main(argv)
