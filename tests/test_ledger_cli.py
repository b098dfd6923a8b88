"""The account pool end to end: the real CLI in subprocesses, the sandbox served by the test over
127.0.0.1, its delivery ledger read over HTTP (``GET /_sandbox/ledger``)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from bulkdm.rates import Rate
from bulkdm.sandbox import SandboxConfig, running_sandbox
from tests.clikit import (
    Done,
    bulkdm,
    delivered,
    env_for,
    finish,
    kill_when,
    start,
    wait_for,
    windows_over,
    write_campaign,
)

SENDERS = ("s1", "s2")
#: a window with a guard (2 % of it) wider than the jitter of a first request's delivery to a
#: sandbox in a busy test process (measured up to 80 ms); the senders send one every 2.5 s
TWO_PER_5S = Rate(count=2, period_s=5.0)


def campaign(folder: Path, name: str, first_id: int, count: int, *, url: str,
             sender_rate: str = "2/5s", daily_cap: int | None = None) -> Path:
    """A campaign called ``name`` in its own folder, on the senders every campaign here shares."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"recipient_id": str(first_id + i), "first_name": "x"} for i in range(count)]
    path = write_campaign(folder, rows, url=url, senders=SENDERS, sender_rate=sender_rate)
    settings = path.with_suffix(".toml")
    text = settings.read_text(encoding="utf-8").replace('name = "camp"', f'name = "{name}"')
    if daily_cap is not None:
        # these campaigns test the cap itself: the accounts are established, not ramping
        text = text.replace(f'rate = "{sender_rate}"\n',
                            f'rate = "{sender_rate}"\ndaily_cap = {daily_cap}\nwarmup = false\n')
    settings.write_text(text, encoding="utf-8")
    return path


async def run_together(*campaigns: Path, envs: Sequence[Mapping[str, str]]) -> list[Done]:
    processes = [await start("run", str(c), "--progress", "none", env=e)
                 for c, e in zip(campaigns, envs, strict=True)]
    return list(await asyncio.gather(*(finish(p) for p in processes)))


def pool_env(**extra: str) -> dict[str, str]:
    return {**env_for(SENDERS), **extra}


