"""Field types and located errors shared by the scenario models.

Every rule in :mod:`agent.scenario.model` reports a problem as a pydantic
error *at the location of the offending key*, so the loader can name its file
line. The helpers here build such errors; :class:`Section` is the base of
every settings mapping (frozen, unknown keys refused with the closest valid
name suggested); the ``Annotated`` types carry the field rules that several
models share.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.scenario.duration import (
    describe_value,
    format_duration,
    parse_duration,
)

__all__ = [
    "LOOPBACK",
    "MAX_CALLS",
    "MAX_CALL_DURATION_S",
    "MAX_COUNT",
    "MAX_MILLISECONDS",
    "MAX_SEED",
    "CallCount",
    "CallDuration",
    "Count",
    "Loc",
    "LoopbackAddress",
    "Milliseconds",
    "NonNegativeMilliseconds",
    "PositiveDuration",
    "Probability",
    "Section",
    "Seed",
    "Slug",
    "fail",
    "key_name",
    "located_error",
    "raise_errors",
    "unknown_key_errors",
    "unknown_key_message",
]

Loc = tuple[str | int, ...]

#: Loopback calls bind loopback only: a scenario must never put test traffic
#: (or a blackhole/rebind fault) on a real interface by a typo.
LOOPBACK = IPv4Network("127.0.0.0/8")

# Ranges. Every number a file can hold has one, said in the error, so that
# ``check`` accepts only what ``run`` can run (a billion concurrent calls or a
# 1e300-second timer passed a check once and then hung or overflowed the run).
#: One call lasts at most a day; a soak is many calls, not one endless one.
MAX_CALL_DURATION_S = 86400.0
#: Concurrent copies of one scenario's call (each holds sockets and a task).
MAX_CALLS = 1000
#: A millisecond figure (a gap, a setup time): at most a call's length.
MAX_MILLISECONDS = MAX_CALL_DURATION_S * 1000
#: An expected count (events, packets): far above a day of 10 ms packets.
MAX_COUNT = 10**9
#: Seeds are recorded in reports and replayed; 64 bits is plenty.
MAX_SEED = 2**64 - 1


# --- raising errors at a location -------------------------------------------


def located_error(loc: Loc, kind: str, message: str, value: Any) -> InitErrorDetails:
    # The message is pre-formatted and passed through ctx, so braces in it
    # (``{min: 0, max: 2}``) are not taken for template fields.
    return InitErrorDetails(
        type=PydanticCustomError(kind, "{message}", {"message": message}),
        loc=loc,
        input=value,
    )


def raise_errors(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise ``errors`` (if any) so pydantic prefixes each ``loc`` with ours."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def fail(title: str, loc: Loc, kind: str, message: str, value: Any) -> NoReturn:
    raise ValidationError.from_exception_data(
        title, [located_error(loc, kind, message, value)]
    )


def unknown_key_message(key: object, known: Collection[str], kind: str) -> str:
    """``unknown field; did you mean 'duration'?`` (or the valid choices)."""
    # Only a written name can be a typo: a YAML ``true:`` or ``1.5:`` key is
    # no misspelt field (``true`` is 0.6 close to ``target``).
    close = (
        difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        if isinstance(key, str)
        else []
    )
    if close:
        return f"unknown {kind}; did you mean {close[0]!r}?"
    if known:
        return f"unknown {kind}; expected one of: {', '.join(sorted(known))}"
    return f"unknown {kind}"


def key_name(key: object) -> str:
    """A mapping key as a location part, spelt as YAML writes it.

    YAML keys may be ints, bools or null (``~: x``); a location part that is
    an int would read as a list index (``[1]``), and ``None`` reads as Python.
    """
    if key is None or isinstance(key, bool):
        return describe_value(key)
    return str(key)


def unknown_key_errors(
    data: Mapping[Any, Any], known: Collection[str], kind: str
) -> list[InitErrorDetails]:
    return [
        located_error(
            (key_name(key),),
            "unknown_field",
            unknown_key_message(key, known, kind),
            key,
        )
        for key in data
        if key not in known
    ]


class Section(BaseModel):
    """A frozen mapping of settings whose unknown keys get a suggestion.

    ``extra="forbid"`` alone would say "Extra inputs are not permitted"; the
    check below runs first and names the closest valid field. An empty
    section (``media:`` with nothing under it) means "all defaults".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_fields(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, Mapping):
            raise_errors(
                cls.__name__, unknown_key_errors(data, cls.model_fields, "field")
            )
        return data


