"""The spend cap: ``[campaign] max_spend = "25 USD"`` or ``max_credits = 5000`` (Xquik).

Pure: what the campaign has spent (every DM attempt, media upload and username lookup it made,
retries included) and what the next call costs, against the cap. The engine asks before each
billed call and stops the run instead of making the one that would cross it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["SpendCap", "parse_spend"]

_MONEY: Final = re.compile(r"\s*\$?\s*(\d+(?:\.\d+)?)\s*(?:usd|\$)?\s*", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpendCap:
    """At most ``usd`` dollars and (Xquik) at most ``credits`` credits; ``None``: no cap."""

    usd: float | None = None
    credits: float | None = None

    def allows(self, usd: float, credits: float | None) -> bool:
        """True if a total spend of ``usd`` (and ``credits``) stays within the cap."""
        if self.usd is not None and usd > self.usd + 1e-9:
            return False
        return self.credits is None or credits is None or credits <= self.credits + 1e-9

    def describe(self) -> str:
        parts = ([f"max_spend {self.usd:g} USD"] if self.usd is not None else []) + \
            ([f"max_credits {self.credits:g}"] if self.credits is not None else [])
        return ", ".join(parts)

    @property
    def set(self) -> bool:
        return self.usd is not None or self.credits is not None


def parse_spend(value: str | float) -> float:
    """``"25 USD"``, ``"$25"``, ``"25"`` or ``25`` as dollars. :raises ValueError:"""
    if isinstance(value, (int, float)):
        amount = float(value)
    else:
        match = _MONEY.fullmatch(value)
        if match is None:
            raise ValueError(f'max_spend {value!r} must be an amount such as "25 USD"')
        amount = float(match.group(1))
    if amount < 0:
        raise ValueError(f"max_spend {value!r} must not be negative")
    return amount
