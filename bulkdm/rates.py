"""Rates written ``N/DURATION`` (``15/15m``, ``500/1d``) and durations (``50ms``, ``2s``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Rate", "parse_duration_s", "parse_rate"]

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")


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


def parse_duration_s(text: str, *, default_unit: str = "s") -> float:
    """``"15m"`` -> 900.0, ``"50ms"`` -> 0.05; a bare number uses ``default_unit``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 30s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNITS_S[match.group(2) or default_unit]


def parse_rate(text: str) -> Rate:
    """``"15/15m"`` -> Rate(count=15, period_s=900.0); ``"10/s"`` means one second."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate such as 15/15m, 120/60s or 500/1d")
    count, period = int(match.group(1)), match.group(2).strip()
    period_s = parse_duration_s(period if period[0].isdigit() else f"1{period}")
    if count < 1 or period_s <= 0:
        raise ValueError(f"{text!r}: the count and the period must both be positive")
    return Rate(count=count, period_s=period_s)


def _format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds * 1000:g}ms"
