"""``bulkdm run --until-done``: the real CLI through a short "day" (a cap of 3 sends in 5 s,
with the run's patience set to 1 s), against the sandbox over 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, Sandbox, SandboxConfig, running_sandbox
from tests.clikit import (
    bulkdm,
    env_for,
    finish,
    handoff_lines,
    start,
    wait_for,
    windows_over,
    write_campaign,
)

CAP = Rate(count=3, period_s=5.0)
ROWS: list[dict[str, object]] = [{"recipient_id": str(70_000 + i), "first_name": "x"}
                                 for i in range(7)]
_UNTIL = re.compile(r"3/5s window full until (\d\d):(\d\d):(\d\d)")


def _short_day(folder: Path, url: str) -> Path:
    """A sender whose "daily cap" is 3 sends in 5 s; a run waits at most 1 s without the flag."""
    campaign = write_campaign(folder, ROWS, url=url, sender_rate="RATE",
                              extra='max_rest_wait = "1s"\nprogress_interval = "100ms"')
    settings = folder / "camp.toml"
    settings.write_text(settings.read_text().replace('rate = "RATE"', 'rate = ["100/1s", "3/5s"]'))
    return campaign


def _until_s(text: str) -> list[int]:
    return [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in _UNTIL.findall(text)]


async def _run_until_waiting(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``bulkdm run ...``; return it once a plain progress line says it waits for the cap."""
    process = await start("run", *args, "--progress", "plain")
    assert process.stdout is not None
    seen: list[str] = []
    while not _UNTIL.search(line := (await asyncio.wait_for(process.stdout.readline(), 30)).decode()):
        assert line, "".join(seen)  # it ended without waiting
        seen.append(line)
    return process, "".join(seen) + line


