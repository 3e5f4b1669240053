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

from agent.scenario.duration import describe_value, parse_duration

__all__ = [
    "LOOPBACK",
    "Count",
    "Loc",
    "LoopbackAddress",
    "Milliseconds",
    "NonNegativeMilliseconds",
    "PositiveDuration",
    "Section",
    "Slug",
    "fail",
    "located_error",
    "raise_errors",
    "unknown_key_errors",
    "unknown_key_message",
]

Loc = tuple[str | int, ...]

#: Loopback calls bind loopback only: a scenario must never put test traffic
#: (or a blackhole/rebind fault) on a real interface by a typo.
LOOPBACK = IPv4Network("127.0.0.0/8")


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
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown {kind}; did you mean {close[0]!r}?"
    if known:
        return f"unknown {kind}; expected one of: {', '.join(sorted(known))}"
    return f"unknown {kind}"


def unknown_key_errors(
    data: Mapping[Any, Any], known: Collection[str], kind: str
) -> list[InitErrorDetails]:
    # str(key): YAML keys may be ints or bools; a location part that is an
    # int would read as a list index (``[1]``).
    return [
        located_error(
            (str(key),), "unknown_field", unknown_key_message(key, known, kind), key
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


def _loopback(address: IPv4Address) -> IPv4Address:
    if address not in LOOPBACK:
        raise PydanticCustomError(
            "not_loopback",
            "{address} is not a loopback address; calls bind loopback only "
            "(127.0.0.0/8)",
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


PositiveDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_positive_duration)
]
#: A time in milliseconds: a number, not a string and not a bool.
Milliseconds = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegativeMilliseconds = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=0)]
LoopbackAddress = Annotated[IPv4Address, AfterValidator(_loopback)]
Slug = Annotated[StrictStr, AfterValidator(_slug)]
