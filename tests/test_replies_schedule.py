"""A run's syncs read a conversation again only when it is due: a quiet one after a quarter of
its DM's age (at least ``sync_every``, at most a day), one that was just answered at the next
sync. The sandbox counts the history pages it serves per conversation; the DMs are sent by the
real CLI, the syncs read the sandbox over loopback into the real checkpoint, at injected times."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from pathlib import Path

from bulkdm.checkpoint import Checkpoint
from bulkdm.optouts import campaign_realm
from bulkdm.policies.rereads import due, read_ages_s, reread_interval_s, run_reads
from bulkdm.providers import open_provider
from bulkdm.providers.base import Provider, SenderAuth
from bulkdm.replies import SyncReport, sync_replies
from bulkdm.sandbox import Sandbox, SandboxConfig, running_sandbox
from bulkdm.sandbox.ledger import pair_key
from bulkdm.secrets import Secret
from bulkdm.settings import Settings, load_settings
from tests.clikit import API_KEY, bulkdm, wait_for, write_campaign

ROWS = [{"recipient_username": name, "first_name": "x"}
        for name in ("reply_ann", "quiet_bob", "quiet_cy")]
_HOUR_S = 3600.0
_DAY_S = 86400.0


def test_a_quiet_conversation_is_due_after_a_quarter_of_its_age_at_most_a_day_on() -> None:
    assert reread_interval_s(age_s=60, sync_every_s=600) == 600
    assert reread_interval_s(age_s=_HOUR_S, sync_every_s=600) == 900
    assert reread_interval_s(age_s=30 * _DAY_S, sync_every_s=600) == _DAY_S
    read_at_s = 1000.0 + _HOUR_S  # a DM at 1000 read an hour later
    times = {"dm_at_s": 1000.0, "read_at_s": read_at_s, "sync_every_s": 600}
    assert not due(now_s=read_at_s + 899, answered=False, **times)
    assert due(now_s=read_at_s + 900, answered=False, **times)
    assert due(now_s=read_at_s + 600, answered=True, **times)  # answered: the next sync
    assert due(now_s=read_at_s, dm_at_s=1000.0, read_at_s=None, answered=False,
               sync_every_s=600)  # never read, or read before bulkdm recorded when


def test_the_reads_of_a_run_grow_with_its_length_far_slower_than_its_syncs() -> None:
    ages = read_ages_s(sync_every_s=600, until_s=6 * _DAY_S)
    assert ages[:6] == [600, 1200, 1800, 2400, 3000, 3750]
    assert len(ages) < 40 and ages[-1] - ages[-2] == _DAY_S
    # 3,000 DMs over 6 days with sync_every 10m: every sync reading every sent DM read about
    # 1.3 million conversations (864 syncs of 1,500 DMs on average); on the schedule, under 90,000
    assert 3000 < run_reads(conversations=3000, sync_every_s=600, run_s=6 * _DAY_S) < 90_000
    assert run_reads(conversations=3000, sync_every_s=0, run_s=6 * _DAY_S) == 0
    assert run_reads(conversations=5, sync_every_s=600, run_s=0) == 5  # the last sync's


@asynccontextmanager
async def _sent(folder: Path, *, sync_every: str | None = None,
                ) -> AsyncIterator[tuple[Sandbox, Settings, Provider, float]]:
    """The three DMs sent by the real CLI (with ``sync_every``: its syncs read them), and
    reply_ann's three answers in; the settings with ``sync_every = "10m"``, a provider on the
    sandbox, and the time of the first DM."""
    async with running_sandbox(SandboxConfig(reply_after_ms=0)) as sb:
        extra = f'\n[replies]\nsync_every = "{sync_every}"\n' if sync_every else ""
        campaign = write_campaign(folder, ROWS, url=sb.xquik_url, extra=extra)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        assert done.code == 0, done.stdout + done.stderr
        await wait_for(lambda: len(sb.replies) == 3)
        with closing(sqlite3.connect(folder / "camp.bulkdm.sqlite")) as db:
            sent_s = float(db.execute("SELECT MIN(at_s) FROM attempts").fetchone()[0])
        settings = load_settings(campaign)
        settings = replace(settings, replies=replace(settings.replies, sync_every_s=600))
        provider = await open_provider(settings.provider, Secret(API_KEY), concurrency=4)
        try:
            yield sb, settings, provider, sent_s
        finally:
            await provider.aclose()


async def _sync(folder: Path, settings: Settings, provider: Provider, now_s: float, *,
                due_only: bool = True) -> SyncReport:
    checkpoint = await Checkpoint.open(folder / "camp.bulkdm.sqlite")
    try:
        return await sync_replies(checkpoint, settings, provider,
                                  {"alice": SenderAuth(account="alice")}, ledger=None,
                                  realm=campaign_realm(settings), now_s=lambda: now_s,
                                  due_only=due_only)
    finally:
        await checkpoint.close()


async def test_a_runs_syncs_read_a_conversation_again_only_when_it_is_due(tmp_path: Path) -> None:
    async with _sent(tmp_path) as (sb, settings, provider, sent_s):
        alice = sb.directory.register("alice")

        def reads() -> tuple[int, int, int]:
            ann, bob, cy = (sb.history_reads[pair_key(alice, sb.directory.register(r[
                "recipient_username"]))] for r in ROWS)
            return ann, bob, cy

        first_s = sent_s + _HOUR_S  # all three never read: all due
        first = await _sync(tmp_path, settings, provider, first_s)
        assert (reads(), first.new_replies, first.not_due) == ((1, 1, 1), 3, 0)
        # 10 minutes on: ann answered at the last read, so she is due; bob and cy were an
        # hour old then, so they are due 15 minutes after it
        second = await _sync(tmp_path, settings, provider, first_s + 600)
        assert (reads(), second.not_due) == ((2, 1, 1), 2)
        # ann's read found nothing new: her next is a quarter of 70 minutes on; bob's and cy's
        third = await _sync(tmp_path, settings, provider, first_s + 1000)
        assert (reads(), third.not_due) == ((2, 2, 2), 1)
        # `bulkdm replies` (not due_only) reads every one
        every = await _sync(tmp_path, settings, provider, first_s + 1001, due_only=False)
        assert (reads(), every.not_due, every.new_replies) == ((3, 3, 3), 0, 0)


async def test_a_run_on_a_days_old_campaign_does_not_read_conversations_not_due(
        tmp_path: Path) -> None:
    async with _sent(tmp_path, sync_every="10m") as (sb, _settings, _provider, _sent_s):
        campaign = tmp_path / "camp.jsonl"
        read_then = sum(sb.history_reads.values())  # the run's last sync read each once
        # the campaign as it stands eight days on, its conversations read an hour ago
        with closing(sqlite3.connect(tmp_path / "camp.bulkdm.sqlite")) as db, db:
            db.execute("UPDATE attempts SET at_s = at_s - ?", (8 * _DAY_S,))
            db.execute("UPDATE reply_reads SET read_at_s = ?, answered = 0",
                       (time.time() - _HOUR_S,))
        run = await bulkdm("run", str(campaign), "--progress", "none")
        read_by_run = sum(sb.history_reads.values()) - read_then
        due_only = await bulkdm("replies", str(campaign), "--due")
        read_by_due = sum(sb.history_reads.values()) - read_then - read_by_run
        every = await bulkdm("replies", str(campaign))
        read_by_replies = sum(sb.history_reads.values()) - read_then - read_by_run - read_by_due
    assert read_then == 3
    assert run.code == 0, run.stdout + run.stderr
    assert (read_by_run, read_by_due, read_by_replies) == (0, 0, 3)
    assert "read 0 conversations due (3 not due yet)" in due_only.stdout, due_only.stdout
    assert "read all 3 conversations" in every.stdout, every.stdout
