"""The API key's read budget: user lookups, write-action polls and history reads, metered the
way the providers meter them, as a bucket.

Xquik counts reads (GET) in a bucket of their own, apart from writes ("10 req/s, burst 20" once,
300 per second now); GetXAPI's blog gives 900 reads per 15 minutes. Each configured rate
``N/P`` becomes an ``aiolimiter.AsyncLimiter(N, P)``, and every read waits on all of them.

A leaky bucket lets a burst through: an idle limiter admits ``N`` reads at once, then ``N`` more
per ``P`` as it drains, so any window of ``P`` can hold up to ``2N`` reads (the first period of a
run, and the first after an idle spell). That is why the default read rates are half of what
each provider publishes (:data:`bulkdm.settings.DEFAULT_READ_RATES`). A read over the provider's
budget costs a 429 and a retry, never a DM; sends keep the sliding-window log of
:mod:`bulkdm.ratelimit`, which is a true ceiling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiolimiter import AsyncLimiter

from bulkdm.rates import Rate

__all__ = ["ReadBudget"]


class ReadBudget:
    """One ``AsyncLimiter`` per rate; :meth:`acquire` takes one read from each.

    Build it inside the running event loop's lifetime (aiolimiter binds to the loop it first
    runs on). No rates means reads are not metered.
    """

    def __init__(self, rates: Iterable[Rate] = ()) -> None:
        self.rates = tuple(rates)
        self._limiters = tuple(AsyncLimiter(r.count, r.period_s) for r in self.rates)
        #: no read leaves before this (``time.monotonic()``): the provider said to wait
        self._paused_until_s = 0.0

    def __repr__(self) -> str:
        return f"ReadBudget({', '.join(f'{r.count}/{r.period_s:g}s' for r in self.rates)})"

    async def acquire(self) -> None:
        """Wait out a pause, then until every bucket has room for one more read, and take it."""
        wait_s = self._paused_until_s - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        for limiter in self._limiters:
            await limiter.acquire()

    def pause(self, seconds: float) -> None:
        """No read leaves for ``seconds`` from now (a read was refused with a 429): every
        reader waits, instead of each spending a request on another refusal."""
        self._paused_until_s = max(self._paused_until_s, time.monotonic() + seconds)

    def room(self) -> int | None:
        """Reads that would pass now without waiting (the least of any bucket); None: no limit."""
        return min((_room(limiter) for limiter in self._limiters), default=None)


def _room(limiter: AsyncLimiter) -> int:
    room = 0
    while room < limiter.max_rate and limiter.has_capacity(room + 1):
        room += 1
    return room
