"""Warm-up: a new account's daily cap ramps up over its first days.

``warmup = "14d from 20%"`` allows 20 % of ``daily_cap`` on day 0 (the day of the account's first
send in the ledger), rising linearly to 100 % on day 14. Days count in whole 24-hour steps from
that first send. Pure functions of ``now_s`` and the first send's time; nothing sleeps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_WARMUP", "Warmup", "parse_warmup", "ramp_days", "ramp_wait_until_s"]

_DAY_S: Final = 86400.0
_FORM: Final = re.compile(r"\s*(\d+)\s*d\s+from\s+(\d+(?:\.\d+)?)\s*%\s*")


@dataclass(frozen=True, kw_only=True, slots=True)
class Warmup:
    """Over ``days`` days from an account's first send, its daily cap ramps linearly from
    ``start_fraction`` of ``daily_cap`` to all of it."""

    days: int
    start_fraction: float

    def describe(self) -> str:
        return f"{self.days}d from {self.start_fraction * 100:g}%"

    def day(self, first_send_s: float | None, now_s: float) -> int:
        """The ramp's day at ``now_s``: 0 before or on the first send's day."""
        if first_send_s is None:
            return 0
        return max(0, math.floor((now_s - first_send_s) / _DAY_S))

    def fraction(self, first_send_s: float | None, now_s: float) -> float:
        """The share of the daily cap the ramp allows at ``now_s`` (1.0 once it is done)."""
        day = self.day(first_send_s, now_s)
        if day >= self.days:
            return 1.0
        return self.start_fraction + (1.0 - self.start_fraction) * day / self.days

    def cap(self, daily_cap: int, first_send_s: float | None, now_s: float) -> int:
        """The daily cap on the ramp at ``now_s`` (at least one send a day)."""
        if self.done(first_send_s, now_s):
            return daily_cap
        return max(1, math.floor(daily_cap * self.fraction(first_send_s, now_s) + 1e-9))

    def done(self, first_send_s: float | None, now_s: float) -> bool:
        return self.day(first_send_s, now_s) >= self.days


DEFAULT_WARMUP: Final = Warmup(days=14, start_fraction=0.2)


def parse_warmup(value: str | bool) -> Warmup | None:
    """``"14d from 20%"``; ``true`` is that ramp, ``false`` none. :raises ValueError:"""
    if isinstance(value, bool):
        return DEFAULT_WARMUP if value else None
    match = _FORM.fullmatch(value)
    if match is None:
        raise ValueError(f'warmup {value!r} must be like "14d from 20%", true or false')
    days, percent = int(match.group(1)), float(match.group(2))
    if days < 1 or not 0 < percent <= 100:
        raise ValueError(f"warmup {value!r}: needs at least 1 day and a start of 1-100%")
    return Warmup(days=days, start_fraction=percent / 100)


def ramp_wait_until_s(times_s: Sequence[float], cap: int, now_s: float,
                      window_s: float = _DAY_S) -> float | None:
    """``None`` if one more send at ``now_s`` keeps at most ``cap`` sends in the last
    ``window_s`` (``times_s``: the sends so far, ascending); else when it would."""
    recent = [t for t in times_s if t > now_s - window_s]
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + window_s


def ramp_days(ramp: Warmup, daily_cap: int, count: int, first_send_s: float | None,
              start_s: float) -> tuple[int, int, int]:
    """For an estimate: ``count`` sends from ``start_s`` at the ramp's cap of each day (from
    the first send, or from ``start_s`` for an account that never sent). Returns the whole
    days spent before the last, the sends left for it and that day's cap (``daily_cap`` once
    the ramp is over: the rest is the plain daily cap's business)."""
    first_s = start_s if first_send_s is None else first_send_s
    left = count
    for days in range(ramp.days + 1):
        cap = ramp.cap(daily_cap, first_s, start_s + days * _DAY_S)
        if left <= cap or cap >= daily_cap:
            return days, left, cap
        left -= cap
    return ramp.days, left, daily_cap
