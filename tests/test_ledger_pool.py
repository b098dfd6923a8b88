"""The engine's side of the pool: tickets from batches of reservations, settled in the
background, released when unused; a real SQLite ledger file and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bulkdm.errors import LedgerError
from bulkdm.ledger import AccountPool, Realm, Refusal, Ticket, account_subject, open_ledger
from bulkdm.ledger.base import LEASE_S, Ask, Grant
from bulkdm.ledger.pool import BATCH, GROUP
from bulkdm.ledger.sqlite import SqliteLedger
from bulkdm.rates import Rate

NOW = 1_800_000_000.0
FAST = (Rate(count=10_000, period_s=1.0),)


async def test_tickets_come_from_one_batch_and_only_sent_ones_remain(tmp_path: Path) -> None:
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts={"Alice": FAST}, key_rates=FAST,
                                      clock=lambda: NOW)
        tickets = [await pool.ticket("Alice") for _ in range(3)]
        assert all(isinstance(t, Ticket) for t in tickets)
        alice = account_subject(Realm.LIVE, "alice")
        # one batch reserved ahead, all counting as "now" until settled
        assert len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == BATCH
        first, second, third = (t for t in tickets if isinstance(t, Ticket))
        first.sent(NOW + 0.5)
        second.release()
        third.sent(NOW + 0.7)
        third.release()  # once sent, a release changes nothing
        await pool.close()
        assert await ledger.history(alice, since_s=NOW - 1, now_s=NOW + 1) == [NOW + 0.5,
                                                                             NOW + 0.7]
        assert len(await ledger.history(pool.subject(None), since_s=NOW - 1, now_s=NOW + 1)) == 2
    finally:
        await ledger.close()


async def test_a_full_window_gives_a_refusal_with_its_reason(tmp_path: Path) -> None:
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts={"alice": (Rate(count=2, period_s=10.0),)},
                                      key_rates=FAST, clock=lambda: NOW)
        assert isinstance(await pool.ticket("alice"), Ticket)
        assert isinstance(await pool.ticket("alice"), Ticket)
        refused = await pool.ticket("alice")
        assert isinstance(refused, Refusal) and refused.reason == "2/10s full"
        await pool.close()
    finally:
        await ledger.close()


async def test_tickets_asked_at_once_for_one_account_each_get_their_own(tmp_path: Path) -> None:
    # both waited for the account's batch of one, then for the key's, and both took from the
    # account's batch after it: the second found it empty (IndexError) (QA)
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts={"alice": (Rate(count=2, period_s=10.0),)},
                                      key_rates=FAST, clock=lambda: NOW)
        first, second = await asyncio.gather(pool.ticket("alice"), pool.ticket("alice"))
        assert isinstance(first, Ticket) and isinstance(second, Ticket)
        assert first.ids[0] != second.ids[0] and first.ids[1] != second.ids[1]
        assert isinstance(await pool.ticket("alice"), Refusal)  # the two are the window's 2
        await pool.close()
    finally:
        await ledger.close()


async def test_a_campaign_opened_later_with_stricter_limits_binds_the_first(tmp_path: Path) -> None:
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        loose = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="loose", api_key="k",
                                       accounts={"alice": (Rate(count=10, period_s=60.0),)},
                                       key_rates=FAST, clock=lambda: NOW)
        strict = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="strict",
                                        api_key="k",
                                        accounts={"alice": (Rate(count=3, period_s=60.0),)},
                                        key_rates=FAST, clock=lambda: NOW)
        assert strict.rates("alice") == (Rate(count=3, period_s=60.0),)
        taken = [await loose.ticket("alice") for _ in range(5)]
        assert [isinstance(t, Ticket) for t in taken] == [True] * 3 + [False] * 2
        await loose.close()
        await strict.close()
    finally:
        await ledger.close()


async def test_a_daily_cap_bounds_how_many_are_reserved_ahead(tmp_path: Path) -> None:
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        pool = await AccountPool.open(
            ledger, realm=Realm.LIVE, campaign="c", api_key="k", key_rates=FAST,
            accounts={"alice": (Rate(count=1000, period_s=1.0), Rate(count=500, period_s=86400.0))},
            clock=lambda: NOW)
        assert isinstance(await pool.ticket("alice"), Ticket)
        held = await ledger.history(pool.subject("alice"), since_s=NOW - 1, now_s=NOW)
        assert len(held) == 500 // 16  # a kill -9 now would cost the day 31 sends, not 256
        await pool.close()
    finally:
        await ledger.close()


async def test_the_next_batch_is_reserved_before_this_one_runs_out(tmp_path: Path) -> None:
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts={"alice": FAST}, key_rates=FAST,
                                      clock=lambda: NOW)
        alice = pool.subject("alice")
        used = BATCH - BATCH // 4
        for _ in range(used):
            assert isinstance(await pool.ticket("alice"), Ticket)
        # a quarter of the batch left: the next batch is on its way, without a send waiting
        for _ in range(400):  # the ledger's thread answers within moments
            if len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == 2 * BATCH:
                break
            await asyncio.sleep(0.005)
        assert len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == 2 * BATCH
        await pool.close()
        # those never handed out are released; the tickets, never settled, still count
        assert len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == used
    finally:
        await ledger.close()


async def test_a_narrowed_window_holds_for_every_campaign_and_a_later_day_widens_it(
    tmp_path: Path,
) -> None:
    """A warm-up's cap for the day is registered over the campaign's daily cap: another
    campaign on the account, opened before, keeps it too, and the next day's (larger) cap
    replaces it."""
    day = 86400.0
    daily = {"alice": (Rate(count=10, period_s=day),)}
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    try:
        other = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="other", api_key="k",
                                       accounts=daily, key_rates=FAST, clock=lambda: NOW)
        ramping = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="ramping",
                                         api_key="k", accounts=daily, key_rates=FAST,
                                         clock=lambda: NOW)
        await ramping.narrow("alice", (Rate(count=2, period_s=day),))
        taken = [await pool.ticket("alice") for pool in (other, ramping, other)]
        assert [isinstance(t, Ticket) for t in taken] == [True, True, False]
        await ramping.narrow("alice", (Rate(count=4, period_s=day),))  # the next day's share
        more = [await pool.ticket("alice") for pool in (other, ramping, ramping)]
        assert [isinstance(t, Ticket) for t in more] == [True, True, False]
        await ramping.close()
        await other.close()
    finally:
        await ledger.close()


class CountingLedger(SqliteLedger):
    """The real SQLite ledger, counting the groups of reservations it is asked for."""

    groups: list[int]

    async def reserve_many(self, asks: Sequence[Ask], *, holder: str, now_s: float,
                           lease_s: float = LEASE_S) -> list[Grant]:
        self.groups.append(len(asks))
        return await super().reserve_many(asks, holder=holder, now_s=now_s, lease_s=lease_s)


async def test_tickets_asked_for_at_once_are_reserved_in_one_transaction(tmp_path: Path) -> None:
    """A slow account (1/2s) reserves one send at a time: 40 senders asking at once go to the
    ledger together, not as 40 transactions (each a commit and an fsync, one after another on
    the ledger's thread: what held a pool of 2,000 senders to a few hundred sends a second)."""
    ledger = await CountingLedger.open(tmp_path / "l.sqlite", now_s=NOW)
    assert isinstance(ledger, CountingLedger)
    ledger.groups = []
    accounts = {f"s{n}": (Rate(count=1, period_s=2.0),) for n in range(40)}
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts=accounts, key_rates=FAST, clock=lambda: NOW)
        tickets = await asyncio.gather(*(pool.ticket(a) for a in accounts))
        assert all(isinstance(t, Ticket) for t in tickets)
        # together, but a group of at most GROUP at a time: a group's grants are sends that
        # leave at once, and a burst waits in the provider's queue, stamped later than it left
        assert sum(ledger.groups) == 41 and max(ledger.groups) <= GROUP
        assert len(ledger.groups) == -(-41 // GROUP)
        refused = await pool.ticket("s7")  # each account's one send fills its window
        assert isinstance(refused, Refusal) and refused.reason == "1/2s full"
        await pool.close()
    finally:
        await ledger.close()


class HeldBackLedger(SqliteLedger):
    """The real SQLite ledger; its ``hold_at``-th group with the API key in it waits for
    ``release`` (to line up senders behind one reservation of the key)."""

    key: str
    hold_at: int
    release: asyncio.Event
    holding: asyncio.Event

    async def reserve_many(self, asks: Sequence[Ask], *, holder: str, now_s: float,
                           lease_s: float = LEASE_S) -> list[Grant]:
        if any(a.subject == self.key for a in asks):
            self.hold_at -= 1
            if self.hold_at == 0:
                self.holding.set()
                await self.release.wait()
        return await super().reserve_many(asks, holder=holder, now_s=now_s, lease_s=lease_s)


async def test_senders_waiting_for_the_keys_next_batch_all_get_it_when_it_comes(
        tmp_path: Path) -> None:
    """The API key's batch (64: a sixteenth of its 1,024 a second) runs out under 100 senders
    asking at once: the ones waiting for the next batch wake together when it comes, not one
    per turn of the event loop (as behind a lock, with the concurrency slot held all along)."""
    ledger = await HeldBackLedger.open(tmp_path / "l.sqlite", now_s=NOW)
    assert isinstance(ledger, HeldBackLedger)
    ledger.key, ledger.hold_at = "", 2  # the key's second batch waits
    ledger.release, ledger.holding = asyncio.Event(), asyncio.Event()
    accounts = {f"s{n}": FAST for n in range(100)}
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts=accounts, key_rates=(Rate(count=1024, period_s=1.0),),
                                      clock=lambda: NOW)
        ledger.key = pool.subject(None)
        tickets = [asyncio.create_task(pool.ticket(a)) for a in accounts]
        await asyncio.wait_for(ledger.holding.wait(), timeout=10.0)
        waiting = [t for t in tickets if not t.done()]
        assert len(waiting) >= 30  # 64 had the first batch; the rest wait for the second
        ledger.release.set()
        await asyncio.wait(waiting, timeout=10.0, return_when=asyncio.FIRST_COMPLETED)
        for _ in range(3):
            await asyncio.sleep(0)
        assert all(t.done() for t in waiting)
        assert all(isinstance(t.result(), Ticket) for t in tickets)
        await pool.close()
    finally:
        await ledger.close()


