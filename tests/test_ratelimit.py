from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from bulkdm.ratelimit import Gate, WindowLimiter, default_guard_s
from bulkdm.rates import Rate

PER_15M = Rate(count=15, period_s=900.0)
PER_DAY = Rate(count=500, period_s=86400.0)
TEN_PER_S = Rate(count=10, period_s=1.0)


def max_in_window(times: Sequence[float], width_s: float, *, closed: bool) -> int:
    """Most events in any window of ``width_s`` ([x, x+w] if closed, else [x, x+w))."""
    ordered = sorted(times)
    find = bisect.bisect_right if closed else bisect.bisect_left
    return max((find(ordered, t + width_s) - i for i, t in enumerate(ordered)), default=0)


def fill(lim: WindowLimiter, n: int, start_s: float = 0.0) -> list[float]:
    """Take ``n`` slots as early as the limiter allows, starting at ``start_s``."""
    times, now_s = [], start_s
    for _ in range(n):
        now_s = lim.next_allowed_s(now_s)
        lim.record(now_s)
        times.append(now_s)
    return times


# --- the pure core -------------------------------------------------------------------------------


def test_burst_then_wait_for_oldest_to_leave_window() -> None:
    lim = WindowLimiter([PER_15M])
    assert fill(lim, 15) == [0.0] * 15
    assert lim.next_allowed_s(0.0) == 900.0 + 1.0  # period + default guard (1 s cap)
    assert lim.next_allowed_s(2000.0) == 2000.0
    assert lim.next_slot_in_s(100.0) == 801.0


def test_default_guard() -> None:
    # at least [run] rate_guard (100 ms by default); 2 % of a long window, up to 1 s
    assert default_guard_s(TEN_PER_S) == pytest.approx(0.1)
    assert default_guard_s(TEN_PER_S, 0.02) == pytest.approx(0.02)
    assert default_guard_s(Rate(count=10, period_s=30.0)) == pytest.approx(0.6)
    assert default_guard_s(PER_15M) == 1.0
    assert default_guard_s(PER_15M, 3.0) == 3.0
    assert WindowLimiter([TEN_PER_S]).window_s(TEN_PER_S) == pytest.approx(1.1)
    assert WindowLimiter([TEN_PER_S], least_guard_s=0.05).window_s(TEN_PER_S) == 1.05
    assert WindowLimiter([TEN_PER_S], guard_s=0.5).window_s(TEN_PER_S) == 1.5
    with pytest.raises(ValueError, match="guard_s"):
        WindowLimiter([TEN_PER_S], guard_s=-1.0)
    with pytest.raises(ValueError, match="least_guard_s"):
        WindowLimiter([TEN_PER_S], least_guard_s=-1.0)


def test_guard_keeps_provider_window_under_count_despite_jitter() -> None:
    lim = WindowLimiter([TEN_PER_S], guard_s=0.02)
    times = fill(lim, 100)
    # the request may reach the provider up to guard seconds later than the slot was taken
    rng = random.Random(7)
    arrivals = [t + rng.uniform(0.0, 0.02) for t in times]
    assert max_in_window(arrivals, 1.0, closed=False) <= 10


@pytest.mark.parametrize("seed", range(5))
def test_the_default_guard_holds_one_second_windows_with_50ms_of_receiver_jitter(
        seed: int) -> None:
    # 40/1s at the smooth pace, each send stamped by the receiver 0-50 ms after it left
    rng = random.Random(seed)
    jitter_s = 0.05
    default = fill(WindowLimiter([Rate(count=40, period_s=1.0)], smooth=True), 1000)
    stamped = [t + rng.uniform(0.0, jitter_s) for t in default]
    assert max_in_window(stamped, 1.0, closed=True) <= 40
    # the old 20 ms guard did not: a send stamped late and the next one early share a window
    old = fill(WindowLimiter([Rate(count=40, period_s=1.0)], guard_s=0.02, smooth=True), 1000)
    assert max_in_window([t + rng.uniform(0.0, jitter_s) for t in old], 1.0, closed=True) > 40


