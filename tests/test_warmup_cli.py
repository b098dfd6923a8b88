"""Warm-up end to end: the real CLI on the sandbox, the ramp counted from the account's first
send in the shared ledger (a real SQLite file in the test's state folder)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from bulkdm.ledger import Realm, account_subject, open_ledger
from bulkdm.rates import Rate
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, write_campaign

DAY = 86400.0


def _ramped(folder: Path, url: str, count: int) -> Path:
    """One sender, alice, with a daily cap of 10 on a ramp of 10 days from 20 %."""
    rows = [{"recipient_id": str(90_000 + i), "first_name": "x"} for i in range(count)]
    campaign = write_campaign(folder, rows, url=url, sender_rate="100/1s")
    settings = folder / "camp.toml"
    settings.write_text(settings.read_text().replace(
        'rate = "100/1s"\n', 'rate = "100/1s"\ndaily_cap = 10\nwarmup = "10d from 20%"\n'))
    return campaign


async def test_a_new_account_sends_its_first_days_share_and_says_so(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = _ramped(tmp_path, sb.xquik_url, 5)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        again = await bulkdm("run", str(campaign), "--progress", "none")
        pool = await bulkdm("accounts", "--sandbox")
        assert len(sb.ledger) == 2  # 20 % of 10 on day 0, across both runs
    assert (done.code, again.code) == (4, 4), done.stdout + done.stderr
    assert "warm-up day 0 of 10: 2/10 a day, until" in done.stdout
    assert re.search(r"alice: .*\n.*warm-up, where a campaign sets it: day 0 of 14 \(14d from "
                     r"20%, since its first send "
                     r"\S+\): 2/10 today", pool.stdout), pool.stdout


async def test_the_ramp_counts_from_the_first_send_in_the_ledger(tmp_path: Path) -> None:
    now = time.time()
    state = Path(os.environ["XDG_STATE_HOME"]) / "bulkdm" / "ledger.sqlite"
    ledger = await open_ledger(str(state), now_s=now)
    try:  # alice first sent three days ago, from another campaign
        alice = account_subject(Realm.SANDBOX, "alice")
        grant = await ledger.reserve(alice, rates=[Rate(count=10, period_s=DAY)], holder="old",
                                     want=1, now_s=now - 3 * DAY - 60)
        await ledger.settle([(grant.ids[0], now - 3 * DAY - 60)], [])
    finally:
        await ledger.close()
    async with running_sandbox() as sb:
        campaign = _ramped(tmp_path, sb.xquik_url, 6)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        assert len(sb.ledger) == 4  # day 3: 20 % + 80 % * 3/10 = 44 % of 10
    assert done.code == 4, done.stdout + done.stderr
    assert "warm-up day 3 of 10: 4/10 a day" in done.stdout
