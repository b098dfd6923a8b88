"""A replay whose answer settles nothing: the row stays unknown.

A send whose answer was lost (the connection cut after the delivery) is replayed under the same
key. When the replay is refused for a reason that says nothing about the first send (a 5xx, a
429), the first send may still have been delivered: the row must not fail as if it never was
(a retry file would send it again), nor be unbound and sent by another account under another
key. Both happened: QA found 12 recipients messaged twice in 200 rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bulkdm.engine import FinishReason
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.settings import RetrySettings
from tests.clikit import bulkdm, write_campaign
from tests.enginekit import open_engine, planned, settings_for, states, write_plan

#: the first send is delivered and its answer lost; the replay waits this long
RETRY = RetrySettings(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05, settle_after_s=0.3)


async def until(ready: Callable[[], bool], what: str) -> None:
    for _ in range(5000):  # 10 s at most
        if ready():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


def attempts(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


async def test_a_delivered_dm_whose_replays_fail_is_settled_not_failed(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="alice", recipient_id="8100")])
    async with running_sandbox(SandboxConfig(faults=Faults(drop_rate=1.0))) as sb:
        async with open_engine(settings_for(sb, retry=RETRY), path) as engine:
            run = asyncio.create_task(engine.run())
            await until(lambda: len(sb.ledger) == 1, "the first delivery")
            sb.reconfigure(SandboxConfig(faults=Faults(fail_rate=1.0)))  # every replay: 5xx
            report = await asyncio.wait_for(run, timeout=30.0)
        delivered = [d.recipient_id for d in sb.ledger]
    assert delivered == ["8100"]
    assert attempts(path) == RETRY.max_attempts  # the first send, and a replay refused
    # out of attempts, the conversation settled it: it was delivered. Before, it failed
    # internal_error, a failure a retry file took (and sent again)
    assert (await states(path))[1] == ("sent", "reconciled")
    assert report.finish_reason is FinishReason.COMPLETED


async def test_a_replay_refused_429_is_never_unbound_for_another_account(
    tmp_path: Path,
) -> None:
    # the row came without a sender: its claim bound it to one account, and a 429 unbinds such
    # a row (provably not delivered) for any account to send under its own key. A replay's 429
    # proves nothing about the first send: QA saw another account send it again
    path = tmp_path / "c.sqlite"
    row = planned(1, sender="x", recipient_id="8200")
    await write_plan(path, [replace(row, sender=None, idempotency_key=None)])
    seen: set[tuple[str, str | None]] = set()
    async with running_sandbox(SandboxConfig(faults=Faults(drop_rate=1.0))) as sb:
        settings = settings_for(sb, senders=("alice", "bob"), retry=RETRY)
        async with open_engine(settings, path) as engine:
            run = asyncio.create_task(engine.run())
            await until(lambda: len(sb.ledger) == 1, "the first delivery")
            sb.reconfigure(SandboxConfig(faults=Faults(rate_limit_rate=1.0)))
            # the row as the checkpoint holds it, every 2 ms, until a replay is refused and
            # after (the retry waits out the 429's Retry-After)
            def refused() -> bool:
                seen.add(row_state(path))
                return attempts(path) >= 2

            await until(refused, "a replay refused")
            for _ in range(100):
                seen.add(row_state(path))
                await asyncio.sleep(0.002)
            sb.reconfigure(SandboxConfig())
            await asyncio.wait_for(run, timeout=30.0)
        delivered = Counter((d.recipient_id, d.sender) for d in sb.ledger)
    first = next(iter(delivered))[1]
    assert ("pending", None) not in seen  # never unbound: any account could have taken it
    assert ("unknown", first) in seen
    assert len(delivered) == 1 and set(delivered.values()) == {1}, delivered
    assert (await states(path))[1][0] == "sent"


def row_state(path: Path) -> tuple[str, str | None]:
    with sqlite3.connect(path) as db:
        state, sender = db.execute("SELECT state, sender FROM rows").fetchone()
    return str(state), sender


async def test_a_retry_file_never_holds_a_row_whose_replays_failed(tmp_path: Path) -> None:
    # the path QA walked: the run ends, failed rows go to a retry file, the retry file runs
    async with running_sandbox(SandboxConfig(faults=Faults(drop_rate=1.0))) as sb:
        campaign = write_campaign(
            tmp_path, [{"recipient_id": "8300", "first_name": "Ana"}], url=sb.xquik_url,
            extra="same_error_sample = 0")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'max_attempts = 6\nbase_delay = "10ms"', 'max_attempts = 2\nbase_delay = "10ms"')
            .replace('settle_after = "50ms"', 'settle_after = "300ms"'))
        first = asyncio.create_task(bulkdm("run", str(campaign), "--progress", "none"))
        await until(lambda: len(sb.ledger) == 1, "the first delivery")
        sb.reconfigure(SandboxConfig(faults=Faults(fail_rate=1.0)))
        done = await first
        sb.reconfigure(SandboxConfig())
        exported = await bulkdm("export", str(campaign), "--status", "failed", "--as-campaign")
        retry = tmp_path / "camp.retry.jsonl"
        if retry.exists():
            await bulkdm("run", str(retry), "--config", str(settings), "--progress", "none")
        delivered = [d.recipient_id for d in sb.ledger]
    assert done.code == 0, done.stdout + done.stderr
    assert "wrote 0 rows" in exported.stdout
    assert delivered == ["8300"]