def test_several_windows_at_once() -> None:
    lim = WindowLimiter([Rate(count=2, period_s=10.0), Rate(count=3, period_s=100.0)], guard_s=0.0)
    assert fill(lim, 5) == [0.0, 0.0, 10.0, 100.0, 100.0]
    assert lim.next_allowed_s(100.0) == 110.0


def test_next_allowed_equals_now_when_it_fits() -> None:
    lim = WindowLimiter([PER_15M, PER_DAY])
    lim.record(10.0)
    assert lim.next_allowed_s(12.5) == 12.5


def test_rest_until_keeps_the_latest_rest() -> None:
    lim = WindowLimiter([PER_15M])
    assert lim.resting_until_s is None
    lim.rest_until(500.0)
    lim.rest_until(300.0)
    assert lim.resting_until_s == 500.0
    assert lim.is_resting(499.0)
    assert not lim.is_resting(500.0)
    assert lim.next_allowed_s(0.0) == 500.0
    assert lim.next_allowed_s(600.0) == 600.0


def test_rest_and_full_window_take_the_later_of_the_two() -> None:
    lim = WindowLimiter([Rate(count=1, period_s=10.0)], guard_s=0.0)
    lim.record(0.0)
    lim.rest_until(4.0)
    assert lim.next_allowed_s(0.0) == 10.0
    lim.rest_until(20.0)
    assert lim.next_allowed_s(0.0) == 20.0


def test_charge_after_restart_makes_the_next_slot_wait() -> None:
    lim = WindowLimiter([PER_15M, PER_DAY])
    now_s = 1_700_000_000.0
    # the previous process sent 15 in the last five minutes (the checkpoint gives them unsorted)
    history = [now_s - 300.0 + 20.0 * i for i in range(15)]
    random.Random(1).shuffle(history)
    lim.charge(history)
    assert lim.next_allowed_s(now_s) == now_s - 300.0 + 901.0
    assert lim.used(now_s, PER_15M) == 15


def test_charge_daily_cap_after_restart() -> None:
    cap = Rate(count=3, period_s=86400.0)
    lim = WindowLimiter([cap], guard_s=0.0)
    lim.charge([100.0, 50_000.0, 80_000.0])
    assert lim.next_allowed_s(80_000.0) == 86_500.0


def test_charge_merges_with_live_history() -> None:
    lim = WindowLimiter([Rate(count=3, period_s=10.0)], guard_s=0.0)
    lim.record(5.0)
    lim.charge([1.0, 3.0])
    assert lim.next_allowed_s(5.0) == 11.0


def test_clock_stepping_back_waits_for_it_to_catch_up() -> None:
    lim = WindowLimiter([PER_15M])
    lim.record(1000.0)
    assert lim.next_allowed_s(990.0) == 1000.0


def test_late_record_is_inserted_in_order() -> None:
    lim = WindowLimiter([Rate(count=3, period_s=10.0)], guard_s=0.0)
    for t in (1.0, 5.0, 3.0):
        lim.record(t)
    assert lim.next_allowed_s(5.0) == 11.0
    lim.record(0.5)  # older than everything kept once full: it cannot matter
    assert lim.next_allowed_s(5.0) == 11.0
    lim.record(2.0)  # newer than the oldest kept: it replaces it
    assert lim.next_allowed_s(5.0) == 12.0


def test_used_counts_the_enforced_window() -> None:
    rate = Rate(count=5, period_s=10.0)
    lim = WindowLimiter([rate], guard_s=0.0)
    for t in (0.0, 2.0, 4.0, 9.0):
        lim.record(t)
    assert lim.used(9.0, rate) == 4
    assert lim.used(12.0, rate) == 2  # the window (2, 12] holds 4.0 and 9.0
    with pytest.raises(ValueError, match="not one of"):
        lim.used(9.0, TEN_PER_S)


def test_memory_is_bounded_by_the_largest_count() -> None:
    lim = WindowLimiter([Rate(count=50, period_s=1.0), Rate(count=1000, period_s=60.0)])
    times = fill(lim, 100_000)
    assert len(lim) <= 1000
    assert max_in_window(times, 1.0, closed=True) <= 50
    assert max_in_window(times, 60.0, closed=True) <= 1000