async def test_two_campaigns_at_once_on_the_same_senders_keep_every_window(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        welcome = campaign(tmp_path / "a", "welcome", 1000, 6, url=sb.xquik_url)
        support = campaign(tmp_path / "b", "support", 2000, 6, url=sb.xquik_url)
        done = await run_together(welcome, support, envs=[pool_env(), pool_env()])
        ledger = await delivered(sb.root_url)
    assert [d.code for d in done] == [0, 0], [d.stdout + d.stderr for d in done]
    assert len(ledger) == 12 and set(Counter(d.recipient_id for d in ledger).values()) == {1}
    # each campaign alone keeps 2/5s per sender; together they must too
    assert windows_over(ledger, TWO_PER_5S) == []


async def test_two_campaigns_in_a_row_keep_the_daily_cap_together(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        first = campaign(tmp_path / "a", "welcome", 3000, 6, url=sb.xquik_url,
                         sender_rate="1000/1s", daily_cap=2)
        second = campaign(tmp_path / "b", "support", 4000, 6, url=sb.xquik_url,
                          sender_rate="1000/1s", daily_cap=2)
        one = await bulkdm("run", str(first), "--progress", "none")
        two = await bulkdm("run", str(second), "--progress", "none")
        status = await bulkdm("status", str(first))
        ledger = await delivered(sb.root_url)
    assert one.code == 4 and two.code == 4, one.stdout + two.stdout  # paused: caps reached
    # rows are left, each sender at its cap: none is "done", the rows are not "ready"
    # and each says why and when it is free again: the day's cap, not "next now"
    assert re.search(r"sender s1: paused \(2/1d window full until [^)]*\(1d00h\)\), 2 sent, 0 left, "
                     r"next in (23h59m|1d00h)", status.stdout), status.stdout
    assert re.search(r"sender \(any sender\): paused \(every sender waits; [^)]*\), 0 sent, 2 left, "
                     r"next in (23h59m|1d00h)", status.stdout), status.stdout
    assert Counter(d.sender for d in ledger) == {"s1": 2, "s2": 2}
    assert all(len([d for d in ledger if d.sender == s and d.recipient_id.startswith("4")]) == 0
               for s in SENDERS)
    assert "next slot at" in two.stdout
    # the summary's time is the ledger's (the day full, all campaigns), not this run's own
    # limiters' (it sent nothing): it said "(in 0s)"
    again = re.search(r"Next send possible at .* \(in ([^)]*)\)", two.stdout)
    assert again is not None and again.group(1) in ("1d00h", "23h59m"), two.stdout
    pool = orjson.loads((await bulkdm("accounts", "--sandbox", "--json")).stdout)
    views = {a["account"]: a for a in pool["accounts"]}
    assert set(views) == {"s1", "s2"}
    windows = {w["rate"]: (w["used"], w["limit"], w["daily"]) for w in views["s1"]["windows"]}
    assert set(windows) == {"1000/1s", "2/1d"} and windows["2/1d"] == (2, 2, True)
    assert views["s1"]["campaigns"] == ["support", "welcome"]
    live = orjson.loads((await bulkdm("accounts", "--json")).stdout)
    assert live["accounts"] == []  # sandbox runs never charge a live account


async def test_a_ledger_that_lost_the_campaigns_sends_does_not_reopen_its_day(
    tmp_path: Path,
) -> None:
    """The same command resumed where the ledger is another file (cron's or a container's
    XDG_STATE_HOME; or the ledger deleted): the checkpoint's own sends still count, so the day
    its cap filled stays full."""
    async with running_sandbox() as sb:
        capped = campaign(tmp_path / "a", "welcome", 5000, 8, url=sb.xquik_url,
                          sender_rate="1000/1s", daily_cap=2)
        one = await bulkdm("run", str(capped), "--progress", "none")
        elsewhere = pool_env(BULKDM_LEDGER=str(tmp_path / "another-ledger.sqlite"))
        two = await bulkdm("run", str(capped), "--progress", "none", env=elsewhere)
        ledger = await delivered(sb.root_url)
    assert one.code == 4 and two.code == 4, one.stdout + two.stdout  # paused: caps reached
    assert Counter(d.sender for d in ledger) == {"s1": 2, "s2": 2}, two.stdout


@pytest.mark.parametrize("ledger", ["another file", "off"])
async def test_a_senders_account_written_in_another_case_keeps_its_day(
    tmp_path: Path, ledger: str,
) -> None:
    """The settings' ``s1`` written ``S1`` (the same handle) and the campaign amended: the
    day its cap filled stays full, from the checkpoint's sends (the ledger another file, or
    off). The checkpoint looked the sends up by the name as written, and sent a second day's
    cap at once."""
    async with running_sandbox() as sb:
        capped = campaign(tmp_path / "a", "welcome", 5200, 8, url=sb.xquik_url,
                          sender_rate="1000/1s", daily_cap=2)
        one = await bulkdm("run", str(capped), "--progress", "none")
        settings = capped.with_suffix(".toml")
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            'account = "s1"', 'account = "S1"').replace('account = "s2"', 'account = "S2"'),
            encoding="utf-8")
        spec = str(tmp_path / "another-ledger.sqlite") if ledger == "another file" else "off"
        two = await bulkdm("run", str(capped), "--amend", "--progress", "none",
                           env=pool_env(BULKDM_LEDGER=spec))
        sent = await delivered(sb.root_url)
    assert one.code == 4 and two.code == 4, one.stdout + two.stdout + two.stderr  # caps reached
    assert Counter(d.sender.lower() for d in sent) == {"s1": 2, "s2": 2}, two.stdout


