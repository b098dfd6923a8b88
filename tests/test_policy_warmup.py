"""Warm-up ramps as pure functions of the first send and an injected ``now``."""

from __future__ import annotations

import pytest

from bulkdm.policies.warmup import DEFAULT_WARMUP, Warmup, parse_warmup, ramp_wait_until_s

DAY = 86400.0
FIRST = 1_800_000_000.0


def test_the_ramp_goes_from_20_percent_to_all_in_14_days() -> None:
    ramp = parse_warmup("14d from 20%")
    assert ramp == DEFAULT_WARMUP == parse_warmup(True)
    assert ramp is not None
    caps = [ramp.cap(500, FIRST, FIRST + d * DAY + 60) for d in range(16)]
    assert caps[0] == 100 and caps[7] == 300 and caps[14] == 500 and caps[15] == 500
    assert caps == sorted(caps)  # never falls back
    assert ramp.cap(500, None, FIRST) == 100  # a new account: day 0
    assert ramp.day(FIRST, FIRST + DAY - 1) == 0 and ramp.day(FIRST, FIRST + DAY) == 1
    assert not ramp.done(FIRST, FIRST + 13 * DAY) and ramp.done(FIRST, FIRST + 14 * DAY)


def test_a_tiny_cap_still_sends_once_a_day() -> None:
    assert Warmup(days=10, start_fraction=0.1).cap(3, FIRST, FIRST) == 1


def test_the_next_send_waits_until_the_oldest_of_the_days_sends_leaves() -> None:
    sends = [FIRST, FIRST + 10, FIRST + 20]
    assert ramp_wait_until_s(sends, 4, FIRST + 30) is None
    assert ramp_wait_until_s(sends, 3, FIRST + 30) == FIRST + DAY
    assert ramp_wait_until_s(sends, 2, FIRST + 30) == FIRST + 10 + DAY
    assert ramp_wait_until_s(sends, 3, FIRST + DAY + 1) is None  # the first has left the day


@pytest.mark.parametrize("text", ["14 days", "0d from 20%", "14d from 0%", "14d from 120%"])
def test_bad_ramps_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="warmup"):
        parse_warmup(text)


def test_false_is_no_ramp() -> None:
    assert parse_warmup(False) is None
