"""Sliding-window rate limits keyed by API key or sender, and the Xquik credit balance."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from bulkdm.rates import Rate

__all__ = ["Credits", "SlidingWindows", "retry_after_s"]


class SlidingWindows:
    """At most ``rate.count`` admitted events in any ``rate.period_s`` window, for every rate.

    ``admit`` records the event only when every window has room, so a refused request costs
    nothing. The clock is injected so the windows can be tested without sleeping.
    """

    def __init__(self, rates: tuple[Rate, ...], clock: Callable[[], float]) -> None:
        self.rates = rates
        self._clock = clock
        self._logs: dict[str, tuple[deque[float], ...]] = {}

    def admit(self, key: str) -> float | None:
        """None if admitted (and recorded); else the seconds until ``key`` would be admitted."""
        if not self.rates:
            return None
        now = self._clock()
        logs = self._logs.get(key)
        if logs is None:
            logs = self._logs[key] = tuple(deque[float]() for _ in self.rates)
        wait_s = 0.0
        for rate, log in zip(self.rates, logs, strict=True):
            horizon = now - rate.period_s
            while log and log[0] <= horizon:
                log.popleft()
            if len(log) >= rate.count:
                wait_s = max(wait_s, log[0] - horizon)
        if wait_s > 0:
            return wait_s
        for log in logs:
            log.append(now)
        return None


class Credits:
    """A credit balance; ``None`` means unlimited."""

    def __init__(self, balance: int | None) -> None:
        self.balance = balance
        self.used = 0

    def can_pay(self, cost: int) -> bool:
        return self.balance is None or self.balance >= cost

    def charge(self, cost: int) -> None:
        self.used += cost
        if self.balance is not None:
            self.balance -= cost


def retry_after_s(wait_s: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))