def test_old_events_are_pruned() -> None:
    lim = WindowLimiter([Rate(count=100, period_s=10.0)], guard_s=0.0)
    fill(lim, 5)
    lim.record(1000.0)
    assert len(lim) == 1
    lim.prune(2000.0)
    assert len(lim) == 0
    assert lim.last_event_s is None


def test_no_rates_always_allows_but_rests() -> None:
    lim = WindowLimiter([])
    lim.record(1.0)
    assert len(lim) == 0
    assert lim.next_allowed_s(2.0) == 2.0
    lim.rest_until(5.0)
    assert lim.next_allowed_s(2.0) == 5.0


@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_never_exceed_any_window(seed: int) -> None:
    rng = random.Random(seed)
    rates = [
        Rate(count=rng.randint(1, 20), period_s=rng.choice([0.5, 1.0, 10.0, 60.0, 900.0]))
        for _ in range(rng.randint(1, 3))
    ]
    lim = WindowLimiter(rates, guard_s=rng.choice([None, 0.0, 0.3]))
    history = [rng.uniform(0.0, 50.0) for _ in range(rng.randint(0, 5))]
    accepted = sorted(history)
    accepted = _admissible_prefix(accepted, rates)
    lim.charge(accepted)
    now_s = max(accepted, default=0.0)
    for _ in range(600):
        now_s += rng.choice([0.0, 0.0, rng.uniform(0.0, 0.2), rng.expovariate(0.05)])
        if rng.random() < 0.02:
            lim.rest_until(now_s + rng.uniform(0.0, 30.0))
        allowed_s = lim.next_allowed_s(now_s)
        assert allowed_s >= now_s
        if rng.random() < 0.7:
            now_s = allowed_s  # a caller that waits exactly as long as told
        if allowed_s <= now_s:
            lim.record(now_s)
            accepted.append(now_s)
    for rate in rates:
        window_s = lim.window_s(rate)
        assert max_in_window(accepted, window_s, closed=False) <= rate.count
        if window_s > rate.period_s:
            # any guard at all also keeps the closed window of the bare period under the count
            assert max_in_window(accepted, rate.period_s, closed=True) <= rate.count


def _admissible_prefix(times: list[float], rates: Sequence[Rate]) -> list[float]:
    # restored history must itself respect the rates for the invariant to be checkable
    kept: list[float] = []
    for t in times:
        if all(max_in_window([*kept, t], r.period_s + 1.0, closed=True) <= r.count for r in rates):
            kept.append(t)
    return kept


# --- the async gate ------------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when someone sleeps: each sleep advances it by the request."""

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self.now_s = start_s
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now_s += delay_s
        await anyio.lowlevel.checkpoint()


async def test_gate_sequential_acquires_hold_the_rate() -> None:
    fake = FakeTime()
    start_s = fake.now_s
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([TEN_PER_S])
    times = [await gate.acquire(lim) for _ in range(100)]
    taken = [t for t in times if t is not None]
    assert len(taken) == 100
    assert taken[:10] == [start_s] * 10
    assert taken[10] == pytest.approx(start_s + 1.02)
    assert max_in_window(taken, 1.0, closed=True) <= 10
    assert max(fake.sleeps) <= 1.0


async def test_gate_sleeps_are_capped_and_bounded() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep, max_wait_s=1.0)
    lim = WindowLimiter([PER_15M])
    for _ in range(16):
        await gate.acquire(lim)
    # one wait of 901 s in capped steps, not a busy loop
    assert len(fake.sleeps) == 901
    assert all(s <= 1.0 for s in fake.sleeps)


async def test_gate_takes_the_slot_on_every_limiter_at_once() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    sender = WindowLimiter([Rate(count=2, period_s=10.0)], guard_s=0.0)
    api_key = WindowLimiter([Rate(count=3, period_s=10.0)], guard_s=0.0)
    other = WindowLimiter([Rate(count=5, period_s=10.0)], guard_s=0.0)
    start_s = fake.now_s
    assert await gate.acquire(other) == start_s
    assert await gate.acquire(sender, api_key) == start_s
    assert await gate.acquire(other, api_key) == start_s
    assert await gate.acquire(sender, api_key) == start_s  # sender 2/2, api_key 3/3 now
    assert await gate.acquire(sender, other) == start_s + 10.0
    assert sender.last_event_s == other.last_event_s == start_s + 10.0
    assert api_key.last_event_s == start_s


