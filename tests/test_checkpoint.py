from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import Checkpoint, Expect, Finish, Write
from bulkdm.errors import BulkdmError, CheckpointError, CheckpointLockedError, StorageError
from bulkdm.ratelimit import WindowLimiter
from bulkdm.rates import Rate
from bulkdm.rows import PlannedRow, RowRecord, RowState
from bulkdm.runlock import RunLock
from bulkdm.schema import MIGRATIONS, SCHEMA_VERSION
from tests.enginekit import planned, write_plan
from tests.fskit import immutable_files, immutable_supported


async def test_new_file_is_migrated_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await (await Checkpoint.open(path)).close()
    await (await Checkpoint.open(path)).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_version_1_checkpoint_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        # what bulkdm of schema 1 and 2 built on every open
        db.execute("CREATE INDEX rows_todo ON rows (sender, state, id)")
        db.execute("INSERT INTO rows (line, state) VALUES (1, 'pending')")
    checkpoint = await Checkpoint.open(path)
    try:
        assert await checkpoint.state_counts() == {"pending": 1}
    finally:
        await checkpoint.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"attempts_by_sender", "rows_state", "uploads_by_time", "replies_by_row"} <= names
        assert "rows_todo" not in names


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CheckpointError, match="newer bulkdm"):
        await Checkpoint.open(path)


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CheckpointError, match="not a usable checkpoint"):
        await Checkpoint.open(path)


async def test_plan_marks_duplicates_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    rows = [planned(1, sender="a", recipient_id="7"), planned(2, sender="a", username="Bob"),
            planned(3, sender="a", recipient_id="7"), planned(4, sender="a", username="bob"),
            PlannedRow(line=5, state=RowState.INVALID, field="text", reason="empty_text")]
    await write_plan(path, rows)
    await write_plan(path, rows)  # a second plan replaces the first, it does not add to it
    checkpoint = await Checkpoint.open(path)
    try:
        assert await checkpoint.state_counts() == {"pending": 2, "skipped": 2, "invalid": 1}
        skipped = await checkpoint.rows_by_state(["skipped"], after_id=0, limit=10)
        assert [(r.line, r.duplicate_of_line, r.reason) for r in skipped] == [
            (3, 1, "duplicate"), (4, 2, "duplicate")]
        finished = await checkpoint.finished_after(0, limit=10)
        assert sorted(r.line for _, r in finished) == [3, 4, 5]
    finally:
        await checkpoint.close()


async def test_group_commit_makes_every_write_durable(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i, sender="a", recipient_id=str(i)) for i in range(1, 201)])
    checkpoint = await Checkpoint.open(path)
    rows = await checkpoint.due_rows("a", after_id=0, now_s=1e12, limit=500)
    await asyncio.gather(*(checkpoint.submit(cp.claim(
        row_id=r.id, attempt=1, sender="a", key="k", key_rotation=0, at_s=float(r.id),
        expect=Expect(state=RowState.PENDING, sender="a")))
                           for r in rows))
    await checkpoint.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM rows WHERE state = 'sending'").fetchone()[0] == 200
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 200


def _claim(row: RowRecord) -> list[Write]:
    return cp.claim(row_id=row.id, attempt=1, sender="a", key="k", key_rotation=0, at_s=1.0,
                    expect=Expect(state=RowState.PENDING, sender="a"))


async def test_a_failed_batch_fails_each_submitter_once_and_later_submits_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i, sender="a", recipient_id=str(i)) for i in (1, 2)])
    checkpoint = await Checkpoint.open(path)
    failures: list[BulkdmError] = []
    checkpoint.on_failure(failures.append)
    try:
        first, second = await checkpoint.due_rows("a", after_id=0, now_s=1e12, limit=2)
        # a bad write and a good one behind it (in its batch, or the next: the writer takes
        # what is queued when it is free): neither is applied, both callers hear it
        results = await asyncio.gather(
            checkpoint.submit([Write("INSERT INTO nowhere VALUES (?)", (1,))]),
            checkpoint.submit(_claim(first)),
            return_exceptions=True)
        assert [type(r) for r in results] == [CheckpointError, CheckpointError]
        assert "write failed: no such table" in str(results[1])
        with pytest.raises(CheckpointError, match="write failed"):
            await checkpoint.submit(_claim(second))  # nothing is written after a gap
        await checkpoint.flush()
        assert len(failures) == 1
        assert await checkpoint.state_counts() == {"pending": 2}
    finally:
        await checkpoint.close()


