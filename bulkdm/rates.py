"""Rates written ``N/DURATION`` (``15/15m``, ``500/1d``) and durations (``50ms``, ``2s``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_COUNT", "MAX_DURATION_S", "Rate", "parse_duration_s", "parse_rate"]

#: the longest duration or rate period: a year. Nothing bulkdm waits for or counts is longer, a
#: longer one is a slip of the unit, and a wait added to now must stay a time datetime can hold
MAX_DURATION_S: Final = 365 * 86400.0
#: the most events a rate counts: what a signed 32-bit column holds (more is a slip, not a budget)
MAX_COUNT: Final = 2**31 - 1

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([-+]?)(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")
_EXAMPLES = "500ms, 30s, 15m, 2h or 1d"


@dataclass(frozen=True, kw_only=True, slots=True)
class Rate:
    """At most ``count`` events in any window of ``period_s`` seconds."""

    count: int
    period_s: float

    def __str__(self) -> str:
        return f"{self.count}/{_format_duration(self.period_s)}"

    @property
    def per_second(self) -> float:
        return self.count / self.period_s


def parse_duration_s(value: str | float, *, default_unit: str = "s") -> float:
    """``"15m"`` -> 900.0, ``"50ms"`` -> 0.05; a bare number (or a number) is in
    ``default_unit``.

    :raises ValueError: not a duration, negative, or over :data:`MAX_DURATION_S` (a year).
    """
    seconds = _signed_seconds(value, default_unit)
    if seconds < 0:
        raise ValueError(f"{value!r} is negative; a duration is 0 or more")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is over a year; a duration is at most 365d")
    return seconds + 0.0  # -0.0 is 0


def parse_rate(text: str) -> Rate:
    """``"15/15m"`` -> Rate(count=15, period_s=900.0); ``"10/s"`` means one second.

    :raises ValueError: not a rate, a count or period of 0 or less, a count over
        :data:`MAX_COUNT`, or a period over :data:`MAX_DURATION_S` (a year).
    """
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate such as 15/15m, 120/60s or 500/1d")
    count, period = int(match.group(1)), match.group(2).strip()
    period_s = _signed_seconds(f"1{period}" if period in _UNITS_S else period, "s")
    if count < 1 or period_s <= 0:
        raise ValueError(f"{text!r}: the count and the period must both be positive")
    if count > MAX_COUNT:
        raise ValueError(f"{text!r}: the count must be at most {MAX_COUNT}")
    if period_s > MAX_DURATION_S:
        raise ValueError(f"{text!r}: the period must be at most a year (365d)")
    return Rate(count=count, period_s=period_s)


def _signed_seconds(value: str | float, default_unit: str) -> float:
    """The seconds ``value`` says, sign and all (infinity too); NaN and other text are errors."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as {_EXAMPLES}")
        sign = -1.0 if match.group(1) == "-" else 1.0
        seconds = sign * float(match.group(2)) * _UNITS_S[match.group(3) or default_unit]
    else:
        seconds = value * _UNITS_S[default_unit]
    # infinity is over any limit and refused by the callers' bounds; NaN passes every bound
    if math.isnan(seconds):
        raise ValueError(f"{value!r} is not a duration such as {_EXAMPLES}")
    return seconds


def _format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds * 1000:g}ms"
