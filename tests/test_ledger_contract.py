"""The Ledger contract, run against both backends: SQLite (a real file) and a real PostgreSQL
server started for the session (tests/conftest.py). Time is passed in: no test sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bulkdm.ledger import Ledger, Realm, account_subject, key_subject, open_ledger
from bulkdm.ledger.base import (
    LEASE_S,
    OTHER_HOLDER_MARGIN_S,
    OUTSTANDING_POLL_S,
    SETTLE_SPREAD_S,
    TURN_REASON,
    TURN_S,
    WAIT_GRACE_S,
    Ask,
    turn_holder,
    window_s,
)
from bulkdm.rates import Rate

NOW = 1_800_000_000.0
ALICE = account_subject(Realm.LIVE, "@Alice")
PER_10S = Rate(count=3, period_s=10.0)

Opener = Callable[..., Awaitable[Ledger]]


@pytest.fixture(params=["sqlite", "postgres"])
async def connect(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens a new connection to one shared ledger, as another process would."""
    spec = str(tmp_path / "ledger.sqlite") if request.param == "sqlite" else \
        request.getfixturevalue("postgres_db")
    opened: list[Ledger] = []

    async def open_one(now_s: float = NOW) -> Ledger:
        opened.append(await open_ledger(spec, now_s=now_s))
        return opened[-1]

    try:
        yield open_one
    finally:
        for ledger in opened:
            await ledger.close()


async def test_reserve_grants_what_fits_now_and_says_when_to_ask_again(connect: Opener) -> None:
    ledger = await connect()
    grant = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=5, now_s=NOW)
    assert len(grant.ids) == 3 and grant.expires_s == NOW + LEASE_S
    refused = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=1, now_s=NOW + 1)
    # unsettled reservations fill the window: they settle within moments, so ask again soon
    assert refused.ids == () and refused.next_s == pytest.approx(NOW + 1 + OUTSTANDING_POLL_S)
    assert refused.reason == "3/10s full"
    await ledger.settle([(i, NOW + 2) for i in grant.ids], [])
    refused = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=1, now_s=NOW + 3)
    assert refused.next_s == pytest.approx(NOW + 2 + window_s(PER_10S))
    later = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=5,
                                 now_s=NOW + 2 + window_s(PER_10S) + 0.01)
    assert len(later.ids) == 3


async def test_every_window_and_the_daily_cap_hold(connect: Opener) -> None:
    ledger = await connect()
    rates = [Rate(count=2, period_s=1.0), Rate(count=5, period_s=86400.0)]
    granted = []
    for step in range(40):  # one try a second, all settled at once
        grant = await ledger.reserve(ALICE, rates=rates, holder="a", want=4, now_s=NOW + step * 1.1)
        await ledger.settle([(i, NOW + step * 1.1) for i in grant.ids], [])
        granted += [NOW + step * 1.1] * len(grant.ids)
    assert len(granted) == 5
    assert max(granted.count(t) for t in granted) == 2


async def test_a_release_frees_its_slot(connect: Opener) -> None:
    ledger = await connect()
    grant = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=3, now_s=NOW)
    await ledger.settle([(grant.ids[0], NOW)], grant.ids[1:])
    again = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=3, now_s=NOW + 1)
    assert len(again.ids) == 2


async def test_a_restart_charges_from_the_ledger(connect: Opener) -> None:
    first = await connect()
    grant = await first.reserve(ALICE, rates=[PER_10S], holder="a", want=3, now_s=NOW)
    await first.settle([(grant.ids[0], NOW + 0.5), (grant.ids[1], NOW + 0.7)], [])
    await first.close()
    second = await connect()
    # settled sends at their times; the one never settled counts at "now" until its lease ends
    assert await second.history(ALICE, since_s=NOW - 10, now_s=NOW + 5) == [
        NOW + 0.5, NOW + 0.7, NOW + 5]
    assert await second.history(ALICE, since_s=NOW - 10, now_s=NOW + 99) == [
        NOW + 0.5, NOW + 0.7, NOW + LEASE_S]
    assert await second.history(ALICE, since_s=NOW + 0.6, now_s=NOW + 5) == [NOW + 0.7, NOW + 5]


