"""A multi-window sliding-log rate limiter that is a true ceiling, and an async gate over it.

:class:`WindowLimiter` is pure: it never reads a clock and never awaits. For every configured
:class:`~bulkdm.rates.Rate` it keeps the invariant "no window of ``period_s`` (plus a small guard)
holds more than ``count`` recorded events", including the first window of a run and the first
window after a restart (:meth:`WindowLimiter.charge` restores the send times from the checkpoint).
A leaky bucket such as ``aiolimiter.AsyncLimiter(10, 1.0)`` admits 19 events in its first second,
which is why this module exists.

:class:`Gate` is the async wrapper: it takes one slot from several limiters at the same instant
(for example a sender's own windows and the API key's shared budget), sleeping on an injected
clock until all of them allow it.

Example::

    sender = WindowLimiter([Rate(count=15, period_s=900.0), Rate(count=500, period_s=86400.0)])
    api_key = WindowLimiter([Rate(count=120, period_s=60.0)])
    sender.charge(times_already_in_checkpoint)
    gate = Gate()
    taken_at_s = await gate.acquire(sender, api_key, stop=stop_event)
    if taken_at_s is None:
        ...  # the run is stopping
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Protocol

import anyio

from bulkdm.rates import Rate

__all__ = [
    "DEFAULT_LEAST_GUARD_S",
    "DEFAULT_MAX_WAIT_S",
    "Gate",
    "Slot",
    "StopEvent",
    "WindowLimiter",
    "default_guard_s",
]

#: the longest single sleep of :meth:`Gate.acquire` before it looks again (a rest or another
#: acquirer may have changed the answer meanwhile)
DEFAULT_MAX_WAIT_S = 1.0
#: the shortest sleep: keeps a fake or coarse clock from spinning on a sub-ulp remainder
_MIN_WAIT_S = 1e-4


#: the least guard of a window by default (``[run] rate_guard``): a provider that stamps a send
#: up to 50 ms later than another (its queue, the network, its handler) must still see no
#: ``count + 1`` in a 1-second window, with room to spare for the client's own scheduling
DEFAULT_LEAST_GUARD_S = 0.1


def default_guard_s(rate: Rate, least_s: float = DEFAULT_LEAST_GUARD_S) -> float:
    """The default guard for ``rate``: 2 % of its period up to one second, at least ``least_s``."""
    return max(least_s, min(0.02 * rate.period_s, 1.0))


class WindowLimiter:
    """At most ``count`` events in any window of ``period_s + guard`` seconds, for every rate.

    The guard widens each window so that jitter between the moment a slot is taken here and the
    moment the request reaches the provider cannot put ``count + 1`` events in a window as the
    provider measures it. ``guard_s`` is the same guard for every window; ``None`` uses
    :func:`default_guard_s` for each rate, with ``least_guard_s`` as its least.
    ``smooth=True`` also keeps events at least ``period/count`` apart (of the least strict rate):
    the same pace, without bursts.

    Memory is bounded: only the newest ``max(count)`` events, and only those younger than the
    longest window, are kept.

    :raises ValueError: if a guard is negative.
    """

    def __init__(
        self, rates: Sequence[Rate], *, guard_s: float | None = None,
        least_guard_s: float = DEFAULT_LEAST_GUARD_S, smooth: bool = False,
    ) -> None:
        if guard_s is not None and guard_s < 0:
            raise ValueError(f"guard_s must be >= 0, got {guard_s}")
        if least_guard_s < 0:
            raise ValueError(f"least_guard_s must be >= 0, got {least_guard_s}")
        # smooth: events at least period/count apart (the least strict rate's), so a window's
        # count is spread over it instead of leaving in one burst. Bursts from many senders at
        # once queue up at the provider, and that queueing is jitter the guard has to absorb.
        self._spacing_s = (
            min((r.period_s / r.count for r in rates), default=0.0) if smooth else 0.0
        )
        self._rates = tuple(rates)
        self._windows_s = tuple(
            r.period_s + (default_guard_s(r, least_guard_s) if guard_s is None else guard_s)
            for r in self._rates
        )
        self._rate_windows = tuple(zip(self._rates, self._windows_s, strict=True))
        self._longest_s = max(self._windows_s, default=0.0)
        self._cap = max((r.count for r in self._rates), default=0)
        #: event times, ascending; ``maxlen`` drops the oldest once ``max(count)`` are held
        self._log: deque[float] = deque(maxlen=self._cap)
        self._rest_until_s: float | None = None
        #: events recorded ``pending``: their requests have not left yet (see :meth:`record`)
        self._pending: Counter[float] = Counter()
        self._pending_n = 0
        #: the newest pending event's time (-inf with none pending)
        self._newest_pending_s = -math.inf

    @property
    def rates(self) -> tuple[Rate, ...]:
        return self._rates

    @property
    def spacing_s(self) -> float:
        """The least gap kept between events (``smooth``: the least strict rate's
        ``period/count``; else 0): the sender's pace."""
        return self._spacing_s

    @property
    def resting_until_s(self) -> float | None:
        """The latest rest set by :meth:`rest_until` (it may already be over)."""
        return self._rest_until_s

    @property
    def last_event_s(self) -> float | None:
        newest = [self._log[-1]] if self._log else []
        return max([*newest, *self._pending], default=None)

    def __len__(self) -> int:
        """How many event times are held (bounded by ``max(count)``), pending ones included."""
        return len(self._log) + self._pending_n

    def window_s(self, rate: Rate) -> float:
        """The enforced window of ``rate``: its period plus its guard."""
        return self._windows_s[self._index(rate)]

    def next_allowed_s(self, now_s: float) -> float:
        """The earliest time ``>= now_s`` at which one more event fits every window and any rest.

        Returns ``now_s`` itself when an event fits now. Never earlier than the newest recorded
        event: a wall clock that steps back waits for it to catch up instead of guessing.
        """
        # every send asks this several times: a plain loop, no generator (see _limits)
        allowed_s = now_s
        if self._rest_until_s is not None and self._rest_until_s > allowed_s:
            allowed_s = self._rest_until_s
        pending, log = self._pending_n, self._log
        if pending or log:
            allowed_s = max(allowed_s, self._newest_s() + self._spacing_s)
            for rate, window_s in self._rate_windows:
                until_s = _window_until_s(log, pending, rate.count, window_s, now_s)
                if until_s is not None and until_s > allowed_s:
                    allowed_s = until_s
        return allowed_s

    def _newest_s(self) -> float:
        # The pace (smooth) counts from the newest slot taken, pending or not. Counted from "now"
        # while a request had not left, a spacing of microseconds (a huge daily cap beside
        # 5/1s: 43 µs) had the gate poll every 0.1 ms until it left; with commits slowed by
        # that polling, the pace run stalled for seconds. The windows still count a pending
        # slot as now (_window_until_s), so none holds more than its count when they leave.
        newest_s = self._log[-1] if self._log else -math.inf
        return max(newest_s, self._newest_pending_s)

    def _limits(self, now_s: float) -> Iterator[tuple[Rate | None, float]]:
        """The pace's (``None``) and each full window's earliest next event."""
        pending = self._pending_n
        if pending or self._log:
            yield None, self._newest_s() + self._spacing_s
        for rate, window_s in self._rate_windows:
            until_s = _window_until_s(self._log, pending, rate.count, window_s, now_s)
            if until_s is not None:
                yield rate, until_s

    def holds(self, now_s: float) -> list[tuple[str, float]]:
        """What keeps the next event from ``now_s``: ``(what, until_s)`` for every limit that
        allows it only later, latest first. ``what`` is ``"rest"`` (a Retry-After), ``"pace"``
        (the ``period/count`` spacing) or a rate such as ``"5/1m"`` whose window is full. Pure,
        like :meth:`next_allowed_s` (whose answer is the first ``until_s``, or ``now_s``)."""
        found: list[tuple[str, float]] = []
        if self._rest_until_s is not None and self._rest_until_s > now_s:
            found.append(("rest", self._rest_until_s))
        found.extend(("pace" if rate is None else str(rate), until_s)
                     for rate, until_s in self._limits(now_s) if until_s > now_s)
        return sorted(found, key=lambda item: -item[1])

    def next_slot_in_s(self, now_s: float) -> float:
        """Seconds until :meth:`next_allowed_s` (0.0 when an event fits now)."""
        return self.next_allowed_s(now_s) - now_s

    def record(self, at_s: float, *, pending: bool = False) -> None:
        """Take a slot at ``at_s``; the caller checked :meth:`next_allowed_s` first.

        ``pending``: the request has not left yet. Until :meth:`shift` (it left),
        :meth:`settle` or :meth:`forget` says what became of it, it counts as happening now in
        every window, so a request held back (a slow commit, a wait for a connection) never lets
        a window's next slot open early, however long it waits (the ``smooth`` spacing counts
        from ``at_s``).
        """
        if self._cap == 0:
            return
        if pending:
            self._pending[at_s] += 1
            self._pending_n += 1
            self._newest_pending_s = max(self._newest_pending_s, at_s)
            return
        if not self._log or at_s >= self._log[-1]:
            self._log.append(at_s)
        else:
            self._insert_late(at_s)
        self._prune(self._log[-1])

    def shift(self, from_s: float, to_s: float) -> None:
        """Move the event taken at ``from_s`` to ``to_s``: the moment its request really left.

        A slot is taken before the intent is committed; the commit takes a few milliseconds that
        vary with load, so the windows are counted from the send, not from the grant.
        """
        if self._unpend(from_s):
            self.record(max(from_s, to_s))
            return
        if self._cap == 0 or to_s <= from_s:
            return
        index = bisect.bisect_left(self._log, from_s)
        if index < len(self._log) and self._log[index] == from_s:
            del self._log[index]
            self.record(to_s)

    def settle(self, at_s: float) -> None:
        """The pending event taken at ``at_s`` is over without its request leaving (it failed
        before): it counts from ``at_s``, the safe side."""
        if self._unpend(at_s):
            self.record(at_s)

    def forget(self, at_s: float) -> None:
        """Drop the event taken at ``at_s``: it was never used (the shared ledger refused it)."""
        if self._unpend(at_s):
            return
        index = bisect.bisect_left(self._log, at_s)
        if index < len(self._log) and self._log[index] == at_s:
            del self._log[index]

    def _unpend(self, at_s: float) -> bool:
        """Take the pending event at ``at_s`` out of the pending ones; False if none is."""
        held = self._pending.get(at_s, 0)
        if not held:
            return False
        self._pending_n -= 1
        if held > 1:
            self._pending[at_s] = held - 1
        else:
            del self._pending[at_s]
            if at_s == self._newest_pending_s:
                self._newest_pending_s = max(self._pending, default=-math.inf)
        return True

    def charge(self, times_s: Iterable[float]) -> None:
        """Restore past events (any order), e.g. send times from the checkpoint on a restart."""
        if self._cap == 0:
            return
        merged = sorted([*self._log, *times_s])
        self._log.clear()
        self._log.extend(merged[-self._cap :])
        if self._log:
            self._prune(self._log[-1])

    def rest_until(self, until_s: float) -> None:
        """Allow nothing before ``until_s`` (a Retry-After); the latest of all rests wins."""
        if self._rest_until_s is None or until_s > self._rest_until_s:
            self._rest_until_s = until_s

    def is_resting(self, now_s: float) -> bool:
        return self._rest_until_s is not None and now_s < self._rest_until_s

    def times(self) -> tuple[float, ...]:
        """The event times held, ascending (the newest ``max(count)``), pending ones at the
        times they were taken."""
        if not self._pending_n:
            return tuple(self._log)
        return tuple(sorted([*self._log, *self._pending.elements()]))

    def used(self, now_s: float, rate: Rate) -> int:
        """Events of ``rate``'s enforced window ending at ``now_s`` (at most ``rate.count`` shown
        once more than that are held, as only the newest ``max(count)`` are kept)."""
        start_s = now_s - self.window_s(rate)
        end = bisect.bisect_right(self._log, now_s)
        pending = sum(n for t, n in self._pending.items() if start_s < t <= now_s)
        return end - bisect.bisect_right(self._log, start_s) + pending

    def prune(self, now_s: float) -> None:
        """Drop events that can no longer affect any window ending at or after ``now_s``."""
        self._prune(now_s)

    def _prune(self, newest_s: float) -> None:
        horizon_s = newest_s - self._longest_s
        while self._log and self._log[0] <= horizon_s:
            self._log.popleft()

    def _insert_late(self, at_s: float) -> None:
        if len(self._log) == self._cap:
            if at_s <= self._log[0]:
                return  # older than every event kept: it cannot be among the newest max(count)
            self._log.popleft()
        bisect.insort(self._log, at_s)

    def _index(self, rate: Rate) -> int:
        try:
            return self._rates.index(rate)
        except ValueError:
            raise ValueError(f"{rate} is not one of this limiter's rates") from None