async def test_concurrent_acquirers_on_a_shared_limiter_never_exceed_it() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep, max_wait_s=0.25)
    shared = WindowLimiter([Rate(count=7, period_s=2.0), Rate(count=40, period_s=30.0)])
    own = [WindowLimiter([Rate(count=2, period_s=1.0)]) for _ in range(12)]
    taken: list[list[float]] = [[] for _ in own]

    async def worker(i: int) -> None:
        for _ in range(15):
            t = await gate.acquire(own[i], shared)
            assert t is not None
            taken[i].append(t)

    async with anyio.create_task_group() as tg:
        for i in range(len(own)):
            tg.start_soon(worker, i)
    everything = [t for per in taken for t in per]
    assert len(everything) == 180
    assert max_in_window(everything, 2.0, closed=True) <= 7
    assert max_in_window(everything, 30.0, closed=True) <= 40
    for per in taken:
        assert max_in_window(per, 1.0, closed=True) <= 2


async def test_stop_already_set_returns_none_and_records_nothing() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([TEN_PER_S])
    stop = anyio.Event()
    stop.set()
    assert await gate.acquire(lim, stop=stop) is None
    assert len(lim) == 0


@pytest.mark.parametrize("kind", ["anyio", "asyncio"])
async def test_stop_while_waiting_returns_none_at_once(kind: str) -> None:
    async def sleep_forever(_: float) -> None:
        await anyio.sleep_forever()

    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=sleep_forever)
    lim = WindowLimiter([Rate(count=1, period_s=60.0)])
    lim.record(fake.now_s)
    stop: anyio.Event | asyncio.Event = anyio.Event() if kind == "anyio" else asyncio.Event()
    results: list[float | None] = []

    async def waiter() -> None:
        results.append(await gate.acquire(lim, stop=stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert results == []
        stop.set()
    assert results == [None]
    assert len(lim) == 1


async def test_stop_not_set_does_not_disturb_acquire() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([Rate(count=1, period_s=5.0)], guard_s=0.0)
    stop = anyio.Event()
    first = await gate.acquire(lim, stop=stop)
    second = await gate.acquire(lim, stop=stop)
    assert first is not None and second == first + 5.0


async def test_a_not_before_floor_holds_the_slot_but_never_brings_it_earlier() -> None:
    # the floor of a jittered send: later than the limiter allows is waited for; earlier than
    # it, the limiter still rules; past the deadline, nothing is taken
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([Rate(count=1, period_s=5.0)], guard_s=0.0)
    start_s = fake.now_s
    assert await gate.acquire(lim, not_before_s=start_s + 2.5) == start_s + 2.5
    assert await gate.acquire(lim, not_before_s=start_s + 3.0) == start_s + 7.5
    assert await gate.acquire(lim, not_before_s=start_s + 20.0,
                              deadline_s=start_s + 15.0) is None
    assert lim.times() == (start_s + 7.5,)  # the refused one recorded nothing
    assert lim.spacing_s == 0.0
    assert WindowLimiter([Rate(count=15, period_s=900.0)], smooth=True).spacing_s == 60.0


def test_gate_rejects_a_non_positive_max_wait() -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        Gate(max_wait_s=0.0)


# --- the concurrency slot ------------------------------------------------------------------------


async def test_slot_is_held_by_the_caller_after_acquire() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([TEN_PER_S])
    slots = asyncio.Semaphore(2)
    assert await gate.acquire(lim, slot=slots) == fake.now_s
    assert await gate.acquire(lim, slot=slots) == fake.now_s
    assert slots.locked()
    results: list[float | None] = []

    async def third() -> None:
        results.append(await gate.acquire(lim, slot=slots))

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert results == []  # waits for concurrency, not recorded yet
        assert len(lim) == 2
        fake.now_s += 5.0
        slots.release()
    # the recorded time is read after the slot was taken
    assert results == [fake.now_s]
    assert lim.last_event_s == fake.now_s


async def test_slot_is_not_held_while_the_rate_makes_the_caller_wait() -> None:
    fake = FakeTime()
    slots = asyncio.Semaphore(1)
    seen_locked: list[bool] = []

    async def watching_sleep(delay_s: float) -> None:
        seen_locked.append(slots.locked())
        await fake.sleep(delay_s)

    gate = Gate(clock=fake.clock, sleep=watching_sleep)
    lim = WindowLimiter([Rate(count=1, period_s=3.0)], guard_s=0.0)
    lim.record(fake.now_s)
    assert await gate.acquire(lim, slot=slots) == fake.now_s
    assert seen_locked == [False, False, False]
    assert slots.locked()


async def test_stop_while_waiting_for_the_slot_returns_none_and_holds_nothing() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([TEN_PER_S])
    slots = asyncio.Semaphore(1)
    await slots.acquire()  # someone else holds the only slot
    stop = anyio.Event()
    results: list[float | None] = []

    async def waiter() -> None:
        results.append(await gate.acquire(lim, stop=stop, slot=slots))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        stop.set()
        slots.release()  # as the engine does on stop: wake whoever waits for a slot
    assert results == [None]
    assert len(lim) == 0
    assert not slots.locked()  # the waiter did not keep a slot


async def test_cancelled_acquire_gives_the_slot_back() -> None:
    async def sleep_forever(_: float) -> None:
        await anyio.sleep_forever()

    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=sleep_forever)
    lim = WindowLimiter([Rate(count=1, period_s=60.0)])
    slots = asyncio.Semaphore(1)
    with anyio.move_on_after(0) as scope:
        lim.record(fake.now_s)
        await gate.acquire(lim, slot=slots)
    assert scope.cancelled_caught
    assert not slots.locked()


async def test_concurrent_acquirers_with_a_slot_never_exceed_rate_or_concurrency() -> None:
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep, max_wait_s=0.25)
    shared = WindowLimiter([Rate(count=5, period_s=1.0)])
    slots = asyncio.Semaphore(3)
    in_flight, peak, taken = 0, 0, []

    async def worker() -> None:
        nonlocal in_flight, peak
        for _ in range(10):
            t = await gate.acquire(shared, slot=slots)
            assert t is not None
            taken.append(t)
            in_flight += 1
            peak = max(peak, in_flight)
            await fake.sleep(0.3)  # the request
            in_flight -= 1
            slots.release()

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(worker)
    assert len(taken) == 80
    assert peak <= 3
    assert max_in_window(taken, 1.0, closed=True) <= 5


def test_shift_moves_an_event_to_when_its_request_left() -> None:
    lim = WindowLimiter([Rate(count=2, period_s=1.0)], guard_s=0.0)
    lim.record(10.0)
    lim.record(10.0)
    lim.shift(10.0, 10.3)
    # the window holds 10.0 and 10.3: a third fits once 10.0 leaves it, a fourth after 10.3
    assert lim.next_allowed_s(10.5) == 11.0
    lim.record(11.0)
    assert lim.next_allowed_s(11.0) == 11.3


def test_shift_of_an_unknown_time_changes_nothing() -> None:
    lim = WindowLimiter([Rate(count=1, period_s=1.0)], guard_s=0.0)
    lim.record(5.0)
    lim.shift(4.0, 6.0)
    assert lim.next_allowed_s(5.0) == 6.0


def test_smooth_spreads_a_window_over_its_period_at_the_same_pace() -> None:
    lim = WindowLimiter([Rate(count=5, period_s=1.0)], guard_s=0.02, smooth=True)
    now, times = 0.0, []
    for _ in range(11):
        now = lim.next_allowed_s(now)
        lim.record(now)
        times.append(round(now, 6))
    assert times[:5] == [0.0, 0.2, 0.4, 0.6, 0.8]  # no burst
    assert times[5] == 1.02 and times[10] == 2.04  # the window (and its guard) still rules


