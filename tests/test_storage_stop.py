"""A file the run cannot write (a full disk, a read-only checkpoint or handoff file) stops
``bulkdm run`` as a Ctrl-C does: one line on stderr naming the file, exit code 4, no traceback;
the same command then resumes with nothing lost or sent twice. The real CLI in a subprocess."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bulkdm.checkpoint import Checkpoint
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from tests.clikit import Done, bulkdm, finish, handoff_lines, start, wait_for, write_campaign
from tests.fskit import file_size_limit, immutable_files, immutable_supported

ROWS = [{"recipient_id": str(60_000 + i), "first_name": f"n{i}"} for i in range(400)]


def _established(campaign: Path) -> Path:
    """The sender is an established account: 400 rows in one run are more than a new
    account's first day of warm-up (100 of its 500), and these tests are about storage."""
    settings = campaign.with_suffix(".toml")
    settings.write_text(settings.read_text().replace('account = "alice"\n',
                                                     'account = "alice"\nwarmup = false\n'))
    return campaign


def _assert_one_clear_line(done: Done, path: Path, reason: str) -> None:
    assert done.code == 4, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"cannot write {path}: {reason}" in lines[0], lines[0]
    assert "run the same command to resume" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def _assert_resumed_whole(done: Done, delivered: Counter[str], handoff: Path) -> None:
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == Counter(str(r["recipient_id"]) for r in ROWS)  # each exactly once
    lines = handoff_lines(handoff)
    assert sorted(r["line"] for r in lines) == list(range(1, len(ROWS) + 1))  # type: ignore[type-var]
    assert {r["send_status"] for r in lines} == {"sent"}


async def test_a_full_disk_stops_the_run_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    faults = Faults(latency_ms=2, seed=3)
    async with running_sandbox(SandboxConfig(faults=faults)) as sb:
        campaign = _established(write_campaign(tmp_path, ROWS, url=sb.xquik_url))
        planned = await bulkdm("plan", str(campaign))
        assert planned.code == 0, planned.stderr
        checkpoint = tmp_path / "camp.bulkdm.sqlite"
        # room for the plan, not for the write-ahead log of the whole run
        limit = file_size_limit(checkpoint.stat().st_size + 96 * 1024)
        stopped = await bulkdm("run", str(campaign), "--progress", "none", preexec_fn=limit)
        sent_before = len(sb.ledger)
        resumed = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    _assert_one_clear_line(stopped, checkpoint, "the file is too large")
    assert 0 < sent_before < len(ROWS)  # it stopped mid-run
    _assert_resumed_whole(resumed, delivered, tmp_path / "camp.handoff.jsonl")


@pytest.mark.parametrize("target", ["checkpoint", "handoff"])
async def test_a_file_made_read_only_mid_run_stops_it_cleanly_and_the_next_run_resumes(
    tmp_path: Path, target: str,
) -> None:
    if not immutable_supported(tmp_path):
        pytest.skip("this file system or user cannot set the immutable flag")
    checkpoint, handoff = tmp_path / "camp.bulkdm.sqlite", tmp_path / "camp.handoff.jsonl"
    files = [checkpoint, checkpoint.with_name(checkpoint.name + "-wal")] \
        if target == "checkpoint" else [handoff]
    async with running_sandbox() as sb:
        campaign = _established(write_campaign(tmp_path, ROWS, url=sb.xquik_url,
                                               sender_rate="400/1s"))
        with immutable_files(files) as make_read_only:
            process = await start("run", str(campaign), "--progress", "none")

            def some_sent_and_written() -> bool:
                ready = len(sb.ledger) >= 40 and handoff.exists() and handoff.stat().st_size > 0
                if ready:
                    make_read_only()
                return ready

            await wait_for(some_sent_and_written, process=process)
            stopped = await finish(process)
        sent_before = len(sb.ledger)
        resumed = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    reason = "the file is read-only" if target == "checkpoint" else "operation not permitted"
    _assert_one_clear_line(stopped, files[0], reason)
    assert sent_before < len(ROWS)
    _assert_resumed_whole(resumed, delivered, handoff)


async def test_a_full_disk_while_planning_stops_with_one_line_and_the_plan_is_made_later(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.sqlite"
    await (await Checkpoint.open(empty)).close()
    rows = [{**row, "first_name": "x" * 300} for row in ROWS]  # ~150 kB of plan
    campaign = write_campaign(tmp_path, rows, url="http://127.0.0.1:9/api/v1")
    limit = file_size_limit(empty.stat().st_size + 32 * 1024)  # the schema fits, the rows do not
    stopped = await bulkdm("plan", str(campaign), preexec_fn=limit)
    planned = await bulkdm("plan", str(campaign))
    _assert_one_clear_line(stopped, tmp_path / "camp.bulkdm.sqlite", "the file is too large")
    assert planned.code == 0, planned.stderr
    assert f"valid           {len(rows)}" in planned.stdout
