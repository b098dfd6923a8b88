"""``bulkdm run``/``status``/``export`` end to end: the real CLI in a subprocess, the sandbox
served by the test over 127.0.0.1, a real checkpoint file."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, SandboxConfig, derive_user_id, running_sandbox
from tests.clikit import (
    bulkdm,
    env_for,
    handoff_lines,
    kill_when,
    start,
    wait_for,
    windows_over,
    write_campaign,
)

MIXED: list[dict[str, object]] = [
    {"recipient_username": "amy", "first_name": "Amy", "external_id": "c-1"},
    {"recipient_id": 1234567890123456789, "first_name": "Ben", "external_id": "c-2"},
    {"recipient_username": "nf_gone", "first_name": "Gil"},
    {"recipient_username": "closed_cat", "first_name": "Cat"},
    {"recipient_username": "AMY", "first_name": "Amy again"},
    {"recipient_username": "dee", "text": ""},
    {"recipient_username": "eli", "first_name": "Eli", "text": "Hi {first_name} 👋 مرحبا"},
]
EXPECTED = {1: "sent", 2: "sent", 3: "failed", 4: "failed", 5: "skipped", 6: "invalid", 7: "sent"}


async def test_mixed_campaign_ends_every_row_in_its_state(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, MIXED, url=sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--progress", "plain")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 3, done.stderr  # finished, with failed and invalid rows
    assert "completed" in done.stdout
    records = {r["line"]: r for r in handoff_lines(tmp_path / "camp.handoff.jsonl")}
    assert {line: r["send_status"] for line, r in records.items()} == EXPECTED
    assert records[3]["error"] == {"code": "user_not_found", "message": records[3]["error"]["message"]}  # type: ignore[index]
    assert records[4]["error"]["code"] == "x_dm_not_allowed"  # type: ignore[index]
    assert records[7]["text"] == "Hi Eli 👋 مرحبا"
    assert records[2]["user_id"] == "1234567890123456789"
    assert len(delivered) == 3 and set(delivered.values()) == {1}


async def test_resume_after_done_sends_nothing_more(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, MIXED, url=sb.xquik_url)
        first = await bulkdm("run", str(campaign), "--progress", "none")
        again = await bulkdm("run", str(campaign), "--progress", "none")
        assert len(sb.ledger) == 3
    assert (first.code, again.code) == (3, 3)
    assert len(handoff_lines(tmp_path / "camp.handoff.jsonl")) == len(MIXED)
    assert not (tmp_path / "camp.bulkdm.sqlite.lock").exists()  # removed on a clean exit


async def test_retries_5xx_429_and_polls_202_to_one_delivery_each(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(10_000 + i), "first_name": f"n{i}"} for i in range(40)]
    faults = Faults(fail_rate=0.15, rate_limit_rate=0.05, accept_rate=0.3, seed=11)
    async with running_sandbox(SandboxConfig(faults=faults)) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert len(delivered) == 40 and set(delivered.values()) == {1}
    assert {r["send_status"] for r in handoff_lines(tmp_path / "camp.handoff.jsonl")} == {"sent"}


async def test_rate_holds_in_every_window_across_a_stop_and_resume(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(20_000 + i), "first_name": "x"} for i in range(24)]
    rate = Rate(count=4, period_s=1.0)
    async with running_sandbox() as sb:
        # what is tested is the restart's charge; the provider's delay in stamping a send
        # (a new connection's first request, a loaded test machine) is the guard's business,
        # tested under controlled jitter in test_rate_guard.py: a wide guard keeps it out here
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("s1", "s2"),
                                  sender_rate="4/1s", extra='rate_guard = "300ms"')
        stopped = await kill_when(await start("run", str(campaign), "--progress", "none"),
                                  lambda: len(sb.ledger) >= 10, signum=signal.SIGINT)
        resumed = await bulkdm("run", str(campaign), "--progress", "none")
        ledger = list(sb.ledger)
    assert stopped.code == 4, stopped.stdout + stopped.stderr  # stopped, with a resume command
    assert "bulkdm run" in stopped.stdout
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert Counter(d.recipient_id for d in ledger) == Counter(r["recipient_id"] for r in rows)
    assert windows_over(ledger, rate) == []


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_kill_9_at_several_points_loses_and_repeats_nothing(tmp_path: Path, provider: str) -> None:
    rows = [{"recipient_id": str(30_000 + i), "first_name": "x", "external_id": f"e{i}"}
            for i in range(60)]
    faults = Faults(drop_rate=0.15, latency_ms=5, jitter_ms=5, seed=7)
    async with running_sandbox(SandboxConfig(faults=faults)) as sb:
        url = sb.xquik_url if provider == "xquik" else sb.getxapi_url
        campaign = write_campaign(tmp_path, rows, url=url, provider=provider, senders=("s1", "s2"))
        env = env_for(("s1", "s2"))
        for at in (1, 15, 30, 45):
            killed = await kill_when(
                await start("run", str(campaign), "--progress", "none", env=env),
                lambda at=at: len(sb.ledger) >= at)  # type: ignore[misc]
            assert killed.code == -signal.SIGKILL, killed.stdout  # it died mid-campaign
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == Counter(r["recipient_id"] for r in rows)  # each exactly once
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert sorted(r["line"] for r in lines) == list(range(1, 61))  # type: ignore[type-var]
    assert {r["send_status"] for r in lines} == {"sent"}


async def test_a_second_runner_is_refused_with_the_holder(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(40_000 + i), "first_name": "x"} for i in range(6)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="1/1s")
        first = await start("run", str(campaign), "--progress", "none")
        try:
            await wait_for(lambda: len(sb.ledger) >= 1, process=first)
            second = await bulkdm("run", str(campaign), "--progress", "none")
        finally:
            stopped = await kill_when(first, lambda: True, signum=signal.SIGTERM)
    assert second.code == 1
    assert "in use by another run" in second.stderr and f"pid {first.pid}" in second.stderr
    assert stopped.code == 4
    assert not (tmp_path / "camp.bulkdm.sqlite.lock").exists()


async def test_bad_api_key_stops_the_run_with_the_reason(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(50_000 + i), "first_name": "x"} for i in range(3)]
    async with running_sandbox(SandboxConfig(valid_api_keys=frozenset({"other"}))) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        assert sb.ledger == []
    assert done.code == 4
    assert "unauthenticated" in done.stdout
    assert "xq_test_key" not in done.stdout + done.stderr


async def test_missing_api_key_variable_is_named(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, MIXED[:1], url="http://127.0.0.1:9/api/v1")
    env = {k: v for k, v in env_for().items() if k != "XQUIK_API_KEY"}
    done = await bulkdm("run", str(campaign), env=env)
    assert done.code == 1
    assert "XQUIK_API_KEY" in done.stderr


async def test_status_and_export_read_the_checkpoint(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, MIXED, url=sb.xquik_url)
        await bulkdm("run", str(campaign), "--progress", "none")
    status = await bulkdm("status", str(campaign))
    assert status.code == 0
    assert "sent 3" in status.stdout and "user_not_found 1" in status.stdout
    out = tmp_path / "failed.csv"
    exported = await bulkdm("export", str(campaign), "--format", "csv", "--status", "failed",
                            "--out", str(out))
    assert exported.code == 0, exported.stderr
    assert out.read_bytes().count(b"\r\n") == 3  # header and the two failed rows
    retry = tmp_path / "retry.jsonl"
    again = await bulkdm("export", str(campaign), "--status", "failed", "--as-campaign",
                         "--out", str(retry))
    assert again.code == 0, again.stderr
    assert len(retry.read_text(encoding="utf-8").splitlines()) == 2


async def test_a_username_resolved_to_another_lines_recipient_is_counted_skipped(
    tmp_path: Path,
) -> None:
    # line 1 names @other1, line 2 the same person by id: the run finds out when it resolves
    # the name, and skips line 1 in SQL, where no write tells the engine's counts; a completed
    # run's summary said "pending 1"
    rows: list[dict[str, object]] = [
        {"recipient_username": "other1", "first_name": "O"},
        {"recipient_id": derive_user_id("other1"), "first_name": "O"},
        {"recipient_username": "amy", "first_name": "A"}]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = sorted(d.recipient_id for d in sb.ledger)
    assert delivered == sorted([derive_user_id("other1"), derive_user_id("amy")])
    assert done.code == 0, done.stdout + done.stderr
    summary = done.stdout.splitlines()
    assert ["skipped", "1"] in [line.split() for line in summary], done.stdout
    assert not any(line.startswith("  pending") for line in summary), done.stdout
