"""Seeded dice for fault injection: each fault an independent draw from one ``random.Random``."""

from __future__ import annotations

import random

from bulkdm.sandbox.config import Faults

__all__ = ["FaultDice"]


class FaultDice:
    """Draws the faults of :class:`Faults`; a rate of 0 draws nothing, so it costs nothing."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)

    def rate_limited(self) -> bool:
        return self._roll(self.faults.rate_limit_rate)

    def failed(self) -> bool:
        return self._roll(self.faults.fail_rate)

    def dropped(self) -> bool:
        return self._roll(self.faults.drop_rate)

    def read_throttled(self) -> bool:
        return self._roll(self.faults.read_throttle_rate)

    def late(self) -> bool:
        return self._roll(self.faults.late_rate)

    def accepted(self) -> bool:
        return self._roll(self.faults.accept_rate)

    def coin(self) -> bool:
        """A fair coin, to choose between two equally plausible failures."""
        return self._rng.random() < 0.5

    def delay_s(self) -> float:
        """The latency for one answer, in seconds (0 when no latency is configured)."""
        latency_ms, jitter_ms = self.faults.latency_ms, self.faults.jitter_ms
        if jitter_ms > 0:
            latency_ms += self._rng.uniform(-jitter_ms, jitter_ms)
        return max(0.0, latency_ms) / 1000

    def arrival_delay_s(self) -> float:
        """How long one request waits before it is handled, in seconds (0 when not configured)."""
        jitter_ms = self.faults.arrival_jitter_ms
        return self._rng.uniform(0, jitter_ms) / 1000 if jitter_ms > 0 else 0.0

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate
