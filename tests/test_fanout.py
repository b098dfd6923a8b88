"""``each``: many independent awaits, a bounded number at a time (a campaign's start asks the
ledger about each of thousands of accounts)."""

from __future__ import annotations

import asyncio

import pytest

from bulkdm.errors import LedgerError
from bulkdm.fanout import each


async def test_every_item_is_called_once_and_no_more_than_the_bound_at_a_time() -> None:
    running, most, done = 0, 0, []

    async def call(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        done.append(item)

    await each(range(100), call, at_once=8)
    assert sorted(done) == list(range(100))
    assert most == 8


async def test_the_first_error_is_raised_as_it_was_and_the_other_calls_stop() -> None:
    started: list[int] = []

    async def call(item: int) -> None:
        started.append(item)
        if item == 3:
            raise LedgerError("the ledger failed")
        await asyncio.sleep(10)  # would hold the test: cancelled by the error

    with pytest.raises(LedgerError, match="the ledger failed"):
        await asyncio.wait_for(each(range(1000), call, at_once=4), timeout=5)
    assert len(started) < 1000  # the items after the error were never started