async def test_without_the_flag_a_full_cap_pauses_and_says_when_to_run_again(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = _short_day(tmp_path, sb.xquik_url)
        # a local time beside UTC ones (the notes'): its zone is named
        done = await bulkdm("run", str(campaign), "--progress", "none",
                            env={**env_for(), "TZ": "Asia/Tokyo"})
        assert len(sb.ledger) == CAP.count
    assert done.code == 4, done.stdout + done.stderr
    assert "paused" in done.stdout
    assert re.search(r"Next send possible at \S+ \d\d:\d\d:\d\d JST \(in \d+s\): run again "
                     r"then", done.stdout), done.stdout


async def test_until_done_goes_through_the_cap_to_the_end(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = _short_day(tmp_path, sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--until-done", "--progress", "plain")
        ledger = list(sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert "completed" in done.stdout
    assert _until_s(done.stdout), done.stdout  # the waits were shown, with until when and why
    assert Counter(d.recipient_id for d in ledger) == Counter(r["recipient_id"] for r in ROWS)
    assert windows_over(ledger, CAP) == []


async def test_sigterm_while_it_waits_stops_at_once(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = _short_day(tmp_path, sb.xquik_url)
        process, _ = await _run_until_waiting(str(campaign), "--until-done")
        process.send_signal(signal.SIGTERM)
        stopped = await finish(process, timeout_s=3.0)  # the cap's wait (5 s) is not sat out
        assert len(sb.ledger) == CAP.count
    assert stopped.code == 4, stopped.stdout + stopped.stderr
    assert "interrupted" in stopped.stdout


async def test_kill_9_while_it_waits_resumes_to_the_same_wait(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = _short_day(tmp_path, sb.xquik_url)
        process, before = await _run_until_waiting(str(campaign), "--until-done")
        process.kill()
        killed = await finish(process)
        assert killed.code == -signal.SIGKILL
        again, shown = await _run_until_waiting(str(campaign), "--until-done")
        resumed = await finish(again)
        ledger = list(sb.ledger)
    assert "new plan" in before and "new plan" not in shown  # the same plan, not a new one
    # the same wait: the cap's window, counted from the sends of the killed run
    first, second = _until_s(before)[-1], _until_s(shown)[0]
    assert abs(first - second) <= 1, (before, shown)
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert Counter(d.recipient_id for d in ledger) == Counter(r["recipient_id"] for r in ROWS)
    assert windows_over(ledger, CAP) == []
    assert {r["send_status"] for r in handoff_lines(tmp_path / "camp.handoff.jsonl")} == {"sent"}


async def test_a_window_hours_away_is_one_sleep_that_a_stop_ends(tmp_path: Path) -> None:
    opens = datetime.fromtimestamp(time.time() + 7200, UTC)
    closes = datetime.fromtimestamp(time.time() + 10800, UTC)
    async with running_sandbox() as sb:
        campaign = _short_day(tmp_path, sb.xquik_url)
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'template = "Hello {first_name}"',
            f'template = "Hello {{first_name}}"\nsend_hours = "{opens:%H:%M}-{closes:%H:%M}"'))
        process = await start("run", str(campaign), "--until-done", "--progress", "plain")
        assert process.stdout is not None
        while b"outside its send window" not in (line := await asyncio.wait_for(
                process.stdout.readline(), 30)):
            assert line, "it ended instead of waiting for the window"
        process.send_signal(signal.SIGTERM)
        stopped = await finish(process, timeout_s=3.0)
        assert len(sb.ledger) == 0
    assert stopped.code == 4 and "interrupted" in stopped.stdout, stopped.stdout + stopped.stderr


_DOWN = "--until-done: the provider looks down; trying again at"


async def _outage_line(process: asyncio.subprocess.Process, seen: list[str]) -> None:
    """Read the run's output up to its next line saying it waits out an outage."""
    assert process.stdout is not None
    while _DOWN not in (line := (await asyncio.wait_for(process.stdout.readline(), 30)).decode()):
        assert line, "".join(seen)  # it ended instead
        seen.append(line)
    seen.append(line)


def _attempts(folder: Path) -> int:
    with closing(sqlite3.connect(folder / "camp.bulkdm.sqlite")) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_until_done_waits_out_an_outage_with_one_probe_a_time(
    tmp_path: Path, provider: str,
) -> None:
    """Every send answered 5xx: the breaker stops the run, and with --until-done the same
    command starts again after outage_wait, doubled each time. Each start after an outage
    sends one row (a probe), so a long outage spends one attempt a start, not a sample's;
    on GetXAPI the conversation reads of the rows in doubt (which work: only sends fail) do
    not end the probe. Once the provider is back, every row is sent once."""
    rows = [{"recipient_id": str(71_000 + i), "first_name": "x"} for i in range(30)]
    async with running_sandbox(SandboxConfig(faults=Faults(fail_rate=1.0))) as sb:
        url = sb.xquik_url if provider == "xquik" else sb.getxapi_url
        campaign = write_campaign(tmp_path, rows, url=url, provider=provider,
                                  sender_rate="1000/1s", extra='outage_wait = "500ms"')
        process = await start("run", str(campaign), "--until-done", "--progress", "none")
        seen: list[str] = []
        counts = []
        for _ in range(3):  # the first stop, then two probes the outage still fails
            await _outage_line(process, seen)
            counts.append(_attempts(tmp_path))
        sb.reconfigure(SandboxConfig())
        done = await finish(process)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    out = "".join(seen) + done.stdout
    assert done.code == 0, out + done.stderr
    assert counts[0] >= 10 and counts[1] == counts[0] + 1 and counts[2] == counts[1] + 1, counts
    assert out.count("again on the first call after the outage") == 2, out
    waits = re.findall(r"trying again at \S+ \S+ \S+ \(in (\d+)s\)", out)
    assert waits == ["0", "1", "2"], waits  # 500 ms, doubled, doubled (whole seconds shown)
    assert delivered == Counter(r["recipient_id"] for r in rows)  # each once
    assert {r["send_status"] for r in handoff_lines(tmp_path / "camp.handoff.jsonl")} == {"sent"}


async def _waiting_out_an_outage(folder: Path, sb: Sandbox, *, first_id: int,
                                 rows: int) -> tuple[Path, asyncio.subprocess.Process]:
    """``run --until-done`` of ``rows`` rows on a sandbox whose every answer fails, once it
    waits out the outage (an hour): the campaign file, and the running process."""
    people = [{"recipient_id": str(first_id + i), "first_name": "x"} for i in range(rows)]
    campaign = write_campaign(folder, people, url=sb.xquik_url, sender_rate="100/1s",
                              extra='outage_wait = "1h"')
    process = await start("run", str(campaign), "--until-done", "--progress", "none")
    await _outage_line(process, [])
    return campaign, process


async def test_a_stop_while_waiting_out_an_outage_ends_the_run_at_once(tmp_path: Path) -> None:
    async with running_sandbox(SandboxConfig(faults=Faults(fail_rate=1.0))) as sb:
        campaign, process = await _waiting_out_an_outage(tmp_path, sb, first_id=72_000, rows=30)
        status = await bulkdm("status", str(campaign))  # while the run waits
        waiting = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
        process.send_signal(signal.SIGINT)
        done = await finish(process, timeout_s=10)
        after = await bulkdm("status", str(campaign))
    assert "--until-done waits out the outage and tries again at " in status.stdout, \
        status.stdout
    # its senders are not ready: they wait for the provider, until the run tries again
    assert "ready" not in status.stdout, status.stdout
    again = waiting["last_run"].get("waits_until")
    assert {(s["state"], s["next_due_at"]) for s in waiting["senders"]} == {("waiting", again)}
    assert waiting["last_run"]["waits_for"] == "the provider"
    assert (f"sender alice: waiting (for the provider to answer again; --until-done tries "
            f"again at {again})") in status.stdout, status.stdout
    # stopped, it waits no more, and the last run ended as the command did: interrupted
    # (exit 4), not stopped by the breaker (the policy stop's exit 5)
    assert "waiting" not in after.stdout and "tries again" not in after.stdout, after.stdout
    assert "last run: interrupted" in after.stdout, after.stdout
    assert done.code == 4, done.stdout + done.stderr
    assert "stopped while waiting for the provider; run the same command to resume" \
        in done.stdout


async def test_status_while_a_run_sleeps_through_a_full_window_says_its_senders_wait(
    tmp_path: Path,
) -> None:
    """A run that sleeps through its sender's full daily cap: ``status`` said the sender was
    done and the rows ready, as if nothing held them (QA)."""
    rows = [{"recipient_id": str(74_000 + i), "first_name": "x"} for i in range(5)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="100/1s")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'rate = "100/1s"\n', 'rate = "100/1s"\ndaily_cap = 2\nwarmup = false\n'))
        process = await start("run", str(campaign), "--until-done", "--progress", "none")
        await wait_for(lambda: len(sb.ledger) >= 2)
        status = await bulkdm("status", str(campaign))
        for _ in range(100):  # the wait is recorded as the sleep starts
            if "waiting" in status.stdout:
                break
            await asyncio.sleep(0.1)
            status = await bulkdm("status", str(campaign))
        waiting = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
        process.kill()
        await finish(process, timeout_s=10)
        killed = await bulkdm("status", str(campaign))
        # the cap raised, and the same command run again: it sends, and waits for nothing
        settings.write_text(settings.read_text().replace("daily_cap = 2", "daily_cap = 100"))
        again = await start("run", str(campaign), "--amend", "--progress", "none")
        await wait_for(lambda: len(sb.ledger) >= 3)
        raised = await bulkdm("status", str(campaign))
        done = await finish(again, timeout_s=30)
    assert done.code == 0, done.stdout + done.stderr
    assert "sender alice: waiting (2/1d window full until 20" in status.stdout, status.stdout
    # killed while it slept: the window holds, but no run waits for it (QA)
    assert "; no run waits for it now: run the same command to resume" in killed.stdout, \
        killed.stdout
    # the wait recorded by the killed run is gone once a run starts (QA: it stayed for 24 h)
    assert "waiting" not in raised.stdout, raised.stdout
    assert "sender (any sender): waiting (every sender waits; the first is free at 20" \
        in status.stdout, status.stdout
    assert "ready" not in status.stdout and "done" not in status.stdout, status.stdout
    senders = {s["account"]: s for s in waiting["senders"]}
    free_s = datetime.fromisoformat(senders["alice"]["next_due_at"]).timestamp()
    assert 86_000 < free_s - time.time() <= 87_500  # when the first of the two sends leaves
    assert senders["(any sender)"]["next_due_at"] == senders["alice"]["next_due_at"]


async def test_status_after_an_until_done_run_killed_while_waiting_out_an_outage(
    tmp_path: Path,
) -> None:
    """``kill -9`` while the run waits out an outage: status said its senders waited and the
    run would try again at a time, with no process left to do it (QA)."""
    async with running_sandbox(SandboxConfig(faults=Faults(fail_rate=1.0))) as sb:
        campaign, process = await _waiting_out_an_outage(tmp_path, sb, first_id=76_000, rows=6)
        process.kill()
        await finish(process, timeout_s=10)
        status = await bulkdm("status", str(campaign))
        as_json = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
    assert "waiting" not in status.stdout and "tries again at" not in status.stdout, \
        status.stdout
    assert "the --until-done run that waited is gone: run the same command to resume" \
        in status.stdout, status.stdout
    assert "waits_until" not in as_json["last_run"], as_json["last_run"]


async def test_status_after_a_run_paused_on_a_full_cap_says_when_its_sender_is_free(
    tmp_path: Path,
) -> None:
    """A run that paused on its sender's daily cap: ``status`` said the sender's next send was
    "now", though nothing can leave before its window frees (QA)."""
    # three rows of alice's own (two sent, one left: its next read "now") and one for anyone
    rows = [{"recipient_id": str(78_000 + i), "first_name": "x", "sender": "alice"}
            for i in range(3)] + [{"recipient_id": "78003", "first_name": "x"}]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="100/1s")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'rate = "100/1s"\n', 'rate = "100/1s"\ndaily_cap = 2\nwarmup = false\n'))
        paused = await bulkdm("run", str(campaign), "--progress", "none")
        status = await bulkdm("status", str(campaign))
        as_json = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
        # the cap raised: the next run sends the rest, and status waits for nothing
        settings.write_text(settings.read_text().replace("daily_cap = 2", "daily_cap = 100"))
        done = await bulkdm("run", str(campaign), "--amend", "--progress", "none")
        after = await bulkdm("status", str(campaign))
    assert paused.code == 4, paused.stdout + paused.stderr
    assert done.code == 0, done.stdout + done.stderr
    assert "sender alice: paused (2/1d window full until 20" in status.stdout, status.stdout
    assert "next now" not in status.stdout, status.stdout
    assert re.search(r"alice: paused \(2/1d window full until .*\), 2 sent, 1 left, "
                     r"next in (23h59m|1d00h)", status.stdout), status.stdout
    assert re.search(r"\(any sender\): paused \(every sender waits; the first is free at "
                     r"20.*\), 0 sent, 1 left, next in (23h59m|1d00h)", status.stdout), status.stdout
    (alice,) = [s for s in as_json["senders"] if s["account"] == "alice"]
    free_s = datetime.fromisoformat(alice["next_due_at"]).timestamp()
    assert 86_000 < free_s - time.time() <= 87_500  # when the first of the two sends leaves
    assert "paused" not in after.stdout and "sender alice: done" in after.stdout, after.stdout