async def test_a_resumed_campaign_counts_each_of_its_sends_once(tmp_path: Path) -> None:
    """Its sends are in the ledger and in its checkpoint: counted once, so the rows added to
    the campaign get the rest of the day's cap."""
    async with running_sandbox() as sb:
        growing = campaign(tmp_path / "a", "welcome", 6000, 4, url=sb.xquik_url,
                           sender_rate="1000/1s", daily_cap=4)
        one = await bulkdm("run", str(growing), "--progress", "none")
        more = [{"recipient_id": str(6100 + i), "first_name": "x"} for i in range(6)]
        with growing.open("ab") as file:
            file.write(b"".join(orjson.dumps(r) + b"\n" for r in more))
        two = await bulkdm("run", str(growing), "--amend", "--progress", "none")
        ledger = await delivered(sb.root_url)
    assert one.code == 0 and two.code == 4, one.stdout + two.stdout  # the cap, then a pause
    assert Counter(d.sender for d in ledger) == {"s1": 4, "s2": 4}, two.stdout


async def test_a_cap_filled_by_another_campaign_meanwhile_says_when_it_is_free(
    tmp_path: Path,
) -> None:
    # a run's own limiters count the sends the ledger held when it started, and its own: the
    # one whose day another campaign filled meanwhile said "Next send possible ... (in 0s)"
    # while its note said tomorrow
    async with running_sandbox() as sb:
        slow = campaign(tmp_path / "b", "support", 6000, 6, url=sb.xquik_url,
                        sender_rate="1/5s", daily_cap=2)
        fast = campaign(tmp_path / "a", "welcome", 5000, 6, url=sb.xquik_url,
                        sender_rate="1000/1s", daily_cap=2)
        running = await start("run", str(slow), "--progress", "none", env=pool_env())
        for _ in range(5000):  # its first send from each sender, then 5 s to its next
            if len(await delivered(sb.root_url)) == 2:
                break
            await asyncio.sleep(0.002)
        filled = await bulkdm("run", str(fast), "--progress", "none", env=pool_env())
        refused = await finish(running)
        ledger = await delivered(sb.root_url)
    assert Counter(d.sender for d in ledger) == {"s1": 2, "s2": 2}
    for run in (refused, filled):
        assert run.code == 4, run.stdout + run.stderr
        again = re.search(r"Next send possible at .* \(in ([^)]*)\)", run.stdout)
        assert again is not None and again.group(1) in ("1d00h", "23h59m"), run.stdout


async def test_two_hosts_coordinate_only_through_a_postgres_ledger(
    tmp_path: Path, postgres_db: str,
) -> None:
    async with running_sandbox() as sb:
        welcome = campaign(tmp_path / "a", "welcome", 5000, 6, url=sb.xquik_url)
        support = campaign(tmp_path / "b", "support", 6000, 6, url=sb.xquik_url)
        envs = [pool_env(BULKDM_LEDGER=postgres_db, XDG_STATE_HOME=str(tmp_path / host))
                for host in ("host_a", "host_b")]
        done = await run_together(welcome, support, envs=envs)
        ledger = await delivered(sb.root_url)
    assert [d.code for d in done] == [0, 0], [d.stdout + d.stderr for d in done]
    assert len(ledger) == 12 and windows_over(ledger, TWO_PER_5S) == []
    for host in ("host_a", "host_b"):  # nothing kept in a local ledger (the campaign registry is)
        assert not list((tmp_path / host).glob("bulkdm/ledger.sqlite*"))


