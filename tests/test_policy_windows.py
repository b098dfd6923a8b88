"""Send windows as pure functions of an injected ``now``: hours, days, midnight, DST."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bulkdm.policies import SendWindow, parse_send_window, windowed_duration_s
from bulkdm.rates import Rate
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, env_for, write_campaign

BERLIN = ZoneInfo("Europe/Berlin")


def at(*parts: int, zone: ZoneInfo = BERLIN) -> float:
    year, month, day, hour, minute = parts
    return datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()


def office() -> SendWindow:
    return parse_send_window("09:00-18:00", "mon-fri", "Europe/Berlin")


def test_office_hours_open_and_close_on_weekdays_in_their_zone() -> None:
    window = office()
    monday = (2026, 11, 30)
    assert window.opens_s(at(*monday, 8, 0)) == at(*monday, 9, 0)
    assert window.is_open(at(*monday, 12, 0)) and window.closes_s(at(*monday, 12, 0)) == at(*monday, 18, 0)
    assert not window.is_open(at(*monday, 18, 0))  # the end is not in the window
    assert window.opens_s(at(2026, 12, 4, 18, 30)) == at(2026, 12, 7, 9, 0)  # friday evening
    assert window.opens_s(at(2026, 12, 5, 12, 0)) == at(2026, 12, 7, 9, 0)  # saturday
    assert window.describe() == "09:00-18:00 mon,tue,wed,thu,fri Europe/Berlin"


def test_a_window_crossing_midnight_belongs_to_the_day_it_opens() -> None:
    night = parse_send_window("22:00-02:00", "mon-fri", "Europe/Berlin")
    assert night.is_open(at(2026, 12, 4, 23, 0))  # friday night
    assert night.closes_s(at(2026, 12, 4, 23, 0)) == at(2026, 12, 5, 2, 0)
    assert night.is_open(at(2026, 12, 5, 1, 0))  # saturday 01:00: still friday's window
    assert night.opens_s(at(2026, 12, 5, 3, 0)) == at(2026, 12, 7, 22, 0)
    assert not night.is_open(at(2026, 11, 30, 1, 0))  # monday 01:00: sunday has no window
    assert night.is_open(at(2026, 12, 1, 1, 0))  # tuesday 01:00: monday's


def test_days_wrap_around_the_week_and_lists_mix() -> None:
    assert parse_send_window(None, "sat-mon", None).days == frozenset({5, 6, 0})
    assert parse_send_window(None, "mon,wed-thu", None).days == frozenset({0, 2, 3})
    whole = parse_send_window(None, None, None)
    assert whole.is_open(at(2026, 12, 6, 3, 0)) and whole.zone == "UTC"


def test_spring_forward_keeps_local_hours() -> None:
    window = parse_send_window("09:00-18:00", None, "Europe/Berlin")
    # saturday 28 March 2026, 18:30 CET; the clocks go 02:00 -> 03:00 that night
    opens = window.opens_s(at(2026, 3, 28, 18, 30))
    assert opens == datetime(2026, 3, 29, 7, 0, tzinfo=UTC).timestamp()  # 09:00 CEST
    assert opens - at(2026, 3, 28, 18, 0) == 15 * 3600 - 3600  # 18:00 to 09:00, an hour less


def test_a_skipped_local_hour_opens_an_hour_later() -> None:
    window = parse_send_window("02:30-04:00", "sun", "Europe/Berlin")
    opens = window.opens_s(at(2026, 3, 28, 12, 0))
    assert opens == datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()  # 03:30 CEST


def test_fall_back_makes_a_whole_day_window_25_hours() -> None:
    day = parse_send_window("00:00-24:00", "sun", "Europe/Berlin")
    sunday_noon = at(2026, 10, 25, 12, 0)
    assert day.closes_s(sunday_noon) - day.opens_s(at(2026, 10, 24, 12, 0)) == 25 * 3600


def test_windowed_duration_fills_each_spell_then_the_next_day() -> None:
    window = parse_send_window("09:00-11:00", None, "UTC")
    monday_nine = at(2026, 11, 30, 9, 0, zone=ZoneInfo("UTC"))
    hourly = [Rate(count=10, period_s=3600.0)]
    # 20 fit before 11:00 (one every 6 minutes, the last at 10:54); 10 more on tuesday
    assert windowed_duration_s(window, 30, hourly, monday_nine) == 86400 + 9 * 360
    # a daily cap of 5: 5, 5, then 2 on wednesday
    capped = [*hourly, Rate(count=5, period_s=86400.0)]
    assert windowed_duration_s(window, 12, capped, monday_nine) == 2 * 86400 + 360
    # started before the window opens: the wait counts
    assert windowed_duration_s(window, 1, hourly, monday_nine - 3600) == 3600


@pytest.mark.parametrize(("hours", "days", "zone", "says"), [
    ("9-18", None, None, "HH:MM-HH:MM"),
    ("09:00-25:00", None, None, "not a time of day"),
    (None, "weekdays", None, "mon..sun"),
    (None, None, "Mars/Olympus", "unknown time zone"),
])
def test_bad_parts_are_named(hours: str | None, days: str | None, zone: str | None,
                             says: str) -> None:
    with pytest.raises(ValueError, match=says.replace(".", r"\.")):
        parse_send_window(hours, days, zone)


def _closed_for_two_hours(now_s: float) -> str:
    """``send_hours`` in UTC opening two hours from ``now_s``, for an hour."""
    opens = datetime.fromtimestamp(now_s + 7200, UTC)
    closes = datetime.fromtimestamp(now_s + 10800, UTC)
    return f"{opens:%H:%M}-{closes:%H:%M}"


async def test_no_dm_leaves_outside_the_window_and_the_plan_counts_it(tmp_path: Path) -> None:
    hours = _closed_for_two_hours(time.time())
    rows = [{"recipient_id": str(80_000 + i), "first_name": "x"} for i in range(3)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, extra="", sender_rate="10/1s")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'template = "Hello {first_name}"',
            f'template = "Hello {{first_name}}"\nsend_hours = "{hours}"\ntimezone = "UTC"'))
        plan = await bulkdm("plan", str(campaign))
        # the summary's times are local: UTC here, as the window's
        done = await bulkdm("run", str(campaign), "--progress", "none", env={**env_for(), "TZ": "UTC"})
        assert len(sb.ledger) == 0
    # the window opens 1h59m-2h from now (send_hours has whole minutes): shown either way
    assert re.search(r"estimated time\s+(1h 5\dm|2h)", plan.stdout), plan.stdout
    assert done.code == 4, done.stdout + done.stderr
    assert f"outside its send window ({hours} every day UTC) until" in done.stdout
    opens = datetime.fromisoformat(re.findall(r"Next send possible at (\S+ \S+)", done.stdout)[0])
    assert f"{opens:%H:%M}" == hours[:5]  # the summary's local time is the window's start


async def test_a_sender_inside_its_own_window_sends(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(81_000 + i), "first_name": "x"} for i in range(3)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="10/1s")
        settings = tmp_path / "camp.toml"
        # the campaign's window is closed; the sender's own hours (every hour) win
        settings.write_text(settings.read_text().replace(
            'template = "Hello {first_name}"',
            f'template = "Hello {{first_name}}"\nsend_hours = "{_closed_for_two_hours(time.time())}"'
        ).replace('rate = "10/1s"', 'rate = "10/1s"\nsend_hours = "00:00-24:00"'))
        done = await bulkdm("run", str(campaign), "--progress", "none")
        assert len(sb.ledger) == 3
    assert done.code == 0, done.stdout + done.stderr
