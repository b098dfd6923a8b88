"""The engine's side of the pool: tickets from batches of reservations, settled in the
background, released when unused; a real SQLite ledger file and a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bulkdm.ledger import AccountPool, Realm, Refusal, Ticket, account_subject, open_ledger
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
        assert len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == 64
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
        assert len(held) == 500 // 16  # a kill -9 now would cost the day 31 sends, not 64
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
        for _ in range(48):
            assert isinstance(await pool.ticket("alice"), Ticket)
        # 16 left of 64: the next 64 are on their way, without a send waiting for them
        for _ in range(400):  # the ledger's thread answers within moments
            if len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == 128:
                break
            await asyncio.sleep(0.005)
        assert len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == 128
        await pool.close()
        # the 80 never handed out are released; the 48 tickets, never settled, still count
        assert len(await ledger.history(alice, since_s=NOW - 1, now_s=NOW)) == 48
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
