"""Durations as scenario files write them: ``10s``, ``500ms``, ``2m``, ``1.5s``, ``1h``.

A duration is stored as a ``float`` of seconds. A bare number (YAML ``10`` or
``1.5``) is seconds too, which is also what :func:`format_duration`'s inverse,
``model_dump()``, writes back, so a dumped scenario loads to the same values.

Negative, non-finite and boolean values are refused: YAML turns ``yes``/``on``
into ``true``, and ``true`` silently becoming one second is the kind of
surprise a test scenario must not have. So is anything longer than
:data:`MAX_DURATION_S` (7 days): every duration ends up in a timer, a
``timedelta`` or a certificate's validity, and ``1.0e+300`` seconds would pass
a check only to overflow one of those mid-run.

This module sits below both :mod:`agent.scenario.model` and
:mod:`agent.scenario.steps` so step parameter models can use :data:`Duration`
without an import cycle.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_DURATION_S",
    "Duration",
    "describe_value",
    "format_duration",
    "parse_duration",
]

#: The longest duration any field takes (7 days): longer than any call or
#: timer a scenario can mean, far below what datetime/timedelta can hold.
MAX_DURATION_S = 7 * 86400.0
#: Values echoed in messages are cut to this many characters: a message is
#: one readable line even when the file holds a 5,000-character scalar.
_MAX_SHOWN = 40

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(
    r"(?P<sign>[-+]?)\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h)?"
)
_HINT = "use e.g. 500ms, 5s, 2m"


def describe_value(value: Any) -> str:
    """A value as the user wrote it in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN:
            return f"{value[:_MAX_SHOWN]!r}... ({len(value)} characters)"
        return repr(value)
    if isinstance(value, int | float):
        return _plain_number(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _plain_number(number: float) -> str:
    """``10`` not ``10.0``, ``1.5`` not ``1.500000``; micro-unit precision is plenty."""
    if isinstance(number, int):
        if abs(number) < 10**_MAX_SHOWN:
            return str(number)
        # str() of a huge int is slow, then refused (Python's int-str limit).
        digits = int(number.bit_length() * math.log10(2)) + 1
        return f"a number of about {digits} digits"
    if not math.isfinite(number) or abs(number) >= 1e15:
        return f"{number:g}"
    return f"{number:.3f}".rstrip("0").rstrip(".") or "0"


def _invalid(value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "duration",
        "invalid duration {value} ({hint})",
        {"value": describe_value(value), "hint": _HINT},
    )


def _negative(value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "duration_negative",
        "negative duration {value} is not allowed",
        {"value": describe_value(value)},
    )


def _too_long(value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "duration_too_long",
        "{value} is too long: a duration is at most {limit} (7 days)",
        {"value": describe_value(value), "limit": format_duration(MAX_DURATION_S)},
    )


def _not_finite(value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "duration",
        "invalid duration {value}: a duration is a time from 0s to {limit} (7 days)",
        {"value": describe_value(value), "limit": format_duration(MAX_DURATION_S)},
    )


def parse_duration(value: Any) -> float:
    """Seconds from ``10s``/``500ms``/``2m``/``1h``/a bare number of seconds,
    finite and at most :data:`MAX_DURATION_S`.

    Raises :class:`pydantic_core.PydanticCustomError` (so it can run inside
    pydantic validation and keep the field's location) on anything else.
    """
    # bool is an int subclass; refuse it before the number branch sees it.
    if isinstance(value, bool):
        raise _invalid(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise _invalid(value)
        unit = match["unit"] or "s"
        seconds = float(match["number"]) * _UNIT_SECONDS[unit]
        if match["sign"] == "-" and seconds != 0:
            raise _negative(value)
    else:
        raise _invalid(value)
    if not math.isfinite(seconds):
        raise _too_long(value) if seconds > 0 else _not_finite(value)
    if seconds < 0:
        raise _negative(value)
    if seconds > MAX_DURATION_S:
        raise _too_long(value)
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest file spelling of ``seconds``: ``500ms``, ``10s``, ``2m``, ``1h``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{_plain_number(seconds * 1000)}ms"
    if seconds % 3600 == 0:
        return f"{_plain_number(seconds / 3600)}h"
    if seconds % 60 == 0:
        return f"{_plain_number(seconds / 60)}m"
    return f"{_plain_number(seconds)}s"


#: A duration in seconds from 0 to 7 days, written in files as ``10s``/``500ms``/...
Duration = Annotated[float, BeforeValidator(parse_duration)]