class BrokenLedger(SqliteLedger):
    """The real SQLite ledger, until ``break_after`` groups: then ``reserve_many`` raises what
    aiosqlite raises once its connection is gone (a ``ValueError``, not a ``LedgerError``)."""

    break_after: int

    async def reserve_many(self, asks: Sequence[Ask], *, holder: str, now_s: float,
                           lease_s: float = LEASE_S) -> list[Grant]:
        self.break_after -= 1
        if self.break_after < 0:
            raise ValueError("Connection closed")
        return await super().reserve_many(asks, holder=holder, now_s=now_s, lease_s=lease_s)


async def test_a_reservation_that_fails_unexpectedly_fails_its_askers_and_leaves_none_waiting(
        tmp_path: Path) -> None:
    """Senders asking while a group fails with something other than a LedgerError get an error,
    not a wait without end: before, the task sending groups died with their answers unset, the
    key's batch stayed "under way", and every later ticket waited for it with its concurrency
    slot held (a run that sends nothing and never ends)."""
    ledger = await BrokenLedger.open(tmp_path / "l.sqlite", now_s=NOW)
    assert isinstance(ledger, BrokenLedger)
    ledger.break_after = 2  # the first two groups (s0, then the key) work
    slow = (Rate(count=1, period_s=2.0),)
    try:
        pool = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="c", api_key="k",
                                      accounts={f"s{n}": slow for n in range(20)},
                                      key_rates=FAST, clock=lambda: NOW)
        assert isinstance(await pool.ticket("s0"), Ticket)
        asking = [asyncio.create_task(pool.ticket(f"s{n}")) for n in range(1, 20)]
        done, waiting = await asyncio.wait(asking, timeout=10.0)
        assert not waiting
        assert all(isinstance(t.exception(), LedgerError) for t in done)
        with pytest.raises(LedgerError):  # and so does the next one, at once
            await asyncio.wait_for(pool.ticket("s1"), timeout=10.0)
        with pytest.raises(ValueError, match="Connection closed"):  # the close reports it
            await pool.close()
    finally:
        await ledger.close()


async def test_a_campaign_running_for_days_keeps_its_limits_registered(tmp_path: Path) -> None:
    """A registration counts for a day (REGISTRATION_TTL_S): a campaign that runs for days
    registers its windows again as it sends, so a campaign opened on day two still keeps to
    them. It had stopped after the first day: the looser campaign sent at its own rate."""
    ledger = await open_ledger(str(tmp_path / "l.sqlite"), now_s=NOW)
    clock = [NOW]
    strict = (Rate(count=2, period_s=10.0),)
    try:
        running = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="strict",
                                         api_key="k", accounts={"alice": strict},
                                         key_rates=FAST, clock=lambda: clock[0])
        for hours in range(1, 30):  # a send an hour, for a day and more
            clock[0] = NOW + hours * 3600.0
            ticket = await running.ticket("alice")
            assert isinstance(ticket, Ticket)
            ticket.sent(clock[0])
            await running.flush()
        later = await AccountPool.open(ledger, realm=Realm.LIVE, campaign="loose",
                                       api_key="k", accounts={"alice": FAST}, key_rates=FAST,
                                       clock=lambda: clock[0])
        assert strict[0] in later.rates("alice")  # the stricter window holds for it too
        await running.close()
        await later.close()
    finally:
        await ledger.close()