def test_smooth_spacing_follows_the_least_strict_rate() -> None:
    # 15/15m and a 500/1d cap: one a minute, not one every 173 s
    lim = WindowLimiter([Rate(count=15, period_s=900.0), Rate(count=500, period_s=86400.0)],
                        smooth=True)
    lim.record(0.0)
    assert lim.next_allowed_s(0.0) == 60.0


def test_forget_gives_back_a_slot_never_used() -> None:
    lim = WindowLimiter([Rate(count=1, period_s=1.0)], guard_s=0.0)
    lim.record(5.0)
    lim.forget(4.0)  # not held: nothing changes
    assert lim.next_allowed_s(5.0) == 6.0
    lim.forget(5.0)
    assert lim.next_allowed_s(5.0) == 5.0 and len(lim) == 0


# --- pending slots: requests that have not left yet ----------------------------------------------


def test_a_pending_slot_counts_as_now_until_its_request_leaves() -> None:
    lim = WindowLimiter([Rate(count=1, period_s=1.0)], guard_s=0.1)
    lim.record(0.0, pending=True)
    # its request is still held back at 5.0 (a slow commit, no connection free): it may leave
    # any moment, so the next slot is a window after now, not after 0.0
    assert lim.next_allowed_s(5.0) == pytest.approx(6.1)
    lim.shift(0.0, 5.2)  # it left at 5.2
    assert lim.next_allowed_s(5.3) == pytest.approx(6.3)


def test_a_pending_slot_whose_request_never_left_counts_from_when_it_was_taken() -> None:
    lim = WindowLimiter([Rate(count=1, period_s=1.0)], guard_s=0.1)
    lim.record(0.0, pending=True)
    lim.settle(0.0)
    assert lim.next_allowed_s(0.5) == pytest.approx(1.1)
    assert lim.times() == (0.0,)


def test_a_forgotten_pending_slot_is_given_back() -> None:
    lim = WindowLimiter([Rate(count=1, period_s=1.0)], guard_s=0.1)
    lim.record(0.0, pending=True)
    assert lim.times() == (0.0,) and lim.last_event_s == 0.0
    lim.forget(0.0)
    assert lim.next_allowed_s(0.0) == 0.0 and lim.times() == ()


def test_a_pending_slot_counts_once_in_a_window() -> None:
    # four sent and one pending in a 5/1s window: the fifth newest is still the first sent,
    # so the pace is the same as if the fifth had left already
    lim = WindowLimiter([Rate(count=5, period_s=1.0)], guard_s=0.1, smooth=True)
    for at_s in (0.0, 0.2, 0.4, 0.6):
        lim.record(at_s)
    lim.record(0.8, pending=True)
    assert lim.next_allowed_s(0.85) == pytest.approx(1.1)
    assert lim.used(0.85, Rate(count=5, period_s=1.0)) == 5


@pytest.mark.parametrize("seed", range(30))
def test_requests_that_leave_late_never_exceed_a_window_when_they_leave(seed: int) -> None:
    """Slots are taken pending; each request leaves after a delay (sometimes longer than the
    window) or fails before it leaves. Counted by when the requests left, no window holds
    more than its count (taken and counted from the grant instead, they do)."""
    rng = random.Random(seed)
    rate = Rate(count=rng.randint(1, 5), period_s=rng.choice([1.0, 2.0, 10.0]))
    lim = WindowLimiter([rate], guard_s=0.0, smooth=rng.random() < 0.5)
    now_s, left = 0.0, []
    waiting: list[tuple[float, float]] = []  # (leaves at, taken at)
    for _ in range(600):
        now_s += rng.choice([0.0, rng.uniform(0.0, 0.3), rng.expovariate(1.0)])
        if rng.random() < 0.5:  # a caller that waits as told, or until a request leaves
            now_s = max(now_s, min([lim.next_allowed_s(now_s), *(w[0] for w in waiting)]))
        for leaves_s, taken_s in sorted(w for w in waiting if w[0] <= now_s):
            waiting.remove((leaves_s, taken_s))
            if rng.random() < 0.1:
                lim.settle(taken_s)  # it failed before it left
            else:
                lim.shift(taken_s, leaves_s)
                left.append(leaves_s)
        if lim.next_allowed_s(now_s) <= now_s:
            lim.record(now_s, pending=True)
            delay_s = rng.choice([0.0, rng.uniform(0.0, 0.05), rng.uniform(0.0, 3 * rate.period_s)])
            waiting.append((now_s + delay_s, now_s))
    assert len(left) > 50
    assert max_in_window(left, rate.period_s, closed=False) <= rate.count