async def test_plan_says_which_limits_hold_when_two_campaigns_disagree(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        strict = campaign(tmp_path / "a", "welcome", 7000, 2, url=sb.xquik_url, sender_rate="5/1s")
        await bulkdm("run", str(strict), "--progress", "none")
        loose = campaign(tmp_path / "b", "support", 8000, 2, url=sb.xquik_url, sender_rate="9/1s")
    plan = await bulkdm("plan", str(loose))
    assert plan.code == 0, plan.stderr
    notes = [line for line in plan.stdout.splitlines() if line.startswith("accounts: ")]
    assert len(notes) == 2 and "campaign welcome sets 5/1s" in notes[0]
    # welcome's accounts are new: it registered its warm-up's cap for the day (20 % of the
    # default daily cap of 500), which every campaign on them keeps
    assert re.search(r"the stricter wins: 5/1s, 100/1d$", notes[0]), notes[0]
    as_json = orjson.loads((await bulkdm("plan", str(loose), "--json")).stdout)
    assert as_json["account_limits"] == [n.removeprefix("accounts: ") for n in notes]


async def test_two_campaigns_of_one_name_keep_each_others_limits(tmp_path: Path) -> None:
    """Two teams' customers.jsonl, no name set: both campaigns are called customers. The
    strict one's 2/5s holds for both; the loose one's plan says so (it replaced the strict
    one's registration, and the loose one sent 6 in a window)."""
    async with running_sandbox() as sb:
        strict = campaign(tmp_path / "a", "customers", 9000, 6, url=sb.xquik_url)
        loose = campaign(tmp_path / "b", "customers", 9500, 6, url=sb.xquik_url,
                         sender_rate="6/5s")
        first = await start("run", str(strict), "--progress", "none", env=pool_env())
        await wait_for(lambda: len(sb.ledger) >= 1, process=first)  # registered: it sends
        plan = await bulkdm("plan", str(loose))
        second = await bulkdm("run", str(loose), "--progress", "none", env=pool_env())
        done = [await finish(first), second]
        ledger = await delivered(sb.root_url)
    assert [d.code for d in done] == [0, 0], [d.stdout + d.stderr for d in done]
    assert "another campaign also named customers sets 2/5s" in plan.stdout, plan.stdout
    assert len(ledger) == 12
    assert windows_over(ledger, TWO_PER_5S) == []


@pytest.mark.parametrize("url", ["postgresql://bulkdm:hunter2@db.example/pool",
                                 "postgres://bulkdm@db.example/pool?sslmode=require&password=hunter2"])
async def test_a_password_in_the_settings_file_is_refused(tmp_path: Path, url: str) -> None:
    path = campaign(tmp_path, "c", 9000, 1, url="http://127.0.0.1:9/api/v1")
    with path.with_suffix(".toml").open("a", encoding="utf-8") as toml:
        toml.write(f'\n[accounts]\nledger = "{url}"\n')
    done = await bulkdm("plan", str(path))
    assert done.code == 1 and "PGPASSWORD" in done.stderr and "hunter2" not in done.stderr
    assert os.environ["XDG_STATE_HOME"].startswith(str(tmp_path.parent))


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://bulkdm@127.0.0.1:1/pool?password=hunter2",
     "postgresql://bulkdm@127.0.0.1:1/pool?password=***: cannot connect"),
    ("postgresql://bulkdm:hunter2@127.0.0.1:1/pool?sslmode=disable&password=hunter2",
     "postgresql://bulkdm:***@127.0.0.1:1/pool?sslmode=disable&password=***: cannot connect"),
    ("postgresql://bulkdm:hunter2@127.0.0.1:1:2/pool",
     "postgresql://bulkdm:***@127.0.0.1:1:2/pool: not a PostgreSQL URL the driver can read"),
    ("postgresql://bulkdm:hunter2@[db/pool",
     "postgresql://(a URL that cannot be read): not a PostgreSQL URL the driver can read"),
])
async def test_a_ledger_url_from_the_environment_never_shows_its_password(
    tmp_path: Path, url: str, shown: str,
) -> None:
    # README: "the whole URL in BULKDM_LEDGER"; its password may be in the query too, and a URL
    # the driver cannot read ended in a traceback
    path = campaign(tmp_path, "c", 9000, 1, url="http://127.0.0.1:9/api/v1")
    done = await bulkdm("plan", str(path), env={**env_for(), "BULKDM_LEDGER": url})
    assert done.code == 1, done.stderr
    assert done.stderr.startswith(f"error: {shown}")
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def _attempts(checkpoint: Path) -> list[tuple[float, str | None]]:
    """(at_s, code) of every attempt, oldest first (empty until the schema is there)."""
    try:
        with closing(sqlite3.connect(checkpoint)) as db:
            return [(float(at), code) for at, code in
                    db.execute("SELECT at_s, code FROM attempts ORDER BY at_s")]
    except sqlite3.OperationalError:
        return []