async def test_an_unwritable_checkpoint_is_a_storage_error_naming_the_file(tmp_path: Path) -> None:
    if not immutable_supported(tmp_path):
        pytest.skip("this file system or user cannot set the immutable flag")
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i, sender="a", recipient_id=str(i)) for i in (1, 2)])
    checkpoint = await Checkpoint.open(path)
    try:
        first, second = await checkpoint.due_rows("a", after_id=0, now_s=1e12, limit=2)
        await checkpoint.submit(_claim(first))
        with immutable_files([path, path.with_name(path.name + "-wal")]) as make_read_only:
            make_read_only()
            with pytest.raises(StorageError) as raised:
                await checkpoint.submit(_claim(second))
            with pytest.raises(StorageError):
                checkpoint.raise_if_failed()
    finally:
        await checkpoint.close()
    assert (raised.value.path, raised.value.reason) == (str(path), "the file is read-only (or immutable)")
    assert str(raised.value) == f"cannot write {path}: the file is read-only (or immutable)"
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    with sqlite3.connect(path) as db:  # what was durable before stays
        assert db.execute("SELECT line FROM rows WHERE state = 'sending'").fetchall() == [(1,)]


async def test_two_usernames_resolving_to_one_id_skip_exactly_one(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="a", username="x1"),
                            planned(2, sender="b", username="x2")])
    checkpoint = await Checkpoint.open(path)
    try:
        rows = await checkpoint.rows_by_state(["pending"], after_id=0, limit=10)
        await asyncio.gather(*(checkpoint.submit([cp.assign_recipient(
            row_id=r.id, user_id="99", seq=checkpoint.next_seq(), now_iso="now")]) for r in rows))
        assert await checkpoint.state_counts() == {"pending": 1, "skipped": 1}
    finally:
        await checkpoint.close()


async def test_in_flight_rows_become_unknown_on_start(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="a", recipient_id="1")])
    checkpoint = await Checkpoint.open(path)
    try:
        row = (await checkpoint.due_rows("a", after_id=0, now_s=1e12, limit=1))[0]
        await checkpoint.submit(cp.claim(row_id=row.id, attempt=1, sender="a", key="k",
                                         key_rotation=0, at_s=100.0,
                                         expect=Expect(state=RowState.PENDING, sender="a")))
        await checkpoint.submit([cp.unsettle_in_flight(settle_after_s=30.0)])
        assert await checkpoint.state_counts() == {"unknown": 1}
        # not looked at again until it had time to settle after it left
        assert await checkpoint.due_rows("a", after_id=0, now_s=129.0, limit=1) == []
        assert await checkpoint.next_due_s("a") == 130.0
        assert await checkpoint.attempt_times("a", since_s=50.0, limit=10) == [(100.0, False)]
        assert await checkpoint.attempt_times(None, since_s=150.0, limit=10) == []
    finally:
        await checkpoint.close()


async def test_a_restart_charges_the_api_key_with_recorded_media_uploads(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="a", recipient_id="1")])
    checkpoint = await Checkpoint.open(path)
    try:
        # two uploads took the key's slots; the second was in flight when the run stopped
        await checkpoint.submit([cp.upload(path="a.png", sender="a", at_s=100.0),
                                 cp.upload(path="b.png", sender="a", at_s=110.0)])
        await checkpoint.submit([cp.upload_done(path="a.png", sender="a", at_s=100.0)])
        key_history = await checkpoint.attempt_times(None, since_s=50.0, limit=10)
        sender_history = await checkpoint.attempt_times("a", since_s=50.0, limit=10)
    finally:
        await checkpoint.close()
    assert key_history == [(110.0, False), (100.0, True)]
    assert sender_history == []  # an upload takes the key's slot, not the sender's
    key = WindowLimiter((Rate(count=2, period_s=600.0),), guard_s=0.0)
    now_s = 120.0  # the restart: an upload in flight counts from now (engine._history)
    key.charge([t if settled else now_s for t, settled in key_history])
    assert key.next_allowed_s(now_s) == 700.0  # both slots are taken until the first ages out


