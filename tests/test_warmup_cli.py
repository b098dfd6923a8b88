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
from tests.clikit import bulkdm, finish, start, write_campaign

DAY = 86400.0


def _ramped(folder: Path, url: str, count: int, warmup: str = 'warmup = "10d from 20%"\n',
            first_id: int = 90_000) -> Path:
    """One sender, alice, with a daily cap of 10 on a ramp of 10 days from 20 %."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"recipient_id": str(first_id + i), "first_name": "x"} for i in range(count)]
    campaign = write_campaign(folder, rows, url=url, sender_rate="100/1s")
    settings = folder / "camp.toml"
    settings.write_text(settings.read_text().replace(
        'rate = "100/1s"\n', f'rate = "100/1s"\ndaily_cap = 10\n{warmup}'))
    return campaign


async def test_a_new_account_sends_its_first_days_share_and_says_so(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = _ramped(tmp_path, sb.xquik_url, 5)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        ramped = await bulkdm("accounts", "--sandbox")
        again = await bulkdm("run", str(campaign), "--progress", "none")
        pool = await bulkdm("accounts", "--sandbox")
        assert len(sb.ledger) == 2  # 20 % of 10 on day 0, across both runs
    assert (done.code, again.code) == (4, 4), done.stdout + done.stderr
    assert "warm-up day 0 of 10: 2/10 a day, until" in done.stdout
    # the run registered the day's ramped cap as alice's daily window: it is what holds today,
    # and the ramp is not taken of it again (it said "1/2 today")
    assert "alice: 2/100 in 100/1s, today 2/2 in 2/1d" in ramped.stdout, ramped.stdout
    assert "day 0 of 14 (14d from 20%, the default ramp, since its first send" in ramped.stdout
    assert "): 20% of a campaign's daily cap today;" in ramped.stdout, ramped.stdout
    assert re.search(r"alice: .*\n.*warm-up: day 0 of 14 \(14d from 20%, the default ramp, "
                     r"since its first send \S+\): 20% of a campaign's daily cap today; "
                     r"warmup = false stops a "
                     r"campaign's own ramp \(an established account\), but a ramping "
                     r"campaign's day cap holds for all until its registration is a day old",
                     pool.stdout), pool.stdout


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


async def test_a_new_account_ramps_by_default_and_warmup_false_opts_out(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        new = _ramped(tmp_path / "new", sb.xquik_url, 5, warmup="")
        plan = await bulkdm("plan", str(new))
        done = await bulkdm("run", str(new), "--progress", "none")
        assert len(sb.ledger) == 2  # the default ramp: 20 % of 10 on day 0
        # the same campaign (a user who sets warmup = false in the campaign that ramped, and
        # adds rows) says alice is established: its registration of the ramp's 2 a day is
        # replaced, and only its daily cap holds (10 a day, the 2 sent today included).
        # Another campaign's ramp would still hold, even one of the same name: the test below
        _ramped(tmp_path / "new", sb.xquik_url, 15, warmup="warmup = false\n")
        other = await bulkdm("run", str(new), "--amend", "--progress", "none")
        assert len(sb.ledger) == 10
    new_note = "warm-up: alice new to the account ledger: the daily cap ramps 14d from 20% (2/10"
    assert f"{new_note} on day 0" in plan.stdout, plan.stdout
    assert "opts out with warmup = false" in plan.stdout
    assert done.code == 4 and "warm-up day 0 of 14: 2/10 a day, until" in done.stdout, \
        done.stdout + done.stderr
    assert other.code == 4 and "warm-up" not in other.stdout, other.stdout


async def test_a_campaign_with_warmup_false_is_held_to_another_campaigns_ramp(
        tmp_path: Path) -> None:
    """A ramping campaign's day cap is a window of the account in the shared ledger: another
    campaign that says ``warmup = false`` is held to it too (the stricter window wins) while
    that registration is fresh."""
    async with running_sandbox() as sb:
        ramping = _ramped(tmp_path / "welcome", sb.xquik_url, 5, warmup="")
        _rename(ramping, "welcome")
        first = await bulkdm("run", str(ramping), "--progress", "none")
        assert len(sb.ledger) == 2  # the default ramp: 20 % of 10 on day 0
        known = _ramped(tmp_path / "known", sb.xquik_url, 10, warmup="warmup = false\n",
                        first_id=91_000)
        _rename(known, "known")
        other = await bulkdm("run", str(known), "--progress", "none")
        assert len(sb.ledger) == 2, other.stdout  # the day's 2 are sent: nothing more today
    assert (first.code, other.code) == (4, 4), first.stdout + other.stdout + other.stderr


def _rename(campaign: Path, name: str) -> None:
    settings = campaign.with_suffix(".toml")
    settings.write_text(settings.read_text().replace('name = "camp"', f'name = "{name}"'))


async def test_two_campaigns_at_once_from_a_new_account_share_its_ramp(tmp_path: Path) -> None:
    """The ramp's cap is the account's, in the shared ledger: two campaigns sending from one
    new account at the same time send its first day's share between them, not each."""
    async with running_sandbox() as sb:
        campaigns = []
        for name, first_id in (("welcome", 91_000), ("support", 92_000)):
            campaign = _ramped(tmp_path / name, sb.xquik_url, 5, first_id=first_id)
            settings = campaign.with_suffix(".toml")
            # one send a second: the two runs overlap, each with its day's share to send
            settings.write_text(settings.read_text().replace('name = "camp"', f'name = "{name}"')
                                .replace('rate = "100/1s"', 'rate = "1/1s"'))
            campaigns.append(campaign)
        processes = [await start("run", str(c), "--progress", "none") for c in campaigns]
        done = [await finish(p) for p in processes]
        assert len(sb.ledger) == 2, [d.stdout for d in done]  # 20 % of 10 on day 0, in all
    assert [d.code for d in done] == [4, 4], [d.stdout + d.stderr for d in done]