async def test_a_killed_holders_lease_expires_and_its_sends_still_count(connect: Opener) -> None:
    killed, other = await connect(), await connect()
    rate = Rate(count=2, period_s=10.0)
    assert len((await killed.reserve(ALICE, rates=[rate], holder="dead", want=2,
                                     now_s=NOW)).ids) == 2
    during = await other.reserve(ALICE, rates=[rate], holder="b", want=1, now_s=NOW + 5)
    assert during.ids == () and during.next_s == pytest.approx(NOW + 5 + OUTSTANDING_POLL_S)
    # after the lease: counted as sent at its end (it may have been), and no longer than that
    # (another holder's sends count a margin longer: their requests' delays differ from ours)
    after = await other.reserve(ALICE, rates=[rate], holder="b", want=1, now_s=NOW + LEASE_S + 1)
    free_s = NOW + LEASE_S + window_s(rate) + OTHER_HOLDER_MARGIN_S
    assert after.next_s == pytest.approx(free_s)
    free = await other.reserve(ALICE, rates=[rate], holder="b", want=1, now_s=free_s + 0.01)
    assert len(free.ids) == 1


async def test_another_holders_sends_count_a_margin_longer(connect: Opener) -> None:
    mine, theirs = await connect(), await connect()
    rate = Rate(count=1, period_s=10.0)
    grant = await theirs.reserve(ALICE, rates=[rate], holder="b", want=1, now_s=NOW)
    await theirs.settle([(grant.ids[0], NOW)], [])
    edge_s = NOW + window_s(rate) + 0.01
    refused = await mine.reserve(ALICE, rates=[rate], holder="a", want=1, now_s=edge_s)
    assert refused.ids == ()
    assert refused.next_s == pytest.approx(NOW + window_s(rate) + OTHER_HOLDER_MARGIN_S)
    assert len((await theirs.reserve(ALICE, rates=[rate], holder="b", want=1,
                                     now_s=edge_s)).ids) == 1


async def test_two_processes_competing_for_one_account_never_share_a_slot(connect: Opener) -> None:
    one, two = await connect(), await connect()
    rate = Rate(count=7, period_s=60.0)

    async def grab(ledger: Ledger, holder: str) -> int:
        grants = await asyncio.gather(*(
            ledger.reserve(ALICE, rates=[rate], holder=holder, want=1, now_s=NOW + i * 0.001)
            for i in range(15)))
        return sum(len(g.ids) for g in grants)

    counts = await asyncio.gather(grab(one, "one"), grab(two, "two"))
    assert sum(counts) == 7


async def _compete(ledgers: dict[str, Ledger], rate: Rate, *, until_s: float,
                   stop_at: dict[str, float] | None = None) -> dict[str, list[float]]:
    """Holders that always want one more send of ALICE, each asking when the ledger's last
    answer said (a second at most for a wait under a minute, as the engine does), sending at once when
    granted; simulated time from NOW to ``until_s`` (a holder stops asking at ``stop_at``)."""
    asks = dict.fromkeys(ledgers, NOW)
    sent: dict[str, list[float]] = {holder: [] for holder in ledgers}
    for _ in range(20_000):
        holder, now = min(asks.items(), key=lambda item: (item[1], item[0]))
        if now >= until_s:
            return sent
        if now >= (stop_at or {}).get(holder, until_s):
            asks[holder] = until_s
            continue
        grant = await ledgers[holder].reserve(ALICE, rates=[rate], holder=holder, want=1,
                                              now_s=now)
        if grant.ids:
            await ledgers[holder].settle([(grant.ids[0], now)], [])
            sent[holder].append(now)
            asks[holder] = now + 0.001
        else:
            assert grant.next_s is not None
            wait_s = max(grant.next_s - now, 0.001)
            asks[holder] = now + (wait_s if wait_s > 60.0 else min(wait_s, 1.0))
    raise AssertionError("the simulation did not reach its end")


def _over_limit(times: list[float], rate: Rate) -> int:
    """Sends that close a window of ``rate`` (with the ledger's margin) holding too many."""
    times = sorted(times)
    return sum(1 for i, t in enumerate(times)
               if sum(1 for u in times[:i + 1] if u > t - window_s(rate)) > rate.count)


@pytest.mark.parametrize("rate", [Rate(count=1, period_s=120.0), Rate(count=5, period_s=1.0)],
                         ids=["1-in-2-minutes", "5-a-second"])
async def test_campaigns_contending_for_an_account_take_turns(connect: Opener,
                                                              rate: Rate) -> None:
    # the holder ahead sees its own sends leave a window the margin before the other does, and
    # took every slot as it freed: a second campaign on the account sent nothing for hours
    ledgers = {"a": await connect(), "b": await connect()}
    span_s = 12 * window_s(rate) if rate.count == 1 else 60.0
    sent = await _compete(ledgers, rate, until_s=NOW + span_s)
    counts = {holder: len(times) for holder, times in sent.items()}
    configured = span_s / window_s(rate) * rate.count
    assert min(counts.values()) >= 0.3 * sum(counts.values()), counts
    assert sum(counts.values()) >= 0.95 * configured, (counts, configured)  # turns keep the pace
    assert _over_limit([t for times in sent.values() for t in times], rate) == 0


