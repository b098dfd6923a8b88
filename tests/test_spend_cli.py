"""The spend cap end to end: the real CLI on the sandbox; what was spent is read back from the
checkpoint, so a restart keeps counting."""

from __future__ import annotations

import signal
import sqlite3
from contextlib import closing
from pathlib import Path

from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from tests.clikit import bulkdm, env_for, finish, handoff_lines, start, wait_for, write_campaign

ROWS = [{"recipient_id": str(95_000 + i), "first_name": "x"} for i in range(10)]


def _capped(folder: Path, url: str, cap: str, provider: str = "xquik") -> Path:
    campaign = write_campaign(folder, ROWS, url=url, provider=provider, sender_rate="100/1s")
    settings = folder / "camp.toml"
    settings.write_text(settings.read_text().replace(
        'template = "Hello {first_name}"', f'template = "Hello {{first_name}}"\n{cap}'))
    return campaign


def _attempts(folder: Path) -> int:
    with closing(sqlite3.connect(folder / "camp.bulkdm.sqlite")) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


async def test_the_run_ends_at_the_credit_cap_exact_to_one_send(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        # 10 credits a DM: 5 fit in 55, the 6th would cross it
        campaign = _capped(tmp_path, sb.xquik_url, "max_credits = 55")
        plan = await bulkdm("plan", str(campaign))
        done = await bulkdm("run", str(campaign), "--progress", "none")
        again = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = len(sb.ledger)
    assert "spend cap max_credits 55: the estimate $0.0150 (100 credits) is over it" in plan.stdout
    assert (done.code, again.code) == (5, 5), done.stdout + done.stderr  # a policy stopped it
    assert "Campaign 'camp': stopped_at_spend_cap after" in done.stdout, done.stdout
    assert delivered == 5  # and the restart counted the first run's spend: nothing more
    assert ("spend cap reached: $0.0075 (50 credits) spent of max_credits 55; the next DM "
            "would cross it") in done.stdout
    assert "spend cap reached" in again.stdout


async def test_retries_count_against_the_dollar_cap(tmp_path: Path) -> None:
    faults = Faults(fail_rate=0.4, seed=3)
    async with running_sandbox(SandboxConfig(faults=faults)) as sb:
        # GetXAPI: $0.002 a DM attempt, so $0.01 pays for 5 attempts, retries included
        campaign = _capped(tmp_path, sb.getxapi_url, 'max_spend = "0.01 USD"', "getxapi")
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env_for())
        delivered = len(sb.ledger)
    assert done.code == 5, done.stdout + done.stderr
    assert "stopped_at_spend_cap" in done.stdout
    assert _attempts(tmp_path) == 5
    assert delivered < 5  # some attempts were refused with a 5xx and retried
    sent = [r for r in handoff_lines(tmp_path / "camp.handoff.jsonl") if r["send_status"] == "sent"]
    assert len(sent) == delivered


