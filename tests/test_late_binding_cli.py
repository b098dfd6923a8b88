"""Late binding end to end: the real CLI in a subprocess, the sandbox served by the test over
127.0.0.1 (its ``daily*`` senders deliver 3 DMs, then answer with their daily limit)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, env_for, handoff_lines, write_campaign
from tests.test_ledger_cli import campaign

SENDERS = ("s1", "daily1", "s2")


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_a_sender_at_its_daily_limit_leaves_its_unpinned_rows_and_the_run_completes(
    tmp_path: Path, provider: str
) -> None:
    rows = [{"recipient_id": str(40_000 + i), "first_name": "x"} for i in range(60)]
    async with running_sandbox() as sb:
        url = sb.xquik_url if provider == "xquik" else sb.getxapi_url
        campaign = write_campaign(tmp_path, rows, url=url, provider=provider, senders=SENDERS,
                                  sender_rate="20/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env_for(SENDERS))
        delivered = Counter(d.recipient_id for d in sb.ledger)
        by_sender = Counter(d.sender for d in sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == Counter(r["recipient_id"] for r in rows)  # each exactly once
    assert by_sender["daily1"] == 3 and by_sender["s1"] + by_sender["s2"] == 57
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert len(lines) == 60 and {r["send_status"] for r in lines} == {"sent"}


async def test_a_pinned_row_waits_for_its_resting_account_and_the_run_says_until_when(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, object]] = [
        {"recipient_id": str(50_000 + i), "first_name": "x", "sender": "daily1"}
        for i in range(5)]
    rows += [{"recipient_id": str(50_100 + i), "first_name": "x"} for i in range(20)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("s1", "daily1"))
        done = await bulkdm("run", str(campaign), "--progress", "none",
                            env=env_for(("s1", "daily1")))
        delivered = Counter(d.recipient_id for d in sb.ledger)
        senders = {d.recipient_id: d.sender for d in sb.ledger}
    assert done.code == 4, done.stdout + done.stderr  # paused: only a resting account can go on
    assert re.search(r"nothing can be sent before \S+, when daily1 is free again", done.stdout), \
        done.stdout
    assert set(delivered.values()) == {1} and len(delivered) == 23
    # three of its pinned rows went from daily1; the other two wait for it, none moved to s1
    pinned = {str(r["recipient_id"]) for r in rows[:5]}
    assert len(pinned & set(delivered)) == 3
    assert {senders[r] for r in pinned & set(delivered)} == {"daily1"}
    status = await bulkdm("status", str(campaign))
    assert status.code == 0 and "daily1" in status.stdout


async def test_plan_counts_what_each_account_can_still_send_by_the_ledger(tmp_path: Path) -> None:
    """Another campaign used both accounts' daily caps today: this plan's duration starts when
    the caps let them send again, not now."""
    async with running_sandbox() as sb:
        first = campaign(tmp_path / "a", "welcome", 60_000, 6, url=sb.xquik_url,
                         sender_rate="1000/1s", daily_cap=2)
        second = campaign(tmp_path / "b", "support", 61_000, 4, url=sb.xquik_url,
                          sender_rate="1000/1s", daily_cap=2)
        before = orjson.loads((await bulkdm("plan", str(second), "--json")).stdout)
        ran = await bulkdm("run", str(first), "--progress", "none")
    assert ran.code == 4, ran.stdout + ran.stderr
    after = orjson.loads((await bulkdm("plan", str(second), "--json")).stdout)
    assert before["senders"] == after["senders"] == {"s1": 2, "s2": 2}
    assert before["duration"]["seconds"] < 60, before["duration"]  # room in the caps: no wait
    assert 86_000 < after["duration"]["seconds"] < 90_000, after["duration"]