async def test_a_contender_that_stops_asking_gives_up_its_turns(connect: Opener) -> None:
    ledgers = {"a": await connect(), "b": await connect()}
    rate = Rate(count=5, period_s=1.0)
    stop_s = NOW + 30.0
    sent = await _compete(ledgers, rate, until_s=NOW + 90.0, stop_at={"b": stop_s})
    assert sent["b"] and max(sent["b"]) < stop_s
    # b's last turn holds a's sends back until b has not asked for WAIT_GRACE_S, no longer
    after = [t for t in sent["a"] if t > stop_s + WAIT_GRACE_S + TURN_S]
    assert len(after) >= 0.95 * (NOW + 90.0 - stop_s - WAIT_GRACE_S - TURN_S) / window_s(rate) \
        * rate.count
    waiting = await ledgers["a"].reserve(ALICE, rates=[Rate(count=1, period_s=1e9)], holder="c",
                                         want=1, now_s=NOW + 90.0)
    assert waiting.reason != TURN_REASON  # nobody contends any more


async def test_a_turn_refusal_says_when_to_ask_again(connect: Opener) -> None:
    ledger, other = await connect(), await connect()
    rate = Rate(count=1, period_s=60.0)
    first = await ledger.reserve(ALICE, rates=[rate], holder="a", want=1, now_s=NOW)
    await ledger.settle([(first.ids[0], NOW)], [])
    # b is refused for a's send: it contends, and asks again when a's send leaves its window
    late = await other.reserve(ALICE, rates=[rate], holder="b", want=1, now_s=NOW + 1)
    assert late.ids == () and late.next_s == pytest.approx(
        NOW + window_s(rate) + OTHER_HOLDER_MARGIN_S)
    answers = {holder: await ledger.reserve(ALICE, rates=[rate], holder=holder, want=1,
                                            now_s=NOW + 2) for holder in ("a", "b")}
    turn = [h for h, g in answers.items() if g.reason != TURN_REASON]
    assert len(turn) == 1  # one of them has this turn; the other is told to ask when it ends
    other_answer = answers["b" if turn == ["a"] else "a"]
    assert other_answer.ids == ()
    assert NOW + 2 < (other_answer.next_s or 0) <= (NOW + 2) // TURN_S * TURN_S + TURN_S


async def test_the_stricter_limits_of_two_campaigns_hold(connect: Opener) -> None:
    ledger = await connect()
    loose, strict = Rate(count=10, period_s=60.0), Rate(count=3, period_s=60.0)
    await ledger.register(ALICE, campaign="welcome", rates=[loose], now_s=NOW)
    await ledger.register(ALICE, campaign="support", rates=[strict], now_s=NOW)
    limits = await ledger.limits(ALICE, now_s=NOW + 1)
    assert [(c.campaign, c.rates) for c in limits] == [("support", (strict,)),
                                                       ("welcome", (loose,))]
    grant = await ledger.reserve(ALICE, rates=[loose], holder="w", want=10, now_s=NOW + 1)
    assert len(grant.ids) == 3
    # a registration older than a day no longer binds
    assert await ledger.limits(ALICE, now_s=NOW + 86401) == []


async def test_a_campaign_registers_its_subjects_at_once_and_sees_every_campaigns_windows(
    connect: Opener,
) -> None:
    ledger, other = await connect(), await connect()
    bob = account_subject(Realm.LIVE, "@Bob")
    loose, strict = Rate(count=10, period_s=60.0), Rate(count=3, period_s=60.0)
    await other.register(ALICE, campaign="support", rates=[strict], now_s=NOW)
    limits = await ledger.register_many({ALICE: [loose], bob: [loose]}, campaign="welcome",
                                        now_s=NOW + 1)
    assert [(c.campaign, c.rates) for c in limits[ALICE]] == [("support", (strict,)),
                                                              ("welcome", (loose,))]
    assert [(c.campaign, c.rates) for c in limits[bob]] == [("welcome", (loose,))]
    # written for everyone, and again (a later run of the campaign) replaces them
    assert [c.campaign for c in await other.limits(bob, now_s=NOW + 2)] == ["welcome"]
    again = await ledger.register_many({bob: [strict]}, campaign="welcome", now_s=NOW + 3)
    assert [c.rates for c in again[bob]] == [(strict,)]