# --- field types ------------------------------------------------------------


def _positive_duration(seconds: float) -> float:
    if seconds <= 0:
        raise PydanticCustomError(
            "duration_zero", "must be longer than 0s (use e.g. 10s)"
        )
    return seconds


def _call_duration(seconds: float) -> float:
    if seconds > MAX_CALL_DURATION_S:
        raise PydanticCustomError(
            "call_too_long",
            "{value} is too long: a call lasts at most {limit}",
            {
                "value": format_duration(seconds),
                "limit": format_duration(MAX_CALL_DURATION_S),
            },
        )
    return seconds


def _in_range(
    low: float, high: float, *, above_low: bool = False, unit: str = ""
) -> AfterValidator:
    """A range check whose message states the whole range, not one bound."""
    lower = f"more than {low:g}" if above_low else f"at least {low:g}"

    def check(value: float) -> float:
        # Written so that NaN (every comparison false) is out of range too.
        inside = (value > low if above_low else value >= low) and value <= high
        if not inside:
            raise PydanticCustomError(
                "out_of_range",
                "must be {lower} and at most {high}{unit}, got {value}",
                {
                    "lower": lower,
                    "high": describe_value(high),
                    "unit": unit,
                    "value": describe_value(value),
                },
            )
        return value

    return AfterValidator(check)


def _address_text(value: Any) -> Any:
    # pydantic would take the int 2130706433 for 127.0.0.1; a file that
    # writes a number there meant something else.
    if isinstance(value, str | IPv4Address):
        return value
    raise PydanticCustomError(
        "ip_v4_address", "not an address", {"value": describe_value(value)}
    )


def _loopback(address: IPv4Address) -> IPv4Address:
    if address not in LOOPBACK:
        raise PydanticCustomError(
            "not_loopback",
            "{address} is not a loopback address; calls bind loopback only "
            "(127.0.0.0/8)",
            {"address": str(address)},
        )
    if address in (LOOPBACK.network_address, LOOPBACK.broadcast_address):
        # Linux lets a socket bind these, but nothing answers from them:
        # the call would fail at ICE, after the check said the file was fine.
        raise PydanticCustomError(
            "not_host_address",
            "{address} is not a host address; use 127.0.0.1 to 127.255.255.254",
            {"address": str(address)},
        )
    return address


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _slug(name: str) -> str:
    # The name keys reports, JUnit test names and Prometheus labels.
    if not _SLUG.fullmatch(name):
        raise PydanticCustomError(
            "slug",
            "{name} is not a short slug: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 64 characters)",
            {"name": describe_value(name)},
        )
    return name


#: More than 0 s, at most 7 days (:data:`~agent.scenario.duration.MAX_DURATION_S`).
PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_positive_duration)
]
#: A call's length: more than 0 s, at most 24 h.
CallDuration = Annotated[PositiveDuration, AfterValidator(_call_duration)]
#: A time in milliseconds: a finite number, not a string and not a bool.
Milliseconds = Annotated[
    float, Strict(), _in_range(0, MAX_MILLISECONDS, above_low=True, unit=" (24 hours)")
]
NonNegativeMilliseconds = Annotated[
    float, Strict(), _in_range(0, MAX_MILLISECONDS, unit=" (24 hours)")
]
Count = Annotated[StrictInt, _in_range(0, MAX_COUNT)]
CallCount = Annotated[StrictInt, _in_range(1, MAX_CALLS)]
Seed = Annotated[StrictInt, _in_range(0, MAX_SEED)]
#: A share such as a loss rate: more than 0, at most 1; a number, not text.
Probability = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]
LoopbackAddress = Annotated[
    IPv4Address, BeforeValidator(_address_text), AfterValidator(_loopback)
]
Slug = Annotated[StrictStr, AfterValidator(_slug)]
