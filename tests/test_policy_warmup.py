"""Warm-up ramps as pure functions of the first send and an injected ``now``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bulkdm.policies.warmup import (
    DEFAULT_WARMUP,
    Warmup,
    parse_warmup,
    ramp_days,
    ramp_wait_until_s,
)
from bulkdm.report import estimate_duration
from bulkdm.settings import AccountsSettings, CampaignSettings, SenderSettings, Settings

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


def test_the_estimate_sends_each_days_ramped_cap_until_the_rows_are_done() -> None:
    # day caps 100, 128, 157, ... 385 (days 0-10) hold 2,667; 333 are left for day 11 (cap 414)
    assert ramp_days(DEFAULT_WARMUP, 500, 3000, None, FIRST) == (11, 333, 414)
    assert ramp_days(DEFAULT_WARMUP, 500, 80, None, FIRST) == (0, 80, 100)
    # an account on day 14 or later is warmed up: the plain daily cap takes it from there
    assert ramp_days(DEFAULT_WARMUP, 500, 3000, FIRST - 20 * DAY, FIRST) == (0, 3000, 500)
    # day 7 of its ramp: 300, 328, ... from today
    assert ramp_days(DEFAULT_WARMUP, 500, 700, FIRST - 7 * DAY - 60, FIRST) == (2, 72, 357)


def test_a_new_accounts_plan_estimate_counts_its_ramp() -> None:
    ramped = Settings(campaign=CampaignSettings(name="c"), senders=(SenderSettings(account="a"),))
    plain = replace(ramped, senders=(SenderSettings(account="a", warmup=None),))
    off = replace(ramped, accounts=AccountsSettings(ledger="off"))  # no ledger: no ramp
    assert estimate_duration(plain, {"a": 3000}, start_s=FIRST).human == "5d"
    assert estimate_duration(off, {"a": 3000}, start_s=FIRST).human == "5d"
    # 11 days on the ramp, then 333 sends at 15/15m's pace (one a minute)
    assert estimate_duration(ramped, {"a": 3000}, start_s=FIRST).human == "11d 5h 32m"
    established = {"a": FIRST - 20 * DAY}
    assert estimate_duration(ramped, {"a": 3000}, start_s=FIRST,
                             first_sends=established).human == "5d"