async def test_rests_bind_every_campaign_and_the_later_one_wins(connect: Opener) -> None:
    ledger, other = await connect(), await connect()
    await ledger.set_rest(ALICE, until_s=NOW + 3600, reason="x_daily_limit", now_s=NOW)
    await ledger.set_rest(ALICE, until_s=NOW + 60, reason="http_429", now_s=NOW)
    refused = await other.reserve(ALICE, rates=[PER_10S], holder="b", want=1, now_s=NOW + 10)
    assert (refused.ids, refused.next_s, refused.reason) == (
        (), NOW + 3600, "resting: x_daily_limit")
    rest = await other.rest(ALICE, now_s=NOW + 10)
    assert rest is not None and (rest.until_s, rest.reason) == (NOW + 3600, "x_daily_limit")
    assert await other.rest(ALICE, now_s=NOW + 3600) is None
    # once over, a shorter rest replaces it
    await ledger.set_rest(ALICE, until_s=NOW + 3700, reason="http_429", now_s=NOW + 3650)
    rest = await other.rest(ALICE, now_s=NOW + 3650)
    assert rest is not None and rest.reason == "http_429"


async def test_health_is_recorded_and_cleared(connect: Opener) -> None:
    ledger = await connect()
    await ledger.set_health(ALICE, state="out", reason="account_suspended", now_s=NOW)
    health = await ledger.health(ALICE)
    assert health is not None and (health.state, health.reason, health.at_s) == (
        "out", "account_suspended", NOW)
    await ledger.set_health(ALICE, state=None, reason=None, now_s=NOW + 1)
    assert await ledger.health(ALICE) is None


async def test_realms_and_keys_are_apart_and_no_key_is_stored(connect: Opener) -> None:
    ledger = await connect()
    sandbox_alice = account_subject(Realm.SANDBOX, "alice")
    key = key_subject(Realm.LIVE, "xq_secret_key_123")
    assert "xq_secret" not in key and account_subject(Realm.LIVE, "ALICE") == ALICE
    await ledger.reserve(sandbox_alice, rates=[PER_10S], holder="s", want=3, now_s=NOW)
    assert len((await ledger.reserve(ALICE, rates=[PER_10S], holder="l", want=3,
                                     now_s=NOW)).ids) == 3
    await ledger.reserve(key, rates=[PER_10S], holder="l", want=1, now_s=NOW)
    assert await ledger.subjects(realm=Realm.LIVE) == [ALICE]
    assert await ledger.subjects(realm=Realm.SANDBOX) == [sandbox_alice]
    assert await ledger.subjects(realm=Realm.LIVE, kind="key") == [key]


async def test_opt_outs_are_shared_by_id_or_username_and_removed_with_a_reason(
        connect: Opener) -> None:
    planner, replies = await connect(), await connect()
    await replies.add_opt_out(Realm.LIVE, user_id="42", username="@Stopper_A", reason="STOP",
                              source="reply:c1:m1", now_s=NOW)
    await replies.add_opt_out(Realm.LIVE, user_id=None, username="quiet", reason="asked",
                              source="manual", now_s=NOW + 1)
    # another connection (another process, another host) sees them, by either key
    assert await planner.opted_out(Realm.LIVE, user_ids=["42", "7"],
                                   usernames=["STOPPER_A", "Quiet", "other"]) == {
        "id:42", "u:stopper_a", "u:quiet"}
    assert await planner.opted_out(Realm.SANDBOX, user_ids=["42"], usernames=["quiet"]) == set()
    listed = await planner.opt_outs(Realm.LIVE)
    assert [(o.user_id, o.username, o.reason, o.source) for o in listed] == [
        ("42", "stopper_a", "STOP", "reply:c1:m1"), (None, "quiet", "asked", "manual")]
    # removing by the username lifts the id's entry too
    assert await planner.remove_opt_out(Realm.LIVE, user_id=None, username="stopper_a",
                                        reason="asked to be written again", now_s=NOW + 2) == 2
    assert await replies.opted_out(Realm.LIVE, user_ids=["42"], usernames=["stopper_a"]) == set()
    assert [o.username for o in await replies.opt_outs(Realm.LIVE)] == ["quiet"]
    # the old answer read again by a sync (said before the removal) does not revive it
    await replies.add_opt_out(Realm.LIVE, user_id="42", username="stopper_a", reason="STOP",
                              source="reply:c1:m1", now_s=NOW + 3, said_s=NOW)
    assert await planner.opted_out(Realm.LIVE, user_ids=["42"], usernames=["stopper_a"]) == set()
    # opting out again after a removal holds again
    await replies.add_opt_out(Realm.LIVE, user_id="42", username=None, reason="STOP",
                              source="reply:c2:m9", now_s=NOW + 3)
    assert await planner.opted_out(Realm.LIVE, user_ids=["42"], usernames=[]) == {"id:42"}
    assert await planner.opted_out(Realm.LIVE, user_ids=[], usernames=[]) == set()