async def test_gate_records_a_pending_slot() -> None:
    fake = FakeTime()
    lim = WindowLimiter([Rate(count=1, period_s=1.0)], guard_s=0.0)
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    at_s = await gate.acquire(lim, pending=True)
    assert at_s == fake.now_s
    assert lim.next_allowed_s(fake.now_s + 5.0) == fake.now_s + 6.0  # still pending


async def test_many_waits_with_the_default_sleep_share_one_watcher_and_a_stop_ends_them() -> None:
    # the engine's gate (real clock, default sleep): each wait was a task group and a watcher
    # task, which cost more than a send once thousands of senders waited for their slots
    gate = Gate(max_wait_s=60.0)
    stop = asyncio.Event()
    limiters = [WindowLimiter([Rate(count=1, period_s=3600.0)]) for _ in range(50)]
    for limiter in limiters:
        limiter.record(0.0)  # far in the past of the wall clock: the first slot is free now
    assert [await gate.acquire(lim, stop=stop) for lim in limiters].count(None) == 0
    before = len(asyncio.all_tasks())
    waits = [asyncio.create_task(gate.acquire(lim, stop=stop)) for lim in limiters]
    for _ in range(5):
        await asyncio.sleep(0)
    # the 50 waits and one watcher for all of them
    assert len(asyncio.all_tasks()) - before == 50 + 1
    stop.set()
    results = await asyncio.wait_for(asyncio.gather(*waits), timeout=5.0)
    assert results == [None] * 50
    assert all(len(lim) == 1 for lim in limiters)


async def test_a_wait_with_the_default_sleep_leaves_no_task_behind() -> None:
    gate = Gate(max_wait_s=60.0)
    stop = asyncio.Event()
    limiter = WindowLimiter([Rate(count=1, period_s=0.01)], guard_s=0.0)
    before = len(asyncio.all_tasks())
    first = await gate.acquire(limiter, stop=stop)
    second = await gate.acquire(limiter, stop=stop)  # sleeps about 10 ms for its slot
    assert first is not None and second is not None
    await asyncio.sleep(0)  # the watcher, cancelled once nothing waits, ends
    assert len(asyncio.all_tasks()) == before


def test_the_pace_counts_from_when_a_pending_slot_was_taken() -> None:
    lim = WindowLimiter([Rate(count=5, period_s=1.0)], guard_s=0.1, smooth=True)
    lim.record(0.0, pending=True)
    # its request has not left at 0.05: the pace (0.2 s) counts from 0.0, the window from now
    assert lim.next_allowed_s(0.05) == pytest.approx(0.2)
    lim.shift(0.0, 0.1)  # it left at 0.1
    assert lim.next_allowed_s(0.15) == pytest.approx(0.3)


async def test_a_slot_behind_a_pending_one_at_a_pace_of_microseconds_is_not_polled_for() -> None:
    # 5/1s beside a cap of 2,000,000,000 a day: a pace of 43 µs. Counted from "now" while the
    # slot before had not left, the gate polled every 0.1 ms until it did, and that polling kept
    # the commit it waited for from running (the pace run stalled for seconds at a time)
    fake = FakeTime()
    gate = Gate(clock=fake.clock, sleep=fake.sleep)
    lim = WindowLimiter([Rate(count=5, period_s=1.0), Rate(count=2_000_000_000, period_s=86400.0)],
                        smooth=True)
    first = await gate.acquire(lim, pending=True)
    assert first is not None
    fake.now_s += 0.001  # its request has not left a millisecond later
    second = await asyncio.wait_for(gate.acquire(lim, pending=True), timeout=2.0)
    assert fake.sleeps == [] and second == first + 0.001
