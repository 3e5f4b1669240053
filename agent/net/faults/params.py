"""Parameter types shared by the faults: each says what a value *means*.

A fault declares its parameters once, as a pydantic model built from these
types, and that model is the whole contract: the scenario step, the
``callagent steps`` catalogue and the README table are derived from it.

The values are strict (a rate is a number, ``"0.5"`` is refused; no bools,
no NaN or infinity). How a scenario *file* writes a value (``500ms``, a
loopback-only address) is the scenario layer's business, which sits above
this one: it passes its converters in the validation context under
:data:`FILE_SYNTAX`, keyed by :class:`Written`, and they run before the
strict check. Without a context (faults built in code) values are plain
seconds and addresses.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    Strict,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationInfo,
)

__all__ = [
    "CAUSE_PATTERN",
    "FILE_SYNTAX",
    "Address",
    "Cause",
    "DatagramBytes",
    "NonNegativeSeconds",
    "Rate",
    "Seconds",
    "Seed",
    "Written",
]

#: Validation-context key under which the scenario layer passes its converters.
FILE_SYNTAX = "file_syntax"


class Written(enum.StrEnum):
    """Values a file writes in its own syntax, not as the plain number/text."""

    SECONDS = "seconds"
    SECONDS_OR_ZERO = "seconds_or_zero"
    ADDRESS = "address"


def _as_written(kind: Written) -> BeforeValidator:
    def convert(value: Any, info: ValidationInfo) -> Any:
        context = info.context
        hooks = context.get(FILE_SYNTAX) if isinstance(context, Mapping) else None
        hook: Callable[[Any], Any] | None = (
            hooks.get(kind) if isinstance(hooks, Mapping) else None
        )
        return value if hook is None else hook(value)

    return BeforeValidator(convert)


#: How a cause is spelt, as events and reports carry it (``nat_rebind``, ``mtu``).
CAUSE_PATTERN = r"[a-z][a-z0-9_]*"
#: A cause name; the one declaration that steps, faults and expectations use.
Cause = Annotated[StrictStr, StringConstraints(pattern=f"^{CAUSE_PATTERN}$")]
#: A time span in seconds, longer than zero and finite.
Seconds = Annotated[
    float,
    Strict(),
    Field(gt=0, allow_inf_nan=False),
    _as_written(Written.SECONDS),
]
#: A time span in seconds that may be zero.
NonNegativeSeconds = Annotated[
    float,
    Strict(),
    Field(ge=0, allow_inf_nan=False),
    _as_written(Written.SECONDS_OR_ZERO),
]
#: A probability: more than 0, at most 1.
Rate = Annotated[StrictFloat, Field(gt=0, le=1, allow_inf_nan=False)]
#: A seed for ``random.Random``; None means "derived from the call's seed".
Seed = Annotated[StrictInt, Field(ge=0)]
#: A UDP payload size: the IPv4 minimum datagram (28 bytes of headers) to
#: the largest UDP payload.
DatagramBytes = Annotated[StrictInt, Field(ge=28, le=65507)]
#: A local IPv4 address a side's traffic moves to.
Address = Annotated[IPv4Address, _as_written(Written.ADDRESS)]