async def test_the_first_send_is_kept_past_pruning_and_only_an_earlier_one_replaces_it(
    connect: Opener,
) -> None:
    ledger = await connect()
    assert await ledger.first_send(ALICE) is None
    grant = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=2, now_s=NOW)
    await ledger.settle([(grant.ids[1], NOW + 2)], [grant.ids[0]])  # one left, one released
    assert await ledger.first_send(ALICE) == NOW + 2
    later = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=1, now_s=NOW + 20)
    await ledger.settle([(later.ids[0], NOW + 21)], [])
    assert await ledger.first_send(ALICE) == NOW + 2
    # opened 30 days later, the sends themselves are pruned; the first send is not
    reopened = await connect(NOW + 30 * 86400)
    assert await reopened.history(ALICE, since_s=0, now_s=NOW + 30 * 86400) == []
    assert await reopened.first_send(ALICE) == NOW + 2


async def test_sends_are_kept_as_long_as_the_longest_window_a_campaign_registered(
    connect: Opener,
) -> None:
    # every open prunes the sends no window can count: they were kept 8 days whatever the
    # windows, and a campaign's 30-day cap forgot its sends after 8 (QA: 2 of 2/30d sent, and
    # 2 more granted on day 9)
    day, bob = 86400.0, account_subject(Realm.LIVE, "bob")
    monthly = [Rate(count=2, period_s=30 * day)]
    ledger = await connect()
    await ledger.register(ALICE, campaign="monthly", rates=monthly, now_s=NOW)
    await ledger.register(bob, campaign="daily", rates=[Rate(count=5, period_s=day)], now_s=NOW)
    sent = []
    for subject in (ALICE, bob):
        grant = await ledger.reserve(subject, rates=monthly, holder="a", want=2, now_s=NOW)
        sent += [(i, NOW + 1) for i in grant.ids]
    await ledger.settle(sent, [])
    later = NOW + 9 * day
    reopened = await connect(later)  # opening prunes
    assert await reopened.history(ALICE, since_s=0, now_s=later) == [NOW + 1, NOW + 1]
    refused = await reopened.reserve(ALICE, rates=monthly, holder="b", want=1, now_s=later)
    assert refused.ids == () and refused.next_s is not None and refused.next_s > NOW + 30 * day
    # 30 days and a day on, the pruning takes them (and bob's with them: one horizon for all)
    gone = NOW + 32 * day
    last = await connect(gone)
    assert await last.history(ALICE, since_s=0, now_s=gone) == []
    assert await last.history(bob, since_s=0, now_s=gone) == []


async def test_a_settlement_naming_more_of_a_grant_than_it_holds_keeps_the_windows(
    connect: Opener,
) -> None:
    # a caller's mistake (an id released twice, or one past the grant): SQLite took the whole
    # release from the subject's total, which fell under the truth for good, and the count's
    # shortcut (total + want within the window) granted past a daily cap of 4: 6 (QA)
    day = [Rate(count=4, period_s=86400.0)]
    ledger = await connect()
    granted = 0
    for step in range(1, 7):
        grant = await ledger.reserve(ALICE, rates=day, holder="a", want=1, now_s=NOW + step)
        if grant.ids:
            granted += 1
            [unit] = grant.ids
            await ledger.settle([(unit, NOW + step)], [unit, unit + 1])
    assert granted == 4
    assert len(await ledger.history(ALICE, since_s=NOW, now_s=NOW + 7)) == 4


async def test_one_settlement_of_several_accounts_keeps_each_ones_earliest_send(
    connect: Opener,
) -> None:
    ledger = await connect()
    bob = account_subject(Realm.LIVE, "bob")
    alice = await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=3, now_s=NOW)
    bobs = await ledger.reserve(bob, rates=[PER_10S], holder="a", want=2, now_s=NOW)
    assert len({*alice.ids, *bobs.ids}) == 5
    await ledger.settle([(alice.ids[0], NOW + 3), (bobs.ids[0], NOW + 2),
                         (alice.ids[1], NOW + 1), (bobs.ids[1], NOW + 4)], [alice.ids[2]])
    assert await ledger.first_send(ALICE) == NOW + 1
    assert await ledger.first_send(bob) == NOW + 2
    assert await ledger.history(ALICE, since_s=NOW - 1, now_s=NOW + 5) == [NOW + 1, NOW + 3]
    assert await ledger.history(bob, since_s=NOW - 1, now_s=NOW + 5) == [NOW + 2, NOW + 4]


