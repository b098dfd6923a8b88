from __future__ import annotations

import math

import pytest

from bulkdm.rates import MAX_COUNT, MAX_DURATION_S, Rate, parse_duration_s, parse_rate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the period's sign was read as a unit: "'1-1s' is not a duration", of text never written
        ("5/-1s", "'5/-1s': the count and the period must both be positive"),
        ("5/0s", "must both be positive"),
        ("0/1s", "must both be positive"),
        ("99999999999999999999/1s", f"the count must be at most {MAX_COUNT}"),
        ("1/366d", "the period must be at most a year"),
        ("1/99999999999999999999999d", "the period must be at most a year"),
        ("5/soon", "'soon' is not a duration"),
    ],
)
def test_a_bad_rate_says_what_is_wrong_with_what_was_written(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_rate(text)
    assert "1-1s" not in str(caught.value)


def test_rates_up_to_the_bounds_and_a_bare_unit_parse() -> None:
    assert parse_rate("10/m") == Rate(count=10, period_s=60.0)
    assert parse_rate(f"{MAX_COUNT}/365d") == Rate(count=MAX_COUNT, period_s=MAX_DURATION_S)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1s", "is negative"),
        (-0.5, "is negative"),
        ("366d", "over a year"),
        ("99999999999999999999999d", "over a year"),
        (math.inf, "over a year"),
        (math.nan, "not a duration"),
        ("nan", "not a duration"),
        ("inf", "not a duration"),
    ],
)
def test_a_duration_is_a_finite_time_from_zero_to_a_year(value: str | float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration_s(value)


def test_durations_in_range_parse_and_negative_zero_is_zero() -> None:
    assert parse_duration_s("365d") == MAX_DURATION_S
    assert parse_duration_s("50ms") == pytest.approx(0.05)
    assert parse_duration_s(90) == 90.0
    assert parse_duration_s(250, default_unit="ms") == pytest.approx(0.25)
    assert math.copysign(1.0, parse_duration_s(-0.0)) == 1.0
