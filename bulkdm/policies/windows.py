"""Send windows: hours of the day and days of the week, in a time zone, when DMs may leave.

A window is ``send_hours = "09:00-18:00"`` on ``send_days = "mon-fri"`` in ``timezone =
"Europe/Berlin"``. Hours whose end is not after their start cross midnight (``"22:00-02:00"``:
the days name the day the window opens). Every bound is computed as a wall-clock time in the
zone on its own date, so a window keeps its local hours across DST changes (a 09:00-18:00 window
is 9 hours long on the day the clocks change, a 00:00-24:00 one 23 or 25). A local time that
does not exist (the hour skipped in spring) is read as the same time on the old offset, i.e.
an hour later, as :mod:`zoneinfo` does.

Everything here is pure: ``now_s`` (epoch seconds) comes in, times come out; nothing sleeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bulkdm.rates import Rate

__all__ = ["SendWindow", "parse_send_window", "windowed_duration_s"]

_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_S: Final = 86400.0
#: days searched for the next open window: a week, and the day before (a window crossing
#: midnight that opened yesterday)
_SEARCH_DAYS: Final = range(-1, 8)


@dataclass(frozen=True, kw_only=True, slots=True)
class SendWindow:
    """When DMs may leave: from ``start_min`` to ``end_min`` (minutes after local midnight; an
    end not after the start is on the next day) on ``days`` (0 is Monday), in ``zone``."""

    start_min: int
    end_min: int
    days: frozenset[int]
    zone: str

    def describe(self) -> str:
        """``09:00-18:00 mon-fri Europe/Berlin``, as the display and the summary say it."""
        hours = f"{_hhmm(self.start_min)}-{_hhmm(self.end_min)}"
        days = ",".join(_DAYS[d] for d in sorted(self.days))
        return f"{hours} {'every day' if len(self.days) == 7 else days} {self.zone}"

    def opens_s(self, now_s: float) -> float:
        """``now_s`` if the window is open then, else when it next opens."""
        return min(max(now_s, start)
                   for start, end in self._intervals(now_s) if end > now_s)

    def closes_s(self, now_s: float) -> float:
        """When the window open at (or next after) ``now_s`` closes."""
        return min(end for start, end in self._intervals(now_s) if end > now_s
                   and start <= self.opens_s(now_s))

    def is_open(self, now_s: float) -> bool:
        return self.opens_s(now_s) <= now_s

    def _intervals(self, now_s: float) -> list[tuple[float, float]]:
        zone = ZoneInfo(self.zone)
        today = datetime.fromtimestamp(now_s, zone).date()
        spans = []
        for offset in _SEARCH_DAYS:
            day = today + timedelta(days=offset)
            if day.weekday() in self.days:
                spans.append((self._at(day, self.start_min, zone),
                              self._at(day, self.end_min, zone, after_start=True)))
        return spans

    def _at(self, day: date, minute: int, zone: ZoneInfo, *, after_start: bool = False) -> float:
        if after_start and minute <= self.start_min:
            day += timedelta(days=1)  # crosses midnight (or lasts 24 hours)
        day += timedelta(days=minute // 1440)
        clock = time(hour=(minute % 1440) // 60, minute=minute % 60)
        return datetime.combine(day, clock, tzinfo=zone).timestamp()


def parse_send_window(hours: str | None, days: str | None, zone: str | None) -> SendWindow:
    """``"09:00-18:00"``, ``"mon-fri"`` (or ``"mon,wed,fri"``, ``"sat-mon"``), an IANA zone.

    Missing parts are the whole day, every day, UTC. :raises ValueError: naming the bad part.
    """
    start_min, end_min = _hours(hours or "00:00-24:00")
    name = zone or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         "'Europe/Berlin')") from exc
    return SendWindow(start_min=start_min, end_min=end_min, days=_days(days or "mon-sun"),
                      zone=name)


def windowed_duration_s(window: SendWindow, count: int, rates: Sequence[Rate],
                        start_s: float, pace_factor: float = 1.0) -> float:
    """About how long ``count`` sends take from ``start_s`` when they leave only inside
    ``window``: each open spell sends as many as its length allows at the pace of the rates
    shorter than a day, up to the day-long (or longer) caps; the last ends at that pace.
    ``pace_factor`` stretches the pace's gaps (jitter's mean gap over the pace)."""
    short = [r for r in rates if r.period_s < _DAY_S]
    per_spell = min((r.count for r in rates if r.period_s >= _DAY_S), default=count)
    left, at_s = count, start_s
    for _ in range(100_000):  # a spell per iteration; bounded for a window that never opens
        opens_s = window.opens_s(at_s)
        closes_s = window.closes_s(opens_s)
        fits = min(left, per_spell, _fits_in(closes_s - opens_s, short, pace_factor))
        if fits >= left:
            return opens_s + _paced_s(left, short, pace_factor) - start_s
        left -= fits
        at_s = closes_s
    return math.inf


def _fits_in(length_s: float, rates: Sequence[Rate], pace_factor: float = 1.0) -> int:
    """How many sends fit in ``length_s`` at the pace of ``rates``, the last before its end
    (at least one)."""
    low, high = 1, 1
    while _paced_s(high * 2, rates, pace_factor) < length_s and high < 1 << 30:
        high *= 2
    low = high
    high *= 2
    while low + 1 < high:
        middle = (low + high) // 2
        fits = _paced_s(middle, rates, pace_factor) < length_s
        low, high = (middle, high) if fits else (low, middle)
    return low


def _paced_s(count: int, rates: Sequence[Rate], pace_factor: float = 1.0) -> float:
    if count <= 1 or not rates:
        return 0.0
    spaced_s = (count - 1) * min(r.period_s / r.count for r in rates) * pace_factor
    return max(spaced_s, max((math.ceil(count / r.count) - 1) * r.period_s for r in rates))


def _hours(text: str) -> tuple[int, int]:
    start, dash, end = text.replace(" ", "").partition("-")
    if not dash:
        raise ValueError(f'send_hours {text!r} must be "HH:MM-HH:MM", e.g. "09:00-18:00"')
    start_min, end_min = _minute(start, text), _minute(end, text)
    if start_min == 1440:
        raise ValueError(f"send_hours {text!r}: a window cannot start at 24:00")
    return start_min, end_min


def _minute(text: str, whole: str) -> int:
    hour, colon, minute = text.partition(":")
    if not (colon and hour.isdigit() and minute.isdigit() and len(minute) == 2):
        raise ValueError(f'send_hours {whole!r} must be "HH:MM-HH:MM", e.g. "09:00-18:00"')
    value = int(hour) * 60 + int(minute)
    if int(minute) > 59 or value > 1440:
        raise ValueError(f"send_hours {whole!r}: {text} is not a time of day")
    return value


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in _DAYS or (dash and last not in _DAYS):
            raise ValueError(f'send_days {text!r}: use mon..sun, e.g. "mon-fri" or "mon,wed,fri"')
        begin = _DAYS.index(first)
        span = (_DAYS.index(last) - begin) % 7 if dash else 0
        days.update((begin + i) % 7 for i in range(span + 1))
    return frozenset(days)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