async def test_a_grants_sends_count_each_at_its_time_unless_moments_apart(
    connect: Opener,
) -> None:
    # a grant is one row, and its sends settled together a row a group: sends within
    # SETTLE_SPREAD_S of each other count at the latest of them (the safe side), others apart
    ledger = await connect()
    rate = Rate(count=3, period_s=10.0)
    grant = await ledger.reserve(ALICE, rates=[rate], holder="a", want=3, now_s=NOW)
    close_s = NOW + SETTLE_SPREAD_S / 2
    await ledger.settle([(grant.ids[2], NOW + 4), (grant.ids[0], NOW), (grant.ids[1], close_s)],
                        [])
    assert await ledger.history(ALICE, since_s=NOW - 1, now_s=NOW + 5) == [
        close_s, close_s, NOW + 4]
    assert await ledger.first_send(ALICE) == NOW  # the real first send
    refused = await ledger.reserve(ALICE, rates=[rate], holder="a", want=1, now_s=NOW + 5)
    assert refused.next_s == pytest.approx(close_s + window_s(rate))
    # the group leaves the window as two sends; the one four seconds later still counts
    two = await ledger.reserve(ALICE, rates=[rate], holder="a", want=3,
                               now_s=close_s + window_s(rate) + 0.001)
    assert len(two.ids) == 2


async def test_a_grant_settled_over_several_settlements_holds_what_is_left(
    connect: Opener,
) -> None:
    ledger = await connect()
    day = Rate(count=6, period_s=86400.0)
    grant = await ledger.reserve(ALICE, rates=[day], holder="a", want=4, now_s=NOW)
    await ledger.settle([(grant.ids[0], NOW + 1)], [])
    await ledger.settle([], [grant.ids[3]])
    # one sent, two still held (counted "now"), one released: room for three of six, however
    # the ledger counts (a total kept short of the truth would grant four)
    assert await ledger.history(ALICE, since_s=NOW - 1, now_s=NOW + 2) == [
        NOW + 1, NOW + 2, NOW + 2]
    more = await ledger.reserve(ALICE, rates=[day], holder="a", want=4, now_s=NOW + 2)
    assert len(more.ids) == 3
    await ledger.settle([(grant.ids[1], NOW + 3)], [grant.ids[2], *more.ids])
    assert await ledger.history(ALICE, since_s=NOW - 1, now_s=NOW + 4) == [NOW + 1, NOW + 3]
    assert len((await ledger.reserve(ALICE, rates=[day], holder="a", want=9,
                                     now_s=NOW + 4)).ids) == 4


async def test_a_stale_settlement_of_a_pruned_grant_touches_no_other_grant(
    connect: Opener,
) -> None:
    # a process paused for days (a laptop asleep) settles a grant the pruning removed: no grant
    # given since may have its id (SQLite gave the largest row id again once it was gone)
    paused = await connect()
    stale = await paused.reserve(ALICE, rates=[PER_10S], holder="paused", want=3, now_s=NOW)
    later_s = NOW + 9 * 86400
    other = await connect(later_s)
    bob = account_subject(Realm.LIVE, "bob")
    day = Rate(count=3, period_s=86400.0)
    bobs = await other.reserve(bob, rates=[day], holder="b", want=3, now_s=later_s)
    assert not set(bobs.ids) & set(stale.ids)
    await paused.settle([(i, later_s) for i in stale.ids[:2]], stale.ids[2:])
    await other.settle([(i, later_s + 1) for i in bobs.ids], [])
    assert await other.history(bob, since_s=NOW, now_s=later_s + 2) == [later_s + 1] * 3
    assert (await other.reserve(bob, rates=[day], holder="b", want=1,
                                now_s=later_s + 2)).ids == ()


async def test_a_group_of_reservations_is_granted_as_one_after_another(connect: Opener) -> None:
    ledger = await connect()
    bob = account_subject(Realm.LIVE, "bob")
    grants = await ledger.reserve_many(
        [Ask(subject=ALICE, rates=(PER_10S,), want=2), Ask(subject=bob, rates=(PER_10S,), want=1),
         Ask(subject=ALICE, rates=(PER_10S,), want=2)], holder="a", now_s=NOW)
    # the second ask of ALICE sees the first one's two as reserved: one more fits
    assert [len(g.ids) for g in grants] == [2, 1, 1]
    assert len({i for g in grants for i in g.ids}) == 4
    refused = await ledger.reserve(ALICE, rates=[PER_10S], holder="b", want=1, now_s=NOW + 1)
    assert refused.ids == () and refused.reason == "3/10s full"
    other = await connect()  # another process sees the whole group
    assert len(await other.history(ALICE, since_s=NOW - 1, now_s=NOW)) == 3
    assert len(await other.history(bob, since_s=NOW - 1, now_s=NOW)) == 1