async def test_the_lookup_that_would_cross_the_cap_is_not_made(tmp_path: Path) -> None:
    rows = [{"recipient_username": f"user{i}", "first_name": "x"} for i in range(5)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="100/1s")
        settings = tmp_path / "camp.toml"
        # a lookup is 1 credit, a DM 10: three lookups fit in 3 credits, nothing more
        settings.write_text(settings.read_text().replace(
            'template = "Hello {first_name}"', 'template = "Hello {first_name}"\nmax_credits = 3'))
        done = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = len(sb.ledger)
        status = await bulkdm("status", str(campaign))
    assert done.code == 5, done.stdout + done.stderr
    assert "last run: stopped_at_spend_cap at" in status.stdout, status.stdout
    said = ("spend cap reached: $0.0004 (3 credits) spent of max_credits 3; the next username "
            "lookup would cross it")
    assert said in done.stdout
    assert delivered == 0
    with closing(sqlite3.connect(tmp_path / "camp.bulkdm.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 3


def _read_costs(folder: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(folder / "camp.bulkdm.sqlite")) as db:
        pages, results = db.execute("SELECT pages, results FROM read_costs").fetchone()
    return int(pages), int(results)


async def test_reply_reads_count_and_the_run_ends_at_the_cap(tmp_path: Path) -> None:
    # QA's run: two DMs fill the "day", then --until-done waits for it while the syncs read the
    # two conversations again and again, a credit each (the DM is all they hold). 20 credits of
    # DMs; a read reserves a full page (20) before it goes, so reads go on while at most 30 were
    # spent: the 11th read leaves 31, and the 12th would cross 50.
    campaign = write_campaign(tmp_path, ROWS[:5], url="URL", sender_rate="RATE",
                              extra='\n[replies]\nsync_every = "50ms"\n')
    settings = campaign.with_name("camp.toml")
    async with running_sandbox() as sb:
        settings.write_text(settings.read_text().replace("URL", sb.xquik_url).replace(
            'rate = "RATE"', 'rate = ["100/1s", "2/1d"]').replace(
            'template = "Hello {first_name}"', 'template = "Hello {first_name}"\nmax_credits = 50'))
        process = await start("run", str(campaign), "--until-done", "--progress", "none")
        try:
            done = await finish(process, timeout_s=30)
        finally:
            if process.returncode is None:  # without the fix it reads on for ever
                process.kill()
                await process.wait()
        read_then = sum(sb.history_reads.values())
        again = await bulkdm("run", str(campaign), "--until-done", "--progress", "none")
        delivered, read_after = len(sb.ledger), sum(sb.history_reads.values())
    assert (done.code, again.code) == (5, 5), done.stdout + done.stderr
    assert "Campaign 'camp': stopped_at_spend_cap after" in done.stdout, done.stdout
    assert ("spend cap reached: $0.0046 (31 credits) spent of max_credits 50, 11 credits of it "
            "reading replies; the next reply read would cross it") in done.stdout, done.stdout
    assert _read_costs(tmp_path) == (11, 11)
    assert read_then == 11
    # the restart counts the reads recorded: it sends nothing and reads nothing more
    assert (delivered, read_after) == (2, 11)
    assert "spend cap reached" in again.stdout, again.stdout


async def test_replies_reads_within_the_campaigns_cap_and_stops_before_crossing_it(
        tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        # GetXAPI: 3 DMs at $0.002; a first read takes dm/list's page too ($0.002), the next
        # ones $0.001: $0.009 pays for two conversations, the third would cross it
        campaign = _capped(tmp_path, sb.getxapi_url, 'max_spend = "0.009 USD"', "getxapi")
        campaign.write_text("".join(campaign.read_text().splitlines(keepends=True)[:3]))
        sent = await bulkdm("run", str(campaign), "--progress", "none", env=env_for())
        read = await bulkdm("replies", str(campaign), env=env_for())
        again = await bulkdm("replies", str(campaign), env=env_for())
        conversations_read = len(sb.history_reads)
    assert sent.code == 0, sent.stdout + sent.stderr
    assert read.code == 5, read.stdout + read.stderr
    assert ("stopped: spend cap reached: $0.0090 spent of max_spend 0.009 USD, $0.0030 of it "
            "reading replies; the next reply read would cross it") in read.stderr, read.stderr
    assert _read_costs(tmp_path) == (3, 2)  # pages, and the messages they held (the DMs)
    assert conversations_read == 2
    assert again.code == 5 and _read_costs(tmp_path) == (3, 2)  # nothing more was read


async def test_replies_with_a_spend_cap_does_not_spend_beside_a_run(tmp_path: Path) -> None:
    """``replies`` beside a run of a capped campaign: each counted against the cap without
    seeing the other's spending, and together they spent past it (QA: 233 credits of 200).
    With a cap, ``replies`` holds the run's lock: refused while a run sends."""
    async with running_sandbox() as sb:
        campaign = _capped(tmp_path, sb.xquik_url, "max_credits = 1000")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace('rate = "100/1s"', 'rate = "1/1s"'))
        running = await start("run", str(campaign), "--progress", "none", env=env_for())
        await wait_for(lambda: len(sb.ledger) >= 1)
        beside = await bulkdm("replies", str(campaign), env=env_for())
        running.send_signal(signal.SIGINT)
        await finish(running, timeout_s=15)
    assert beside.code == 1, beside.stdout + beside.stderr
    assert "is in use by another run" in beside.stderr, beside.stderr
    assert _read_costs(tmp_path) == (0, 0)  # it read nothing
