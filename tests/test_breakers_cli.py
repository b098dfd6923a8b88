"""The breakers end to end: the real CLI on the sandbox, whose ``closed_*`` users refuse DMs and
``protected_*`` users refuse everyone (bulkdm/sandbox/directory.py)."""

from __future__ import annotations

import re
import socket
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import orjson

from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from tests.clikit import bulkdm, env_for, handoff_lines, write_campaign

_CALLS = "calls to the provider"


def _statuses(folder: Path) -> Counter[object]:
    return Counter(r["send_status"] for r in handoff_lines(folder / "camp.handoff.jsonl"))


async def test_an_account_refused_too_often_rests_within_the_sample_and_says_why(
    tmp_path: Path,
) -> None:
    # two of every three recipients refuse: over 30 % of the sample of 20
    rows = [{"recipient_username": f"closed_{i}" if i % 3 else f"open_{i}", "first_name": "x"}
            for i in range(60)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="100/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        pool = await bulkdm("accounts", "--sandbox")
    assert done.code == 4, done.stdout + done.stderr
    assert "refusal breaker: 7 of its last" in done.stdout  # the summary says why
    statuses = _statuses(tmp_path)
    assert statuses["failed"] + statuses["sent"] <= 20  # stopped within the breaker's sample
    assert "resting until" in pool.stdout and "refusal breaker" in pool.stdout  # for all campaigns


async def test_one_error_on_most_sends_stops_the_whole_run(tmp_path: Path) -> None:
    rows = [{"recipient_username": f"protected_{i}", "first_name": "x"} for i in range(60)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("s1", "s2"),
                                  sender_rate="100/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env_for(("s1", "s2")))
        status = await bulkdm("status", str(campaign))
    assert done.code == 5, done.stdout + done.stderr  # a policy stopped it
    assert "Campaign 'camp': stopped_by_breaker after" in done.stdout, done.stdout
    assert f"same-error breaker: x_account_protected on most of the last 10 {_CALLS}" in done.stdout
    statuses = _statuses(tmp_path)
    # the lookups' answers (successes) count too, so the sample is whole before the sends
    assert 8 <= statuses["failed"] < 20 and statuses["sent"] == 0
    assert "last run: stopped_by_breaker at" in status.stdout, status.stdout


async def test_a_success_that_makes_the_sample_whole_still_trips_the_breaker(
    tmp_path: Path,
) -> None:
    # nine errors, then successes only, one at a time (20/1s, smoothed): the tenth answer makes
    # the sample of 10 whole with 9 of one error, over 80 %; the answers after it never hold
    # as many again (the engine skips the breaker's count for a success once the sample is
    # whole, and must not skip it for the answer that makes it whole)
    names = [f"protected_{i}" for i in range(9)] + [f"open_{i}" for i in range(30)]
    async with running_sandbox() as sb:
        # ids, not usernames: a lookup's answer counts too, and would make the sample whole
        rows = [{"recipient_id": sb.directory.register(n), "first_name": "x"} for n in names]
        # the refusal breaker (an account's) would rest the account first: its share is raised
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="20/1s",
                                  extra="refusal_threshold = 0.99")
        done = await bulkdm("run", str(campaign), "--progress", "none")
    assert done.code == 5, done.stdout + done.stderr
    assert f"same-error breaker: x_account_protected on most of the last 10 {_CALLS}" in done.stdout
    statuses = _statuses(tmp_path)
    assert statuses["failed"] == 9 and 1 <= statuses["sent"] < 30, statuses


def _attempted_rows(folder: Path) -> int:
    with closing(sqlite3.connect(folder / "camp.bulkdm.sqlite")) as db:
        return int(db.execute("SELECT COUNT(DISTINCT row_id) FROM attempts").fetchone()[0])


async def test_a_provider_outage_stops_the_run_early_and_it_resumes_after(tmp_path: Path) -> None:
    """Every send answered 503 (internal_error): not a row's final answer (each would be retried until it
    fails), but the same error on send after send. The run stops instead of burning through
    the list, and once the provider is back the same command sends every row once."""
    rows = [{"recipient_id": str(96_000 + i), "first_name": "x"} for i in range(60)]
    async with running_sandbox(SandboxConfig(faults=Faults(fail_rate=1.0))) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="100/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        attempted = _attempted_rows(tmp_path)
        status = await bulkdm("status", str(campaign), "--json")
        sb.reconfigure(SandboxConfig())
        again = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 5, done.stdout + done.stderr
    assert "Campaign 'camp': stopped_by_breaker after" in done.stdout, done.stdout
    # the sandbox's failures are 500 internal_error or 503 write_tracking_unavailable: one outage
    one, other = r"internal_error x\d+", r"write_tracking_unavailable x\d+"
    both = f"({one}, {other}|{other}, {one})"
    assert re.search(rf"note: same-error breaker: provider errors \({both}\) on most of the "
                     rf"last 10 {_CALLS}", done.stdout), done.stdout
    assert attempted <= 20  # the first answers' rows (and those in flight), not all 60
    assert "failed" not in Counter(r["send_status"] for r in
                                   handoff_lines(tmp_path / "camp.handoff.jsonl"))
    assert '"finish_reason":"stopped_by_breaker"' in status.stdout, status.stdout
    assert again.code == 0, again.stdout + again.stderr
    assert delivered == Counter(r["recipient_id"] for r in rows)  # each once


async def test_an_outage_met_by_the_username_lookups_stops_the_run_before_rows_fail(
    tmp_path: Path,
) -> None:
    """The provider down (or a base_url naming the wrong port) before the first send: every
    username lookup fails. The run stops with the breaker instead of failing the list row by
    row, and once the provider answers the same command sends every row once."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/api/v1"
    rows = [{"recipient_username": f"user_{i}", "first_name": "x"} for i in range(60)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=closed, sender_rate="100/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        status = await bulkdm("status", str(campaign), "--json")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(closed, sb.xquik_url),
                            encoding="utf-8")
        again = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 5, done.stdout + done.stderr
    breaker = f"note: same-error breaker: connect_failed on most of the last 10 {_CALLS}"
    assert breaker in done.stdout, done.stdout
    assert orjson.loads(status.stdout)["counts"] == {**dict.fromkeys(
        ("sending", "unknown", "sent", "failed", "skipped", "invalid"), 0), "pending": 60}
    assert again.code == 0, again.stdout + again.stderr
    assert len(delivered) == 60 and set(delivered.values()) == {1}