async def test_each_ask_of_a_group_gets_its_own_answer_and_its_wait_is_written(
    connect: Opener,
) -> None:
    # a group decides every ask before it writes its grants and waiters: each grant, rest and
    # refusal must reach its own ask, and the refused holder's wait must reach the ledger
    ledger, other = await connect(), await connect()
    bob, carol, dave = (account_subject(Realm.LIVE, name) for name in ("bob", "carol", "dave"))
    one = Rate(count=1, period_s=60.0)
    taken = await other.reserve(ALICE, rates=[one], holder="b", want=1, now_s=NOW)
    await other.settle([(taken.ids[0], NOW)], [])
    await other.set_rest(carol, until_s=NOW + 600, reason="http_429", now_s=NOW)
    grants = await ledger.reserve_many(
        [Ask(subject=bob, rates=(PER_10S,), want=1), Ask(subject=ALICE, rates=(one,), want=1),
         Ask(subject=carol, rates=(PER_10S,), want=1), Ask(subject=dave, rates=(PER_10S,), want=2)],
        holder="a", now_s=NOW + 1)
    assert [len(g.ids) for g in grants] == [1, 0, 0, 2]
    assert grants[1].reason == f"{one} full"
    assert grants[1].next_s == pytest.approx(NOW + window_s(one) + OTHER_HOLDER_MARGIN_S)
    assert (grants[2].reason, grants[2].next_s) == ("resting: http_429", NOW + 600)
    await ledger.settle([(grants[0].ids[0], NOW + 1)], released=list(grants[3].ids))
    assert len(await other.history(bob, since_s=NOW, now_s=NOW + 2)) == 1
    assert await other.history(dave, since_s=NOW, now_s=NOW + 2) == []
    assert await other.history(carol, since_s=NOW, now_s=NOW + 2) == []
    # a contends for ALICE now: in a turn of a's, b is refused though the window has room
    turns = [t for t in (NOW + 2 + k * TURN_S for k in range(6))
             if turn_holder(["a", "b"], t) == "a"]
    assert turns
    refused = await other.reserve(ALICE, rates=[Rate(count=9, period_s=1.0)], holder="b",
                                  want=1, now_s=turns[0])
    assert (refused.ids, refused.reason) == ((), TURN_REASON)


async def test_a_new_sqlite_ledger_opened_while_another_process_writes_it_waits(
    tmp_path: Path,
) -> None:
    # two campaigns started at once on a new ledger: the second's switch to WAL found the first
    # writing its schema, and SQLite said "database is locked" without waiting
    path = tmp_path / "ledger.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE other_process (x)")
        opening = asyncio.create_task(open_ledger(str(path), now_s=NOW))
        await asyncio.sleep(0.3)
        assert not opening.done(), opening.exception() if opening.done() else None
        other.execute("COMMIT")
    finally:
        other.close()
    ledger = await opening
    try:
        assert (await ledger.reserve(ALICE, rates=[PER_10S], holder="a", want=1, now_s=NOW)).ids
    finally:
        await ledger.close()


async def test_a_sqlite_ledger_from_before_the_totals_counts_what_it_holds(
    tmp_path: Path,
) -> None:
    # a window is counted only when the subject's reservations (the "totals" a trigger keeps)
    # might not leave room: totals short of the truth would let a window overfill
    path = tmp_path / "ledger.sqlite"
    ledger = await open_ledger(str(path), now_s=NOW)
    day = Rate(count=5, period_s=86400.0)
    first = await ledger.reserve(ALICE, rates=[day], holder="a", want=4, now_s=NOW)
    await ledger.settle([(i, NOW) for i in first.ids], [])
    await ledger.close()
    old = sqlite3.connect(path, isolation_level=None)  # as a ledger of an earlier bulkdm
    old.execute("DROP TABLE totals")
    old.close()
    ledger = await open_ledger(str(path), now_s=NOW + 1)
    try:
        six = [Rate(count=6, period_s=86400.0)]
        assert len((await ledger.reserve(ALICE, rates=six, holder="b", want=3,
                                         now_s=NOW + 1)).ids) == 2  # filled in from the file
        seven = [Rate(count=7, period_s=86400.0)]
        third = await ledger.reserve(ALICE, rates=seven, holder="b", want=3, now_s=NOW + 2)
        assert len(third.ids) == 1  # the total counted the two before
        await ledger.settle([], third.ids)
        assert len((await ledger.reserve(ALICE, rates=seven, holder="b", want=3,
                                         now_s=NOW + 3)).ids) == 1
    finally:
        await ledger.close()
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT n FROM totals").fetchall() == check.execute(
            "SELECT SUM(units) FROM reservations").fetchall() == [(7,)]
    finally:
        check.close()


