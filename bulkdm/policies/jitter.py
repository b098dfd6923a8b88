"""Human pacing: ``jitter = "30%"`` spreads a sender's sends randomly around its pace.

A sender's next send is due at its previous slot plus ``pace × (1 + u)``, ``u`` drawn uniformly
from ``[-share, +share]`` once per send; ``pace`` is the sender's smooth interval (its
limiter's ``period/count`` spacing). The due time is a floor, never a permission: the sender's
limiter (its rate windows, daily cap and spacing), its send window, warm-up and the spend cap
are asked after it, so a draw below zero is clamped to what the limiter allows and nothing
ever leaves earlier than it would without jitter. The clamp makes the mean gap a little
longer: ``pace × (1 + share / 4)`` where the spacing binds.

Pure: the draw is injected (``random.Random().uniform`` in a run, a fixed function in tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Draw", "Jitter", "parse_jitter"]

#: ``draw(low, high)``: a number in ``[low, high]``, as ``random.Random.uniform`` gives
Draw = Callable[[float, float], float]

_SHARE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


@dataclass(frozen=True, kw_only=True, slots=True)
class Jitter:
    """Each gap is the pace times ``1 + u``, ``u`` uniform in ``[-share, +share]``."""

    share: float

    def describe(self) -> str:
        return f"jitter {self.share * 100:g}%"

    def draw(self, draw: Draw) -> float:
        """One ``u`` for the next gap, within ``[-share, +share]`` whatever ``draw`` returns."""
        return min(self.share, max(-self.share, draw(-self.share, self.share)))

    def due_s(self, *, now_s: float, previous_s: float | None, pace_s: float, u: float,
              allowed_s: float | None = None) -> float:
        """When the next send may leave: ``previous_s + pace_s × (1 + u)``, never before
        ``now_s`` nor ``allowed_s`` (the limiter's next slot); ``now_s`` (or ``allowed_s``)
        when there was no previous send."""
        floor_s = now_s if allowed_s is None else max(now_s, allowed_s)
        if previous_s is None:
            return floor_s
        return max(floor_s, previous_s + pace_s * (1.0 + u))

    @property
    def mean_gap_factor(self) -> float:
        """The mean gap over the pace where the pace binds: draws below 0 are clamped to 0,
        so ``E[max(0, u)] = share / 4`` is added."""
        return 1.0 + self.share / 4.0


def parse_jitter(value: str | float) -> Jitter:
    """``"30%"`` (or ``0.3``) as a jitter (``"0%"``: none, e.g. a sender's opt-out of the
    campaign's). :raises ValueError:"""
    if isinstance(value, str):
        match = _SHARE.fullmatch(value)
        if match is None:
            raise ValueError(f'jitter {value!r} must be a share such as "30%"')
        share = float(match.group(1)) / 100
    else:
        share = float(value)
    if not 0 <= share <= 1:
        raise ValueError(f"jitter {value!r} must be between 0% and 100%")
    return Jitter(share=share)