def test_run_lock_names_the_holder_and_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with subprocess.Popen(
        [sys.executable, "-c", ("import sys, time\nfrom pathlib import Path\n"
         "from bulkdm.runlock import RunLock\n"
         "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)"),
         str(path)], stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            with pytest.raises(CheckpointLockedError, match=f"pid {holder.pid}"), RunLock(path):
                pass
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
    with RunLock(path):  # the kernel dropped the dead holder's lock
        pass


def test_run_lock_removes_its_file_on_leaving_and_a_holder_is_still_named(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    lock_file = tmp_path / "c.sqlite.lock"
    with subprocess.Popen(
        [sys.executable, "-c", ("import sys\nfrom pathlib import Path\n"
         "from bulkdm.runlock import RunLock\n"
         "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.readline()"),
         str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert lock_file.exists()
        with pytest.raises(CheckpointLockedError, match=f"pid {holder.pid}"), RunLock(path):
            pass
        holder.stdin.write("\n")  # let it leave the lock as a clean exit does
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0
    assert not lock_file.exists()
    with RunLock(path):
        assert lock_file.read_text().startswith(f"pid {os.getpid()} ")
    assert not lock_file.exists()


def test_a_runner_that_opened_a_lock_file_being_removed_opens_it_again(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    late = RunLock(path)
    with RunLock(path):
        stale_fd = os.open(late.path, os.O_RDWR)  # opened just before the holder leaves
    # its flock now succeeds, on a file no longer at the path: it must not count as the lock
    assert late._acquire(stale_fd) is False
    with late, pytest.raises(CheckpointLockedError, match=f"pid {os.getpid()}"), RunLock(path):
        pass  # the lock late then takes is the one a third runner finds


def test_row_columns_are_in_row_record_field_order() -> None:
    # the checkpoint builds records positionally: a field added to one and not the other, or
    # in another place, would shift every value after it
    columns = [c.strip() for c in cp._ROW_COLUMNS.split(",")]
    names = list(RowRecord._fields)
    assert columns == [n.removesuffix("_s") if n == "claimed_at_s" else n for n in names]


async def test_plan_totals_count_pending_rows_lookups_and_one_upload_per_file_and_sender(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    rows = [
        replace(planned(1, sender="a", recipient_id="1"), media="/m/pic.png"),
        replace(planned(2, sender="a", username="bo"), media="/m/pic.png"),  # same upload
        replace(planned(3, sender="b", recipient_id="3"), media="/m/pic.png"),  # other sender
        replace(planned(4, sender="a", username="cy"), media="/m/other.png"),
        planned(5, sender="b", username="di"),
        planned(6, sender="b", recipient_id="6"),
        replace(planned(7, sender="a", username="ed"), state=RowState.INVALID, media="/m/x.png"),
    ]
    await write_plan(path, rows)
    checkpoint = await Checkpoint.open(path)
    try:
        totals = await checkpoint.plan_totals(senders=2)
    finally:
        await checkpoint.close()
    assert (totals.pending, totals.lookups, totals.media_uploads) == (6, 3, 3)


async def test_of_two_claims_on_one_row_one_wins_and_the_batch_commits(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="a", recipient_id="1"),
                            planned(2, sender="a", recipient_id="2")])
    checkpoint = await Checkpoint.open(path)
    try:
        one, two = await checkpoint.due_rows("a", after_id=0, now_s=1e12, limit=2)
        pending_a = Expect(state=RowState.PENDING, sender="a")
        claims = [cp.claim(row_id=one.id, attempt=1, sender=s, key="k", key_rotation=0,
                           at_s=1.0, expect=pending_a) for s in ("a", "b")]
        # three submissions in one batch: the second claim loses without failing the others
        results = await asyncio.gather(
            checkpoint.submit(claims[0]), checkpoint.submit(claims[1]),
            checkpoint.submit([cp.defer(row_id=two.id, state=RowState.PENDING, due_s=5.0,
                                        reason="r", message=None, expect=pending_a)]))
        assert list(results) == [True, False, True]
        assert await checkpoint.state_counts() == {"sending": 1, "pending": 1}
        assert await checkpoint.attempt_times("a", since_s=0.0, limit=10) == [(1.0, False)]
        assert await checkpoint.attempt_times("b", since_s=0.0, limit=10) == []
        # a finish for a sender that no longer owns the row does not apply either
        assert not await checkpoint.submit([cp.finish(
            row_id=one.id, seq=checkpoint.next_seq(), done=Finish(state=RowState.SENT),
            finished_at="now", expect=Expect(state=RowState.SENDING, sender="b"))])
        assert await checkpoint.state_counts() == {"sending": 1, "pending": 1}
    finally:
        await checkpoint.close()