async def test_the_campaigns_token_passes_only_from_the_token_it_holds(connect: Opener) -> None:
    one, two = await connect(), await connect()
    assert await one.run_token("c1") is None
    assert await one.pass_run("c1", from_token=None, to_token="t1", now_s=NOW)
    # a second checkpoint that read "none" too loses: the first passed it meanwhile
    assert not await two.pass_run("c1", from_token=None, to_token="x1", now_s=NOW)
    assert await two.run_token("c1") == "t1"
    assert await two.pass_run("c1", from_token="t1", to_token="t2", now_s=NOW + 1)
    assert not await one.pass_run("c1", from_token="t1", to_token="t3", now_s=NOW + 2)
    assert await one.run_token("c1") == "t2" and await one.run_token("c2") is None
    assert not await one.pass_run("c2", from_token="t2", to_token="t4", now_s=NOW)


#: the reservations table of a bulkdm that wrote a row a reservation
_ROW_A_RESERVATION = {
    "sqlite": ("CREATE TABLE reservations (id INTEGER PRIMARY KEY, subject TEXT NOT NULL, "
               "holder TEXT NOT NULL, reserved_s REAL NOT NULL, at_s REAL NOT NULL, "
               "sent INTEGER NOT NULL DEFAULT 0); CREATE INDEX reservations_window ON "
               "reservations (subject, at_s, holder, sent); CREATE TABLE totals (subject TEXT "
               "PRIMARY KEY, n INTEGER NOT NULL); CREATE TRIGGER totals_insert AFTER INSERT ON "
               "reservations BEGIN INSERT INTO totals VALUES (new.subject, 1) ON CONFLICT "
               "(subject) DO UPDATE SET n = n + 1; END;"),
    "postgres": ("CREATE TABLE bulkdm_reservations (id BIGSERIAL PRIMARY KEY, subject TEXT NOT "
                 "NULL, holder TEXT NOT NULL, reserved_s DOUBLE PRECISION NOT NULL, at_s DOUBLE "
                 "PRECISION NOT NULL, sent BOOLEAN NOT NULL DEFAULT FALSE);"),
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_ledger_of_a_row_a_reservation_is_upgraded_and_counts_what_it_holds(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    spec = str(tmp_path / "ledger.sqlite") if backend == "sqlite" else \
        request.getfixturevalue("postgres_db")
    table = "reservations" if backend == "sqlite" else "bulkdm_reservations"
    sent = "1" if backend == "sqlite" else "TRUE"
    _sql(backend, spec, _ROW_A_RESERVATION[backend] + "".join(
        f"INSERT INTO {table} (subject, holder, reserved_s, at_s, sent) VALUES "
        f"('{ALICE}', 'old', {NOW - 9}, {at_s}, {flag});"
        for at_s, flag in [(NOW - 2, sent), (NOW - 1, sent), (NOW + LEASE_S, "0" if
                                                             backend == "sqlite" else "FALSE")]))
    old_insert = (f"INSERT INTO {table} (subject, holder, reserved_s, at_s) "
                  f"VALUES ('{ALICE}', 'old', {NOW}, {NOW + LEASE_S});")
    # a command that only reads it (accounts, plan, optouts) reads it as it is, and leaves it
    # to that bulkdm's runs: upgrading it would stop them
    reader = await open_ledger(spec, now_s=NOW)
    try:
        assert await reader.history(ALICE, since_s=NOW - 9, now_s=NOW) == [NOW - 2, NOW - 1, NOW]
    finally:
        await reader.close()
    _sql(backend, spec, old_insert)
    _sql(backend, spec, f"DELETE FROM {table} WHERE at_s = {NOW + LEASE_S} AND id > 3;")
    # a run upgrades it
    ledger = await open_ledger(spec, now_s=NOW, upgrade=True)
    try:
        # two sent and one a killed process held: each of the old rows is one send
        assert await ledger.history(ALICE, since_s=NOW - 9, now_s=NOW) == [NOW - 2, NOW - 1, NOW]
        day = Rate(count=5, period_s=86400.0)
        assert len((await ledger.reserve(ALICE, rates=[day], holder="b", want=5,
                                         now_s=NOW)).ids) == 2
    finally:
        await ledger.close()
    # a process of that bulkdm still running fails at its next reservation, rather than
    # counting a grant of many as one send
    with pytest.raises(AssertionError, match="reserved_s"):
        _sql(backend, spec, old_insert)


def _sql(backend: str, spec: str, script: str) -> None:
    """Run ``script`` on the ledger as another program would (an AssertionError with the
    database's message if it fails)."""
    if backend == "sqlite":
        db = sqlite3.connect(spec, isolation_level=None)
        try:
            db.executescript(script)
        except sqlite3.Error as exc:
            raise AssertionError(str(exc)) from exc
        finally:
            db.close()
        return
    done = subprocess.run(["psql", spec, "-q", "-v", "ON_ERROR_STOP=1", "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
