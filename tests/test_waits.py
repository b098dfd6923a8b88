"""Why a sender waits, and the time left, as pure functions of the limiters at a given ``now``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bulkdm.ratelimit import WindowLimiter
from bulkdm.rates import Rate, parse_rate
from bulkdm.report import estimate_duration, spread_unbound
from bulkdm.rows import UNBOUND
from bulkdm.sandbox import running_sandbox
from bulkdm.settings import CampaignSettings, ProviderSettings, SenderSettings, Settings
from bulkdm.waits import WaitReason, clock_time, next_send_at_s, time_left_s, wait_reason
from tests.clikit import bulkdm, write_campaign

ISSUE_RATES = (parse_rate("1/1s"), parse_rate("5/1m"))  # the issue's ["1/1s", "5/1m"]
KEY_RATES = (Rate(count=100_000, period_s=1.0),)


def clock(epoch_s: float) -> str:
    return f"t={epoch_s:g}"


def sender_after_five_sends() -> WindowLimiter:
    limiter = WindowLimiter(ISSUE_RATES, smooth=True)
    at_s = 0.0
    for _ in range(5):
        at_s = limiter.next_allowed_s(at_s)  # one a second and a guard of 20 ms
        limiter.record(at_s)
    return limiter


def test_a_full_window_is_named_with_when_it_frees() -> None:
    sender, key = sender_after_five_sends(), WindowLimiter(KEY_RATES)
    reason = wait_reason(sender, key, 11.0)
    # the 5/1m window (61 s with its 1 s guard) frees when the first of the five leaves it
    assert reason == WaitReason(who="sender", what="5/1m", until_s=61.0)
    assert reason.text(11.0, clock=clock) == "5/1m window full until t=61 (50s)"
    assert sender.next_allowed_s(11.0) == reason.until_s  # the same answer as the limiter's


def test_the_pace_between_sends_is_not_worth_a_note_unless_long() -> None:
    sender, key = WindowLimiter(ISSUE_RATES, smooth=True), WindowLimiter(KEY_RATES)
    sender.record(0.0)
    assert wait_reason(sender, key, 0.5) is None  # one a second: just the pace
    slow = WindowLimiter((parse_rate("12/1m"),), smooth=True)  # one every 5 s
    slow.record(0.0)
    reason = wait_reason(slow, key, 1.0)
    assert reason is not None and reason.text(1.0, clock=clock) == (
        "pacing: next send until t=5 (4s)")


def test_a_rest_and_the_api_key_are_named() -> None:
    sender, key = WindowLimiter(ISSUE_RATES, smooth=True), WindowLimiter((parse_rate("2/1m"),))
    key.record(0.0)
    key.record(1.0)
    reason = wait_reason(sender, key, 2.0)
    assert reason is not None and reason.text(2.0, clock=clock) == (
        "api key 2/1m window full until t=61 (59s)")
    sender.rest_until(300.0)
    rest = wait_reason(sender, key, 2.0)
    assert rest is not None and rest.text(2.0, clock=clock) == (
        "resting (Retry-After) until t=300 (4m58s)")


def settings(*accounts: str) -> Settings:
    return Settings(
        campaign=CampaignSettings(name="c"),
        provider=ProviderSettings(rates=KEY_RATES),
        senders=tuple(SenderSettings(account=a, rates=ISSUE_RATES, daily_cap=None)
                      for a in accounts),
    )


def test_time_left_starts_at_the_plans_estimate_and_counts_waits() -> None:
    both = settings("a", "b")
    left = {"a": 12, "b": 7}
    plan = estimate_duration(both, left).seconds
    assert plan == 2 * 60.0  # 12 rows at 5 a minute: the third minute's window
    assert time_left_s(both, left, first_wait_s={"a": 0.0, "b": 0.0}) == plan
    waiting = time_left_s(both, left, first_wait_s={"a": 49.0, "b": 0.0})
    assert waiting == plan + 49.0  # the 5/1m window's wait is in the ETA
    # the API key's wait holds every sender
    assert time_left_s(both, left, first_wait_s={"a": 0, "b": 0}, api_key_wait_s=200.0) == (
        200.0 + estimate_duration(both, left).api_key_s)


def test_time_left_of_nothing_and_of_rows_no_sender_can_send() -> None:
    one = settings("a", "b")
    assert time_left_s(one, {"a": 0}, first_wait_s={"a": 3.0}) == 0.0
    assert time_left_s(one, {"a": 3, "b": 2}, first_wait_s={"a": 0.0}) is None  # b is out


def test_unbound_rows_are_spread_over_the_senders_that_can_send_them() -> None:
    """Late binding: rows bound to none go to whichever sender has a slot, so the ETA spreads
    them; a sender resting until tomorrow takes none while the others finish before then."""
    three = settings("a", "b", "tired")
    rows = {UNBOUND: 30}
    assert spread_unbound(three, rows, {"a": 0.0, "b": 0.0, "tired": 0.0}) == \
        {"a": 10, "b": 10, "tired": 10}
    resting = {"a": 0.0, "b": 0.0, "tired": 86_400.0}
    assert spread_unbound(three, rows, resting) == {"a": 15, "b": 15, "tired": 0}
    # 15 rows each at 5 a minute: two minutes (the third window), not a day
    assert time_left_s(three, rows, first_wait_s=resting) == 2 * 60.0
    # a pinned row of the tired sender waits for it: the ETA says so
    assert time_left_s(three, {UNBOUND: 30, "tired": 1}, first_wait_s=resting) == 86_400.0
    assert time_left_s(three, rows, first_wait_s={}) is None  # no sender left to send them


async def test_a_run_says_which_window_a_waiting_sender_waits_for(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(70_000 + i), "first_name": "x"} for i in range(6)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        config = campaign.with_suffix(".toml")
        text = config.read_text(encoding="utf-8")
        # one every 200 ms, and 3 in any 3 s: the third send fills the window for about 2.6 s
        text = text.replace('rate = "1000/1s"', 'rate = ["1/200ms", "3/3s"]')
        config.write_text(text + 'progress_interval = "100ms"\n', encoding="utf-8")
        done = await bulkdm("run", str(campaign), "--progress", "plain")
    assert done.code == 0, done.stdout + done.stderr
    waits = [line for line in done.stdout.splitlines() if "1 waiting" in line]
    assert waits, done.stdout
    assert any("(alice: 3/3s window full until " in line for line in waits), waits
    # the ETA counts the wait: never "--" while rows are left, though nothing is sent meanwhile
    assert not any("ETA --" in line for line in waits), waits


def test_a_paused_run_can_send_again_when_its_first_sender_can() -> None:
    capped = WindowLimiter([Rate(count=2, period_s=100.0)], guard_s=0.0)
    capped.charge([0.0, 10.0])  # full until 100
    resting = WindowLimiter([Rate(count=5, period_s=1.0)], guard_s=0.0)
    resting.rest_until(300.0)
    key = WindowLimiter([Rate(count=100, period_s=1.0)], guard_s=0.0)
    assert next_send_at_s([(capped, 0.0), (resting, 0.0)], key, 20.0) == 100.0
    # a row due later (a retry's delay) counts; a sender with no row left does not
    assert next_send_at_s([(capped, 150.0), (resting, 0.0)], key, 20.0) == 150.0
    assert next_send_at_s([(capped, None), (resting, 0.0)], key, 20.0) == 300.0
    assert next_send_at_s([(capped, None)], key, 20.0) is None


def test_a_jittered_gap_is_named_when_it_holds_the_next_send_longest() -> None:
    sender, key = WindowLimiter((parse_rate("12/1m"),), smooth=True), WindowLimiter(KEY_RATES)
    sender.record(0.0)  # the pace allows the next send at 5 s; the drawn gap says 9 s
    reason = wait_reason(sender, key, 6.0, jitter_due_s=9.0)
    assert reason == WaitReason(who="sender", what="jitter", until_s=9.0)
    assert reason.text(6.0, clock=clock) == "jitter: next send until t=9 (3s)"
    paced = wait_reason(sender, key, 1.0, jitter_due_s=3.0)  # the pace holds longer
    assert paced is not None and paced.what == "pace"


def test_a_wait_names_its_zone_and_the_day_when_it_is_not_today(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "until 11:26:13 (23h59m)" beside UTC notes read as UTC, and a day later as today (QA)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        soon = clock_time(time.time() + 1)
        later = clock_time(time.time() + 2 * 86400)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert re.fullmatch(r"\d\d:\d\d:\d\d JST", soon), soon
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST", later), later
