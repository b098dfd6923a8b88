"""Username lookups end to end: the real CLI, the sandbox over 127.0.0.1. A lookup carries only
the API key, so what it says about an account is about the user looked up; and a lookup the
provider throttles waits, it does not spend the row's attempts, unless it throttles every read
for longer than ``max_read_throttle``: then the provider is down for the run."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson

from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from tests.clikit import bulkdm, env_for, finish, handoff_lines, start, write_campaign


async def test_a_suspended_recipient_fails_its_row_and_no_sender_is_dropped(
    tmp_path: Path,
) -> None:
    rows = [{"recipient_username": name, "first_name": "x"}
            for name in ("ann_ok", "banned_bo", "cy_ok", "dee_ok")]
    env = env_for(("alice", "bob"))
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.getxapi_url, provider="getxapi",
                                  senders=("alice", "bob"))
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        pool = await bulkdm("accounts", "--sandbox", env=env)
        delivered = len(sb.ledger)
    assert done.code == 3, done.stdout + done.stderr  # finished, one row failed
    records = {r["recipient_username"]: r for r in handoff_lines(tmp_path / "camp.handoff.jsonl")}
    assert {n: r["send_status"] for n, r in records.items()} == {
        "ann_ok": "sent", "banned_bo": "failed", "cy_ok": "sent", "dee_ok": "sent"}
    assert records["banned_bo"]["error"]["code"] == "user_suspended"  # type: ignore[index]
    assert delivered == 3
    assert "out" not in done.stdout.split("Senders (this run):")[1], done.stdout
    assert "x_account_suspended" not in pool.stdout, pool.stdout


async def test_throttled_lookups_wait_instead_of_failing_their_rows(tmp_path: Path) -> None:
    """The key's reads allow 4 a second; 20 usernames are looked up 8 at a time, each row with
    2 attempts: lookups are answered 429 (with Retry-After) again and again. Each row waits and
    is sent; none fails rate_limit_exceeded with its attempts spent on the throttle."""
    rows = [{"recipient_username": f"fan_{i}", "first_name": "x"} for i in range(20)]
    slow_reads = SandboxConfig(read_rates=(Rate(count=4, period_s=1.0),))
    async with running_sandbox(slow_reads) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "max_attempts = 6", "max_attempts = 2"), encoding="utf-8")
        done = await bulkdm("run", str(campaign), "--progress", "none", timeout_s=50)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert len(delivered) == 20 and set(delivered.values()) == {1}


#: every read answered 429 with Retry-After 1 s, for as long as the test likes
NO_READS = SandboxConfig(faults=Faults(read_throttle_rate=1.0))
FANS: list[dict[str, object]] = [{"recipient_username": f"fan_{i}", "first_name": "x"}
                                 for i in range(5)]


async def test_reads_refused_without_end_stop_the_run_as_an_outage(tmp_path: Path) -> None:
    """Every lookup is throttled: the run waited for ever, saying only 'next try in 1s'. With
    no read answered for longer than max_read_throttle, the same-error breaker stops it as an
    outage (exit 5), the rows pending with their attempts untouched; the provider's reads
    back, the same command sends each row once."""
    async with running_sandbox(NO_READS) as sb:
        campaign = write_campaign(tmp_path, FANS, url=sb.xquik_url,
                                  extra='max_read_throttle = "2s"')
        stopped = await bulkdm("run", str(campaign), "--progress", "none", timeout_s=20)
        status = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
        sb.reconfigure(SandboxConfig())
        resumed = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert stopped.code == 5, stopped.stdout + stopped.stderr
    assert "note: same-error breaker: reads refused as throttled (rate_limit_exceeded) since " \
        in stopped.stdout and "(max_read_throttle 2s)" in stopped.stdout, stopped.stdout
    assert status["counts"]["pending"] == 5 and status["failures_by_code"] == {}, status
    assert status["last_run"]["finish_reason"] == "stopped_by_breaker"
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert len(delivered) == 5 and set(delivered.values()) == {1}


async def test_until_done_waits_out_reads_refused_without_end(tmp_path: Path) -> None:
    async with running_sandbox(NO_READS) as sb:
        campaign = write_campaign(tmp_path, FANS, url=sb.xquik_url,
                                  extra='max_read_throttle = "1s"\noutage_wait = "500ms"')
        process = await start("run", str(campaign), "--until-done", "--progress", "none")
        assert process.stdout is not None
        seen = b""
        while b"--until-done: the provider looks down; trying again at" not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
            assert line, seen.decode()  # it ended instead of waiting
            seen += line
        sb.reconfigure(SandboxConfig())
        done = await finish(process, timeout_s=30)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert b"same-error breaker: reads refused as throttled" in seen, seen.decode()
    assert done.code == 0, seen.decode() + done.stdout + done.stderr
    assert len(delivered) == 5 and set(delivered.values()) == {1}
