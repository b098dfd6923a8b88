"""The checkpoint's replies (schema v6): a v5 checkpoint gains the tables and keeps its rows;
an answer is recorded once by its message id, numbered in the order it was recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import Checkpoint, ReplyRead
from bulkdm.schema import MIGRATIONS, SCHEMA_VERSION


def _v5(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript("".join(MIGRATIONS[:5]) + "PRAGMA user_version = 5;")
        db.execute("INSERT INTO rows (line, state, recipient_id, message_id, sender, sent_at) "
                   "VALUES (1, 'sent', '42', 'm-1', 'alice', '2026-11-30T06:00:00.000Z')")


async def test_a_version_5_checkpoint_gains_the_reply_tables_and_keeps_its_rows(
        tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    _v5(path)
    checkpoint = await Checkpoint.open(path)
    try:
        assert SCHEMA_VERSION >= 8
        assert [r.message_id for r in await checkpoint.sent_rows(after_id=0, limit=10)] == ["m-1"]
        assert await checkpoint.reply_counts() == (0, 0, 0)
    finally:
        await checkpoint.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"replies", "reply_reads"} <= tables
        columns = {r[1] for r in db.execute("PRAGMA table_info(reply_reads)")}
        assert columns == {"row_id", "until_at", "later_at", "read_at_s", "answered"}


async def test_an_answer_is_recorded_once_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    _v5(path)
    checkpoint = await Checkpoint.open(path)
    try:
        row_id = (await checkpoint.sent_rows(after_id=0, limit=1))[0].id
        for _ in range(3):  # three syncs read the same two answers
            await checkpoint.submit([
                cp.record_reply(message_id="r-2", row_id=row_id, text="hi",
                                received_at="2026-11-30T06:00:01.000Z", opt_out=False),
                cp.record_reply(message_id="r-3", row_id=row_id, text="STOP",
                                received_at="2026-11-30T06:00:02.000Z", opt_out=True),
                cp.read_replies_until(row_id=row_id, until_at="2026-11-30T06:00:02.000Z")])
            await checkpoint.flush()
        replies = await checkpoint.replies_after(0, limit=10)
        assert [(r.seq, r.message_id, r.opt_out) for r in replies] == [
            (1, "r-2", False), (2, "r-3", True)]
        assert replies[0].row.recipient_id == "42"
        assert await checkpoint.reply_counts() == (2, 1, 1)
        assert await checkpoint.reply_reads([row_id]) == {
            row_id: ReplyRead(until_at="2026-11-30T06:00:02.000Z")}
    finally:
        await checkpoint.close()


async def test_a_version_8_checkpoint_counts_no_reply_reads_billed_until_some_are(
        tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("".join(m + ";" for m in MIGRATIONS[:8]) + "PRAGMA user_version = 8;")
        db.execute("INSERT INTO attempts (row_id, attempt, sender, idempotency_key, at_s) "
                   "VALUES (1, 1, 'alice', 'k', 1.0)")
    checkpoint = await Checkpoint.open(path)
    try:
        assert await checkpoint.spend_counts() == (1, 0, 0, 0, 0)
        await checkpoint.submit([cp.count_reads(pages=2, results=7),
                                 cp.count_reads(pages=1, results=1)])
        await checkpoint.flush()
        assert await checkpoint.spend_counts() == (1, 0, 0, 3, 8)
    finally:
        await checkpoint.close()


async def test_a_version_9_checkpoints_read_marks_are_due_and_gain_when_they_were_read(
        tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    _v5(path)
    with sqlite3.connect(path) as db:
        db.executescript("".join(m + ";" for m in MIGRATIONS[5:9]) + "PRAGMA user_version = 9;")
        db.execute("INSERT INTO reply_reads (row_id, until_at) VALUES (1, '2026-11-30T07:00:00Z')")
    checkpoint = await Checkpoint.open(path)
    try:
        # read before bulkdm recorded when: no time, so a run's next sync reads it
        assert await checkpoint.reply_reads([1]) == {
            1: ReplyRead(until_at="2026-11-30T07:00:00Z", read_at_s=None, answered=False)}
        await checkpoint.submit([cp.read_replies_until(
            row_id=1, until_at="2026-11-30T08:00:00Z", read_at_s=1234.5, answered=True)])
        await checkpoint.flush()
        assert await checkpoint.reply_reads([1]) == {
            1: ReplyRead(until_at="2026-11-30T08:00:00Z", read_at_s=1234.5, answered=True)}
    finally:
        await checkpoint.close()