@pytest.mark.parametrize("ledger", ["on", "off"])
async def test_a_retry_after_on_the_api_key_holds_across_a_kill(tmp_path: Path,
                                                                 ledger: str) -> None:
    """The provider's key allows 2 DMs in 10 s, the settings say 3 in 2 s: the third is
    answered 429 with a Retry-After until the first leaves the provider's window. The run is
    killed while it waits; the same command, started at once, waits out the rest of it (the
    ledger keeps the key's rest; without one, the checkpoint), where it sent as its own 2 s
    window allowed, and was refused again."""
    env = pool_env() if ledger == "on" else pool_env(BULKDM_LEDGER="off")
    async with running_sandbox(SandboxConfig(key_rates=(Rate(count=2, period_s=10.0),))) as sb:
        folder = tmp_path / "a"
        capped = campaign(folder, "welcome", 9700, 6, url=sb.xquik_url, sender_rate="100/1s")
        settings = folder / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            'rate = "100000/1s"', 'rate = "3/2s"'), encoding="utf-8")
        checkpoint = folder / "camp.bulkdm.sqlite"
        killed = await kill_when(await start("run", str(capped), "--progress", "none",
                                             env=env),
                                 lambda: any(c == "rate_limit_exceeded"
                                             for _, c in _attempts(checkpoint)))
        restarted_s = time.time()
        # the rows not tried yet are due at once: only the key's rest holds them back
        again = await kill_when(await start("run", str(capped), "--progress", "none",
                                            env=env),
                                lambda: any(at >= restarted_s for at, _ in _attempts(checkpoint)))
        first_delivery_s = min(d.at_s for d in await delivered(sb.root_url))
    assert killed.code == again.code == -9, killed.stdout + killed.stderr + again.stderr
    after = [at for at, _ in _attempts(checkpoint) if at >= restarted_s]
    # the key's rest ends when the first DM leaves the provider's 10 s window (whole seconds)
    assert after and min(after) >= first_delivery_s + 9.9, (after, first_delivery_s)


async def test_a_campaign_waiting_for_anothers_turn_says_so(tmp_path: Path) -> None:
    """Two campaigns taking turns on one account: the one waiting showed its sender 'ready',
    with no progress and no word of why (QA)."""
    paths = []
    async with running_sandbox() as sb:
        for folder, first_id in (("a", 7000), ("b", 7100)):
            (tmp_path / folder).mkdir()
            rows = [{"recipient_id": str(first_id + i), "first_name": "x"} for i in range(6)]
            path = write_campaign(tmp_path / folder, rows, url=sb.xquik_url, senders=("s1",),
                                  sender_rate="1/1s", extra='progress_interval = "100ms"')
            paths.append(path)
        processes = [await start("run", str(p), "--progress", "plain", env=pool_env())
                     for p in paths]
        done = [await finish(p, timeout_s=60) for p in processes]
        ledger = await delivered(sb.root_url)
    assert [d.code for d in done] == [0, 0], [d.stdout + d.stderr for d in done]
    assert len(ledger) == 12
    waited = [line for d in done for line in d.stdout.splitlines()
              if "(s1: another campaign's turn (campaigns sharing it take turns of 10s) (all "
                 "campaigns) until " in line]
    assert waited and all("senders: 1 waiting" in line for line in waited), done[0].stdout


async def test_plans_estimate_keeps_another_campaigns_stricter_window(tmp_path: Path) -> None:
    """Another campaign set 1/5s for the accounts: every window holds for all, so the plan's
    time is that pace's, not this campaign's own 100/1s (it said a second for 40 rows)."""
    async with running_sandbox() as sb:
        strict = campaign(tmp_path / "a", "welcome", 7200, 2, url=sb.xquik_url,
                          sender_rate="1/5s")
        loose = campaign(tmp_path / "b", "support", 7300, 40, url=sb.xquik_url,
                         sender_rate="100/1s")
        ran = await bulkdm("run", str(strict), "--progress", "none")
        planned = await bulkdm("plan", str(loose), "--json")
    assert ran.code == 0, ran.stdout + ran.stderr
    report = orjson.loads(planned.stdout)
    # 20 rows a sender at one per 5.1 s (the guard), less what fits at once
    assert 90 <= report["duration"]["seconds"] <= 110, report["duration"]
    assert any("the stricter wins" in note for note in report["account_limits"])
