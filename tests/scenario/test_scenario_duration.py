"""Duration syntax: what scenario files may write for a time span."""

import math

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from agent.scenario.duration import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1.5s", 1.5),
        ("1h", 3600.0),
        ("168h", 604800.0),
        (".5s", 0.5),
        ("5 s", 5.0),
        (" 250ms ", 0.25),
        ("+3s", 3.0),
        ("7", 7.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("-0s", 0.0),
        (10, 10.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("5q", "invalid duration '5q' (use e.g. 500ms, 5s, 2m)"),
        ("", "invalid duration '' (use e.g. 500ms, 5s, 2m)"),
        ("s", "invalid duration 's' (use e.g. 500ms, 5s, 2m)"),
        ("ten seconds", "invalid duration 'ten seconds' (use e.g. 500ms, 5s, 2m)"),
        ("1e3s", "invalid duration '1e3s' (use e.g. 500ms, 5s, 2m)"),
        ("5msms", "invalid duration '5msms' (use e.g. 500ms, 5s, 2m)"),
        ("nan", "invalid duration 'nan' (use e.g. 500ms, 5s, 2m)"),
        (True, "invalid duration true (use e.g. 500ms, 5s, 2m)"),
        (False, "invalid duration false (use e.g. 500ms, 5s, 2m)"),
        (None, "invalid duration null (use e.g. 500ms, 5s, 2m)"),
        ([1], "invalid duration a list (use e.g. 500ms, 5s, 2m)"),
        (math.inf, "inf is too long: a duration is at most 168h (7 days)"),
        (
            -math.inf,
            "invalid duration -inf: a duration is a time from 0s to 168h (7 days)",
        ),
        (
            math.nan,
            "invalid duration nan: a duration is a time from 0s to 168h (7 days)",
        ),
        (1e300, "1e+300 is too long: a duration is at most 168h (7 days)"),
        ("169h", "'169h' is too long: a duration is at most 168h (7 days)"),
        (604800.001, "604800.001 is too long: a duration is at most 168h (7 days)"),
        ("-5s", "negative duration '-5s' is not allowed"),
        ("-1", "negative duration '-1' is not allowed"),
        (-1, "negative duration -1 is not allowed"),
        (-0.5, "negative duration -0.5 is not allowed"),
    ],
)
def test_parse_duration_rejects(written: object, message: str) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        parse_duration(written)
    assert caught.value.message() == message


def test_duration_type_validates_inside_pydantic() -> None:
    adapter = TypeAdapter(Duration)
    assert adapter.validate_python("250ms") == 0.25
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python("soon")
    assert caught.value.errors()[0]["type"] == "duration"


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (0.0, "0s"),
        (0.5, "500ms"),
        (0.0125, "12.5ms"),
        (10.0, "10s"),
        (1.5, "1.5s"),
        (120.0, "2m"),
        (90.0, "90s"),
        (7200.0, "2h"),
        (123456.5, "123456.5s"),
    ],
)
def test_format_duration(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written
    assert parse_duration(written) == seconds
