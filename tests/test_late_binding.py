"""Late binding: rows without a ``sender`` column get their account at the claim (real checkpoint
files, the sandbox over 127.0.0.1)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from bulkdm import checkpoint as cp
from bulkdm.binding import UnboundRows
from bulkdm.checkpoint import Checkpoint, Expect
from bulkdm.keys import idempotency_key
from bulkdm.rows import PlannedRow, RowRecord, RowState
from bulkdm.sandbox import running_sandbox
from bulkdm.schema import MIGRATIONS, SCHEMA_VERSION
from bulkdm.settings import ProviderName
from tests.clikit import delivered
from tests.enginekit import planned, run_engine, settings_for, write_plan


def unbound(line: int, recipient_id: str) -> PlannedRow:
    row = planned(line, sender="x", recipient_id=recipient_id)
    return replace(row, sender=None, idempotency_key=None)


async def test_of_two_claims_on_one_unbound_row_exactly_one_applies(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [unbound(1, "100")])
    checkpoint = await Checkpoint.open(path)
    try:
        [row] = await checkpoint.rows_by_ids([1])
        expect = Expect(state=RowState.PENDING, sender=None)
        claims = [cp.claim(row_id=row.id, attempt=1, sender=s, key=f"k-{s}", key_rotation=0,
                           at_s=1.0, expect=expect) for s in ("s1", "s2")]
        won = await asyncio.gather(*(checkpoint.submit(c) for c in claims))  # one batch
        [after] = await checkpoint.rows_by_ids([1])
    finally:
        await checkpoint.close()
    assert sorted(won) == [False, True]
    winner = "s1" if won[0] else "s2"
    assert (after.state, after.sender, after.idempotency_key, after.bound_by_claim) == \
        (RowState.SENDING, winner, f"k-{winner}", True)
    with sqlite3.connect(path) as db:  # the loser's attempt was undone with its claim
        assert db.execute("SELECT sender FROM attempts").fetchall() == [(winner,)]


@pytest.mark.parametrize("provider", [ProviderName.XQUIK, ProviderName.GETXAPI])
async def test_two_senders_racing_for_the_same_unbound_rows_send_each_once(
    tmp_path: Path, provider: ProviderName
) -> None:
    """Both senders' loops take from the same unbound rows at once: every row is claimed by one
    of them, with the key made for that sender, and the sandbox delivers each once."""
    path = tmp_path / "c.sqlite"
    await write_plan(path, [unbound(i, str(1000 + i)) for i in range(1, 81)])
    async with running_sandbox() as sb:
        report = await run_engine(settings_for(sb, provider=provider, senders=("s1", "s2")), path)
        ledger = await delivered(sb.root_url)
    assert report.finish_reason.value == "completed"
    assert len(ledger) == 80 and set(Counter(d.recipient_id for d in ledger).values()) == {1}
    by_sender = Counter(d.sender for d in ledger)
    assert by_sender["s1"] > 0 and by_sender["s2"] > 0  # they did share the rows
    digest = planned(1, sender="x").text_sha256 or ""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT sender, idempotency_key, recipient_id, bound_by_claim "
                          "FROM rows").fetchall()
    for sender, key, recipient, bound in rows:
        assert bound == 1 and key == idempotency_key(
            campaign="t", recipient_key=f"id:{recipient}", sender=sender, text_digest=digest)


@pytest.mark.parametrize("provider", [ProviderName.XQUIK, ProviderName.GETXAPI])
async def test_a_sender_at_its_daily_limit_leaves_its_rows_to_the_others(
    tmp_path: Path, provider: ProviderName
) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [unbound(i, str(2000 + i)) for i in range(1, 61)])
    async with running_sandbox() as sb:
        settings = settings_for(sb, provider=provider, senders=("s1", "daily1", "s2"))
        report = await run_engine(settings, path)
        ledger = await delivered(sb.root_url)
    assert report.finish_reason.value == "completed", report
    assert len(ledger) == 60 and set(Counter(d.recipient_id for d in ledger).values()) == {1}
    assert Counter(d.sender for d in ledger)["daily1"] == 3
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT state, COUNT(*) FROM rows GROUP BY state").fetchall() == \
            [("sent", 60)]


async def test_a_pinned_row_waits_for_its_resting_account(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    pinned = [planned(i, sender="daily1", recipient_id=str(3000 + i)) for i in range(1, 6)]
    await write_plan(path, [*pinned, *(unbound(i, str(3000 + i)) for i in range(6, 21))])
    async with running_sandbox() as sb:
        settings = settings_for(sb, senders=("s1", "daily1"))
        report = await run_engine(settings, path)
        ledger = await delivered(sb.root_url)
    assert report.finish_reason.value == "paused"
    assert report.detail is not None and "daily1: x_daily_limit until" in report.detail
    assert "nothing can be sent before " in report.detail and "daily1 is free again" in \
        report.detail
    sent_to = {d.recipient_id for d in ledger}
    pinned_ids = {str(3000 + i) for i in range(1, 6)}
    # every unbound row went (through s1 when daily1 was resting), and three pinned ones, by
    # daily1 alone: which three depends on the order its concurrent sends reached the sandbox
    assert len(ledger) == 18 and {str(3000 + i) for i in range(6, 21)} <= sent_to
    assert len(sent_to & pinned_ids) == 3
    assert {d.sender for d in ledger if d.recipient_id in pinned_ids} == {"daily1"}


async def test_a_version_5_checkpoint_keeps_its_plan_time_senders(tmp_path: Path) -> None:
    """Rows planned before late binding keep the sender their plan gave them (as pinned)."""
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("".join(step + ";" for step in MIGRATIONS[:5]) + "PRAGMA user_version = 5;")
        db.execute("INSERT INTO rows (line, state, sender, idempotency_key) "
                   "VALUES (1, 'pending', 'alice', 'k1')")
    checkpoint = await Checkpoint.open(path)
    try:
        [row] = await checkpoint.rows_by_ids([1])
        assert await checkpoint.unbound_rows(after_id=0, now_s=1e12, limit=10) == []
    finally:
        await checkpoint.close()
    assert (row.sender, row.idempotency_key, row.bound_by_claim) == ("alice", "k1", False)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6


@pytest.mark.parametrize("provider", [ProviderName.XQUIK, ProviderName.GETXAPI])
async def test_a_dropped_sender_leaves_the_rows_it_claimed_unbound_for_the_others(
    tmp_path: Path, provider: ProviderName
) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [unbound(i, str(4000 + i)) for i in range(1, 31)])
    async with running_sandbox() as sb:
        settings = settings_for(sb, provider=provider, senders=("reauth1", "s1"))
        report = await run_engine(settings, path)
        ledger = await delivered(sb.root_url)
    assert report.finish_reason.value == "completed", report
    assert len(ledger) == 30 and {d.sender for d in ledger} == {"s1"}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT DISTINCT state, sender FROM rows").fetchall() == [("sent", "s1")]


class _HeldScreen:
    """A screen that keeps every row, held until ``release`` is set; the pages it saw."""

    def __init__(self) -> None:
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.screens: list[int] = []

    async def screen(self, page: list[RowRecord]) -> list[RowRecord]:
        self.screens.append(len(page))
        self.entered.set()
        await self.release.wait()
        return page


async def _as_read(page: list[RowRecord]) -> list[RowRecord]:
    return page


async def _takers(rows: UnboundRows, held: _HeldScreen, count: int
                  ) -> tuple[asyncio.Task[RowRecord | None], list[asyncio.Task[RowRecord | None]]]:
    """A first taker, held in its screen, then ``count`` more that wait for it."""
    first = asyncio.create_task(rows.take(_as_read, screen=held.screen))
    await asyncio.wait_for(held.entered.wait(), timeout=10.0)
    others = [asyncio.create_task(rows.take(_as_read, screen=held.screen)) for _ in range(count)]
    for _ in range(3):
        await asyncio.sleep(0)
    return first, others


async def test_loops_that_came_during_a_screen_are_served_by_one_more_fill(tmp_path: Path) -> None:
    """Loops that start waiting while a screen runs are served by the next fill alone: it
    reads more rows when the buffer is too short for them, and screens as many as they need
    in the same fill. Screening only what was left, then reading, then screening again, made
    each row taken in a pool of 1,000 senders wait for about three fills (a wake-up each)."""
    path = tmp_path / "c.sqlite"
    await write_plan(path, [unbound(i, str(4000 + i)) for i in range(1, 401)])
    checkpoint = await Checkpoint.open(path)
    try:
        held = _HeldScreen()
        # the first taker's page of 128 is read and screened, held there
        first, others = await _takers(UnboundRows(checkpoint, time.time), held, 300)
        held.release.set()
        taken = await asyncio.wait_for(asyncio.gather(first, *others), timeout=10.0)
        assert len({row.id for row in taken if row is not None}) == 301
        assert len(held.screens) == 2, held.screens  # the first fill's, one for all who came
    finally:
        await checkpoint.close()


async def test_loops_waiting_for_a_screen_all_get_their_rows_when_it_ends(tmp_path: Path) -> None:
    """Rows are handed to many sender loops at once: the loops that waited for one read or
    screen wake together when it ends. Passed from one waiter to the next, they woke one per
    turn of the event loop, which held a pool of 2,000 senders to a few hundred rows a second."""
    path = tmp_path / "c.sqlite"
    await write_plan(path, [unbound(i, str(3000 + i)) for i in range(1, 65)])
    checkpoint = await Checkpoint.open(path)
    try:
        held = _HeldScreen()
        # the first taker's page is read, and screened: held there
        first, others = await _takers(UnboundRows(checkpoint, time.time), held, 50)
        assert not any(task.done() for task in [first, *others])
        held.release.set()
        for _ in range(5):  # a few turns of the loop, not one per waiting loop
            await asyncio.sleep(0)
        taken = [task.result() for task in [first, *others] if task.done()]
        assert len(taken) == 51
        assert len({row.id for row in taken if row is not None}) == 51
    finally:
        await checkpoint.close()