def _window_until_s(log: deque[float], pending: int, count: int, window_s: float,
                    now_s: float) -> float | None:
    """When a window of ``count`` events allows the next one (None: it is not full). The
    ``count``-th newest event must have left the window before another may enter; pending
    events (not in the log) are the newest: they count as now."""
    if pending >= count:
        return now_s + window_s
    if len(log) + pending >= count:
        return log[pending - count] + window_s
    return None


class StopEvent(Protocol):
    """What :meth:`Gate.acquire` needs of a stop signal: ``anyio.Event`` and ``asyncio.Event`` fit."""

    def is_set(self) -> bool: ...

    async def wait(self) -> object: ...


class Slot(Protocol):
    """A concurrency slot :meth:`Gate.acquire` can take, such as ``asyncio.Semaphore``."""

    async def acquire(self) -> object: ...

    def release(self) -> object: ...

    def locked(self) -> bool: ...


class Gate:
    """Takes one slot from several :class:`WindowLimiter` objects at the same instant.

    ``clock`` is wall-clock time (``time.time``) because the checkpoint stores wall-clock send
    times and a restart must line up with them. ``sleep`` is injected so tests drive a fake clock.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        if not max_wait_s > 0:
            raise ValueError(f"max_wait_s must be > 0, got {max_wait_s}")
        self._clock = clock
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        #: the sleeps waiting for a slot, per stop signal (the default sleep on asyncio)
        self._sleepers: dict[StopEvent, _Sleepers] = {}

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    async def acquire(
        self,
        *limiters: WindowLimiter,
        stop: StopEvent | None = None,
        slot: Slot | None = None,
        deadline_s: float | None = None,
        not_before_s: float | None = None,
        pending: bool = False,
    ) -> float | None:
        """Wait until every limiter allows an event, record it on all of them, return its time.

        ``not_before_s`` is one more floor (a sender's jittered due time): no event is
        recorded before it, and it counts against ``deadline_s`` like the limiters' answers.

        With ``slot`` (e.g. the engine's concurrency ``asyncio.Semaphore``), the slot is taken
        before the event is recorded, and the time returned is read after it was taken: a request
        never leaves later than its recorded time because it waited for concurrency. On success
        the caller holds the slot and must release it. The slot is not held while the rate makes
        the caller wait, so a resting sender does not starve the others.

        Returns ``None`` once ``stop`` is set, or at once when the next allowed time is after
        ``deadline_s`` (a sender resting for a day should not hold its caller for a day); then
        nothing is recorded and the slot is not held.

        ``pending`` records the event as one whose request has not left yet (see
        :meth:`WindowLimiter.record`).
        """
        held = False
        try:
            while stop is None or not stop.is_set():
                now_s = self._clock()
                allowed_s = now_s if not_before_s is None else max(now_s, not_before_s)
                for lim in limiters:
                    lim_s = lim.next_allowed_s(now_s)
                    allowed_s = max(allowed_s, lim_s)
                if deadline_s is not None and allowed_s > deadline_s:
                    break
                if allowed_s > now_s:
                    if held and slot is not None:
                        slot.release()
                        held = False
                    wait_s = min(max(allowed_s - now_s, _MIN_WAIT_S), self._max_wait_s)
                    await self._wait(wait_s, stop)
                elif slot is None or held:
                    # no await between the check and the record: atomic on the event loop
                    for lim in limiters:
                        lim.record(now_s, pending=pending)
                    held = False  # handed to the caller
                    return now_s
                else:
                    # taking it may suspend, so the rate is checked again before recording
                    held = await self._take(slot, stop)
            return None
        finally:
            if held and slot is not None:
                slot.release()

    async def _take(self, slot: Slot, stop: StopEvent | None) -> bool:
        # Waiting for a slot needs no watcher task: a slot frees when a request in flight ends,
        # and whoever sets ``stop`` while callers wait releases the slot to wake them (the
        # engine does). Building a cancel scope per send cost more than the send's own logic.
        await slot.acquire()
        if stop is not None and stop.is_set():
            slot.release()
            return False
        return True

    async def _wait(self, wait_s: float, stop: StopEvent | None) -> None:
        if stop is None:
            await self._sleep(wait_s)
            return
        if self._sleep is anyio.sleep and _on_asyncio():
            sleepers = self._sleepers.get(stop)
            if sleepers is None:
                sleepers = self._sleepers[stop] = _Sleepers(stop)
            await sleepers.sleep(wait_s)
            return
        async with anyio.create_task_group() as tg:
            # a set stop cancels the sleep at once rather than after up to max_wait_s
            tg.start_soon(_cancel_when_set, stop, tg.cancel_scope)
            await self._sleep(wait_s)
            tg.cancel_scope.cancel()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio through anyio)
        return False
    return True


class _Sleepers:
    """Sleeps that one stop signal ends at once, watched by one task for all of them.

    A task group and a watcher task per sleep cost more than the send it waited for once
    thousands of senders each wait for their slot (benchmarks/bench_pool.py): here a sleep is
    one future and one timer.
    """

    def __init__(self, stop: StopEvent) -> None:
        self._stop = stop
        self._waiting: set[asyncio.Future[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def sleep(self, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(wait_s, _wake, woken)
        self._waiting.add(woken)
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch())
        try:
            await woken
        finally:
            timer.cancel()
            self._waiting.discard(woken)
            if not self._waiting and self._watcher is not None:
                self._watcher.cancel()  # no sleep left to end: no task left behind
                self._watcher = None

    async def _watch(self) -> None:
        await self._stop.wait()
        for woken in self._waiting:
            _wake(woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


async def _cancel_when_set(stop: StopEvent, scope: anyio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()
