"""The checkpoint: one SQLite file holding the plan, every attempt and every outcome.

One long-lived aiosqlite connection for reads and the plan, WAL, bound parameters only. Every
other write goes through :meth:`Checkpoint.submit`, which groups whatever writes are waiting into
one transaction (group commit), so durability with ``synchronous=FULL`` costs one fsync per batch
instead of one per row. That transaction runs in one call on a thread of its own, with a plain
``sqlite3`` connection (:class:`_Writer`): one round trip per group commit.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, fields
from enum import Enum
from itertools import chain
from pathlib import Path
from typing import Any, Final, TypeAlias

import aiosqlite

from bulkdm.errors import BulkdmError, CheckpointError, StorageError
from bulkdm.rows import UNBOUND, PlannedRow, RowRecord, RowState
from bulkdm.schema import INDEXES, LOAD_LATE_INDEXES, MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "UNBOUND",
    "UNSENT_STATES",
    "Checkpoint",
    "Expect",
    "Finish",
    "HandoffCursor",
    "PlainValues",
    "PlanMeta",
    "PlanRow",
    "PlanTotals",
    "PlanValues",
    "ReplyRead",
    "ReplyRecord",
    "RowParams",
    "SenderRecord",
    "Write",
    "amend_insert",
    "amend_line",
    "amend_remove",
    "amend_update",
    "assign_recipient",
    "attempt_result",
    "claim",
    "count_reads",
    "defer",
    "finish",
    "own_handoff",
    "own_replies",
    "pending_params",
    "pending_values",
    "plain_as_bulk",
    "read_replies_until",
    "reassign",
    "record_reply",
    "release_rows",
    "rotate_key",
    "row_params",
    "set_handoff_cursor",
    "set_last_run",
    "set_plan_meta",
    "set_replies_cursor",
    "set_sender",
    "store_media",
    "store_user",
    "unbind",
    "unsettle_in_flight",
    "upload",
    "upload_done",
]


#: meta key prefix of every handoff file the checkpoint has written
_OWNED: Final = "handoff.owned:"
#: meta key prefix of every replies file the checkpoint has written
_OWNED_REPLIES: Final = "replies.owned:"
_SYNC_MODES: Final = frozenset({"FULL", "NORMAL", "EXTRA", "OFF"})
#: a journal mode switch refused while another connection reads is tried this often, this far
#: apart (10 s in all, the busy timeout)
_MODE_TRIES: Final = 1000
_MODE_RETRY_S: Final = 0.01
#: SQLite's result codes that say the file cannot be written (not that a statement is wrong)
_STORAGE_REASONS: Final = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the file is read-only",
    "SQLITE_IOERR": "a disk I/O error (is the disk full, or the file read-only?)",
    "SQLITE_PERM": "permission denied",
}
_ROW_COLUMNS: Final = (
    "id, line, state, recipient_id, recipient_username, text, sender, external_id, media, "
    "consent, idempotency_key, attempts, message_id, media_id, reason, message, field, "
    "duplicate_of_line, sent_at, finished_at, request_id, write_action_id, text_sha256, "
    "key_rotation, claimed_at, bound_by_claim"
)
#: The columns a plan fills, in the order of :data:`RowParams`.
_PLAN_COLUMNS: Final = (
    "line", "state", "recipient_id", "recipient_username", "recipient_key", "text", "text_sha256",
    "sender", "external_id", "media", "consent", "idempotency_key", "field", "reason", "message",
    "duplicate_of_line", "original",
)
#: One ``rows`` insert: the values of :data:`_PLAN_COLUMNS`, in that order.
RowParams: TypeAlias = tuple[
    int, str, str | None, str | None, str | None, str | None, str | None, str | None,
    str | None, str | None, str | None, str | None, str | None, str | None, str | None, int | None,
    str | None,
]
#: The columns of a planned row in its bulk form (:data:`PlanValues`), in that order.
_BULK_COLUMNS: Final = (
    "line", "state", "recipient_id", "recipient_username", "recipient_key", "text", "text_sha256",
    "sender", "external_id", "media", "consent", "idempotency_key",
)
#: A pending row as the bulk plan inserts it: the values of :data:`_BULK_COLUMNS`, with ``""``
#: for a column that is NULL. The plan's five NULL columns are left out and no ``None`` is bound:
#: sqlite3 looks each ``None`` up in its adapter registry, about 0.45 µs a value, 3 µs of a
#: pending row's 7 (``NULLIF(?, '')`` in SQL costs a quarter of that). None of these columns is
#: ever ``""`` otherwise: the planner stores a blank value as NULL.
PlanValues: TypeAlias = tuple[int, str, str, str, str, str, str, str, str, str, str, str]
#: A plain pending row (by username, unbound, no media: most rows of most plans) as the bulk plan
#: inserts it: line, recipient_username, recipient_key, text, text_sha256, external_id and
#: consent (``""`` for NULL in the last two). The state and the four columns that are NULL
#: are written in the statement, so a row binds 7 values, not 12: 1,000,000 rows, 1.75 s of
#: SQLite's CPU instead of 2.45 s (measured alone, same schema and batches).
PlainValues: TypeAlias = tuple[int, str, str, str, str, str, str]
#: A planned row in any of the forms a plan is written in.
PlanRow: TypeAlias = "RowParams | PlanValues | PlainValues"
#: Most rows one INSERT statement takes (SQLite's limit on bound values may be lower).
_MAX_ROWS_PER_INSERT: Final = 2048
# Duplicates are found in a partial index of the pending rows by (recipient_key, line), built
# for this and dropped after: the GROUP BY reads that index in order, and the later rows of each
# repeated key are found through it. Straight from the table, the same statement sorted every
# key in a temporary b-tree and then scanned every pending row again: 1,000,000 rows, 3.1 s
# against 1.1 s with the index built (both measured on the same file).
_DEDUPE_INDEX: Final = (
    "CREATE INDEX rows_dedupe ON rows (recipient_key, line) "
    "WHERE state = 'pending' AND recipient_key IS NOT NULL"
)
_MARK_DUPLICATES: Final = """
WITH firsts AS MATERIALIZED (
    SELECT recipient_key, MIN(line) AS first_line FROM rows INDEXED BY rows_dedupe
    WHERE state = 'pending' AND recipient_key IS NOT NULL
    GROUP BY recipient_key HAVING COUNT(*) > 1
), later AS MATERIALIZED (
    SELECT r.id AS id, f.first_line AS first_line
    FROM firsts AS f CROSS JOIN rows AS r INDEXED BY rows_dedupe
    WHERE r.recipient_key = f.recipient_key AND r.state = 'pending'
        AND r.recipient_key IS NOT NULL AND r.line > f.first_line
)
UPDATE rows SET state = 'skipped', reason = 'duplicate', duplicate_of_line = later.first_line,
    message = 'the same recipient as line ' || later.first_line || '; messaged once'
FROM later WHERE rows.id = later.id
"""
# A username that resolves to a recipient already active in the campaign is a duplicate. One
# statement, so two rows resolving to the same id can never both see the other and both skip.
_ASSIGN_RECIPIENT: Final = """
UPDATE rows SET recipient_id = :uid, recipient_key = 'id:' || :uid,
    state = CASE WHEN d.line IS NULL THEN state ELSE 'skipped' END,
    reason = CASE WHEN d.line IS NULL THEN reason ELSE 'duplicate' END,
    duplicate_of_line = d.line,
    message = CASE WHEN d.line IS NULL THEN message
        ELSE 'resolves to the same recipient as line ' || d.line || '; messaged once' END,
    finish_seq = CASE WHEN d.line IS NULL THEN NULL ELSE :seq END,
    finished_at = CASE WHEN d.line IS NULL THEN NULL ELSE :now END
FROM (SELECT (SELECT MIN(line) FROM rows r WHERE r.recipient_id = :uid AND r.id != :id
        AND r.state IN ('pending', 'sending', 'unknown', 'sent')) AS line) AS d
WHERE rows.id = :id
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanMeta:
    """What a plan was made from; compared on every later plan or run."""

    campaign: str
    campaign_path: str
    campaign_sha256: str
    settings_sha256: str
    provider: str
    created_at: str
    #: the settings file the plan was made with ("" when none, or in a plan stored before it
    #: was recorded)
    settings_path: str = ""
    #: random, made at the first plan, kept by every later one ("" in checkpoints made before)
    campaign_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanTotals:
    pending: int
    lookups: int
    media_uploads: int


@dataclass(frozen=True, kw_only=True, slots=True)
class HandoffCursor:
    """The handoff file holds every finished row up to ``seq``, in ``offset`` bytes."""

    seq: int
    offset: int
    path: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplyRead:
    """How far a sent row's conversation was read: to ``until_at`` (the newest message then
    seen); ``later_at``: when the sender first wrote again after the row's DM (None: not yet);
    ``read_at_s``: when it was last read (None: before bulkdm recorded it), and whether that
    read found an answer."""

    until_at: str
    later_at: str | None = None
    read_at_s: float | None = None
    answered: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplyRecord:
    """A recorded answer and the sent row it answers."""

    seq: int
    message_id: str
    text: str
    received_at: str | None
    opt_out: bool
    row: RowRecord


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderRecord:
    account: str
    state: str
    until_s: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Write:
    """One statement for the group commit: SQL text and its bound parameters.

    ``expect_rows`` makes it conditional: the statement must change exactly that many rows, or
    the whole submission it belongs to is undone (and :meth:`Checkpoint.submit` returns False)
    while the other submissions of the batch commit. ``moves`` is the row state change it makes
    (before, after), for the submitter's counters once it applied. ``unbinds`` says it may
    leave rows bound to no sender (late binding), for senders waiting for such rows.
    """

    sql: str
    params: Sequence[Any] | dict[str, Any]
    expect_rows: int | None = None
    moves: tuple[str, str] | None = field(default=None, compare=False)
    unbinds: bool = field(default=False, compare=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Expect:
    """What a row must still be for a claim, finish or defer to apply: its state and owner as
    the writer read them. A row moved meanwhile (another sender took it, a sender was dropped)
    refuses the write, so a lost claim is never sent."""

    state: RowState
    sender: str | None


class Checkpoint:
    """The run's durable state. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, *, synchronous: str = "FULL") -> None:
        self._db = db
        self.path = path
        self._writer = _Writer(path, synchronous, self._settle)
        self._broken: BulkdmError | None = None  # the first failed write, kept for later calls
        self._on_failure: list[Callable[[BulkdmError], None]] = []
        #: submissions the writer has not answered yet, and an event set whenever there are none
        self._unanswered = 0
        self._answered = asyncio.Event()
        self._answered.set()
        self._seq = 0

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> Checkpoint:
        """Open (creating or migrating) the checkpoint at ``path``."""
        if synchronous.upper() not in _SYNC_MODES:
            raise CheckpointError(f"synchronous must be one of {sorted(_SYNC_MODES)}")
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise _error_of(path, exc, "cannot open the checkpoint") from exc
        checkpoint = cls(db, path, synchronous=synchronous.upper())
        try:
            await checkpoint._prepare(synchronous.upper())
        except sqlite3.Error as exc:
            await db.close()
            raise _error_of(path, exc, "not a usable checkpoint") from exc
        except CheckpointError:
            await db.close()
            raise
        return checkpoint

    async def _prepare(self, synchronous: str) -> None:
        await self._db.execute("PRAGMA busy_timeout = 10000")
        await self._db.execute("PRAGMA journal_mode = WAL")
        await self._db.execute(f"PRAGMA synchronous = {synchronous}")  # checked against a set
        version = await self._scalar("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise CheckpointError(
                f"{self.path} was written by a newer bulkdm (schema {version}); upgrade bulkdm"
            )
        for step in range(version, SCHEMA_VERSION):
            await self._db.executescript(
                f"BEGIN; {MIGRATIONS[step]}; PRAGMA user_version = {step + 1}; COMMIT;"
            )
        for index in INDEXES.values():
            await self._db.execute(index)
        self._seq = await self._last_seq()

    async def _last_seq(self) -> int:
        # the WHERE lets SQLite read the answer from the rows_finish index instead of the table
        return await self._scalar(
            "SELECT COALESCE(MAX(finish_seq), 0) FROM rows WHERE finish_seq IS NOT NULL"
        )

    async def close(self) -> None:
        await self.flush()
        try:
            await self._writer.close()
        finally:
            await self._db.close()

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        # one trip to SQLite's thread (a cursor's execute, fetch and close are three)
        return list(await self._db.execute_fetchall(sql, params))

    # -- group commit ---------------------------------------------------------------------

    def next_seq(self) -> int:
        """The next finish sequence number: the order rows reach a final state (handoff order)."""
        self._seq += 1
        return self._seq

    def on_failure(self, callback: Callable[[BulkdmError], None]) -> None:
        """Call ``callback`` with the error when a write first fails (a run stops there)."""
        self._on_failure.append(callback)

    def raise_if_failed(self) -> None:
        """Raise the error of the first failed write, if a write failed."""
        if self._broken is not None:
            raise _again(self._broken)

    async def submit(self, writes: Sequence[Write]) -> bool:
        """Apply ``writes`` atomically, grouped with other waiting writes; return once durable.

        False when a conditional write (``expect_rows``) found the row changed: then none of
        ``writes`` applied, and the other submissions of the batch are not affected.

        :raises StorageError: the file cannot be written (disk full, read-only).
        :raises CheckpointError: a write failed for another reason.
        Once a write has failed, every later call raises the same error at once: nothing is
        written after a gap.
        """
        self.raise_if_failed()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._unanswered += 1
        self._answered.clear()
        self._writer.submit(writes, future)
        return await future

    async def flush(self) -> None:
        """Wait until every submitted write is committed."""
        await self._answered.wait()

    def _settle(self, futures: list[asyncio.Future[bool]], result: _Result) -> None:
        """The writer's answer to a batch (on the event loop): each submitter's, in order."""
        self._unanswered -= len(futures)
        if self._unanswered == 0:
            self._answered.set()
        if not isinstance(result, list) and self._broken is None:
            if isinstance(result, CheckpointError):
                self._broken = result
            else:
                self._broken = _error_of(self.path, result, "write failed")
                self._broken.__cause__ = result
            for callback in self._on_failure:
                callback(self._broken)
        for index, future in enumerate(futures):
            if future.done():  # its submitter was cancelled: the write still went in
                continue
            if self._broken is None and isinstance(result, list):
                future.set_result(result[index])
            else:
                # the failed batch, and every one queued behind it, fails: each submitter once
                future.set_exception(_again(self._broken or CheckpointError(str(result))))

    # -- plan -----------------------------------------------------------------------------

    async def plan_meta(self) -> PlanMeta | None:
        rows = dict(await self._all("SELECT key, value FROM meta WHERE key LIKE 'plan.%'"))
        if not rows:
            return None
        return PlanMeta(**{f.name: rows.get(f"plan.{f.name}", "") for f in fields(PlanMeta)})

    async def has_attempts(self) -> bool:
        return await self._scalar("SELECT EXISTS (SELECT 1 FROM attempts)") == 1

    async def write_plan(self, meta: PlanMeta, batches: Iterable[Sequence[PlannedRow]]) -> None:
        """Replace the plan with ``batches`` in one transaction, then mark duplicates."""
        await self.write_plan_params(meta, ([row_params(row) for row in batch] for batch in batches))

    async def write_plan_params(
        self, meta: PlanMeta | Callable[[], PlanMeta], batches: Iterable[Sequence[PlanRow]]
    ) -> None:
        """:meth:`write_plan` for rows already in insert form (:func:`row_params`, or
        :func:`pending_values` for a pending row): the bulk path. ``meta`` may be a function,
        called once every batch is stored (a first plan's fingerprint is the bytes read).

        The next batch is taken from ``batches`` while SQLite stores the one before, so a
        planner that makes its batches lazily plans while the checkpoint writes.
        """
        await self.flush()
        # A bulk load through the WAL writes every page twice (log, then checkpoint); a rollback
        # journal writes it once. Without exclusive access the mode stays WAL, which is correct;
        # the writer's connection would deny it, so it closes (the next submit opens it again).
        await self._writer.release()
        try:
            await self._journal_mode("DELETE", wait=False)
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._replace_plan(meta, batches)
                    await self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a failed COMMIT leaves it open
                        await self._db.execute("ROLLBACK")
                    raise
            finally:
                await self._journal_mode("WAL", wait=True)
        except sqlite3.Error as exc:
            raise _error_of(self.path, exc, "cannot write the plan") from exc
        self._seq = await self._last_seq()

    async def _journal_mode(self, mode: str, *, wait: bool) -> None:
        """Switch the journal mode. Another connection reading the file (``status``, a script)
        makes SQLite refuse the switch at once, busy timeout or not: a bulk load then goes
        through the WAL (correct, slower); the way back to WAL is tried again until it takes
        (readers are brief), for the run that follows the plan."""
        for _ in range(_MODE_TRIES if wait else 1):
            try:
                await self._db.execute(f"PRAGMA journal_mode = {mode}")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
            if wait:
                await asyncio.sleep(_MODE_RETRY_S)
        # readers for _MODE_TRIES in a row: this connection goes on in the rollback journal
        # (correct; readers then hold writes back for up to the busy timeout), and the next
        # open of the checkpoint sets WAL again

    async def _replace_plan(
        self, meta_of: PlanMeta | Callable[[], PlanMeta], batches: Iterable[Sequence[PlanRow]]
    ) -> None:
        # the handoff file stays this checkpoint's; the next run writes it again from the start;
        # where it runs from and its token in the ledger stay too (it is the same checkpoint)
        for statement in (
            "DELETE FROM rows", "DELETE FROM attempts",
            "DELETE FROM meta WHERE key NOT LIKE 'handoff.%' AND key NOT LIKE 'checkpoint.%'",
            "UPDATE meta SET value = '0' WHERE key IN ('handoff.seq', 'handoff.offset')",
        ):
            await self._db.execute(statement)
        for name in LOAD_LATE_INDEXES:
            await self._db.execute(f"DROP INDEX IF EXISTS {name}")  # names are constants
        await self._insert_plan(batches)
        meta = meta_of if isinstance(meta_of, PlanMeta) else meta_of()
        for index in INDEXES.values():
            await self._db.execute(index)  # IF NOT EXISTS: builds the ones dropped above
        await self._db.execute(_DEDUPE_INDEX)
        await self._db.execute(_MARK_DUPLICATES)
        await self._db.execute("DROP INDEX rows_dedupe")
        await self._db.execute(
            "UPDATE rows SET finish_seq = id, finished_at = ? WHERE state IN ('invalid', 'skipped')",
            (meta.created_at,),
        )
        await self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [(f"plan.{f.name}", str(getattr(meta, f.name))) for f in fields(PlanMeta)],
        )

    async def _insert_plan(self, batches: Iterable[Sequence[PlanRow]]) -> None:
        """Insert every batch, taking the next one from ``batches`` while SQLite stores this one.

        A batch is one multi-row INSERT, not an ``executemany``: sqlite3 binds its values with
        the GIL held, then SQLite stores the whole batch in one step with the GIL released, so
        a lazy ``batches`` (the planner) runs on the event loop meanwhile. Row by row, the two
        threads only take turns, and a shorter switch interval does not help either way.

        Every row goes in as :data:`PlanValues`, so one statement takes them all in line order;
        a row in :data:`RowParams` form (invalid, skipped, or from :meth:`write_plan`) goes in as
        a stand-in and is then updated by id to its values (the table is empty before a plan,
        so the n-th row inserted gets id n).
        """
        stored: asyncio.Future[Any] | None = None
        next_id = 1
        try:
            for batch in batches:  # planned while the batch before it is stored
                if stored is not None:
                    await stored
                stored = self._store_rows(batch, next_id)
                next_id += len(batch)
                await asyncio.sleep(0)  # hand the inserts to aiosqlite's thread, then plan on
        finally:
            if stored is not None:
                await stored  # even when planning failed: the ROLLBACK must not overtake it

    def _store_rows(
        self, batch: Sequence[PlanRow], first_id: int
    ) -> asyncio.Future[list[Any]]:
        values, stand_in, sql = _insert_form(batch)
        full = len(_PLAN_COLUMNS)
        fixes = [(*row, first_id + n) for n, row in enumerate(batch) if len(row) == full]
        for fix in fixes:  # few: the invalid and skipped rows
            values[fix[-1] - first_id] = stand_in
        step = _rows_per_insert()
        chunks = [values[start : start + step] for start in range(0, len(values), step)]
        writes = [self._db.execute(sql(len(chunk)), list(chain.from_iterable(chunk)))
                  for chunk in chunks]
        if fixes:
            writes.append(self._db.executemany(_FIX_ROW_SQL, fixes))
        return asyncio.gather(*writes)

    async def state_counts(self) -> dict[str, int]:
        return dict(await self._all("SELECT state, COUNT(*) FROM rows GROUP BY state"))

    async def reason_counts(self, states: Sequence[str] = ("invalid", "skipped")) -> dict[str, int]:
        marks = ", ".join("?" * len(states))
        sql = f"SELECT reason, COUNT(*) FROM rows WHERE state IN ({marks}) GROUP BY reason"
        return {str(k): v for k, v in await self._all(sql, tuple(states))}

    async def sender_counts(self, state: str = "pending") -> dict[str, int]:
        """Rows in ``state`` per sender; rows not bound to one yet under :data:`UNBOUND`."""
        sql = "SELECT sender, COUNT(*) FROM rows WHERE state = ? GROUP BY sender"
        return {UNBOUND if k is None else str(k): v for k, v in await self._all(sql, (state,))}

    async def in_doubt_unnamed(self, named: Iterable[str]) -> dict[str, int]:
        """Rows that may have been delivered (sending, unknown) by accounts not in ``named``
        (in any case), by account: only their own key and conversation can settle them."""
        kept = {account.casefold() for account in named}
        sql = ("SELECT sender, COUNT(*) FROM rows WHERE state IN ('sending', 'unknown') "
               "AND sender IS NOT NULL GROUP BY sender")
        return {str(k): v for k, v in await self._all(sql, ()) if str(k).casefold() not in kept}

    async def plan_totals(self, *, senders: int) -> PlanTotals:
        """The pending rows, the lookups they need, and at most how many uploads: one per
        picture and sender (a media id is the account's own), and a row bound to no sender
        yet may go to any of the ``senders`` that has not uploaded its picture."""
        # one pass over the pending rows (a fresh plan's are nearly all of them)
        found = await self._all(
            "SELECT COUNT(*), COALESCE(SUM(recipient_id IS NULL), 0), "
            "COUNT(DISTINCT CASE WHEN media IS NOT NULL AND sender IS NOT NULL "
            "THEN json_array(media, sender) END), "
            "COALESCE(SUM(media IS NOT NULL AND sender IS NULL), 0) "
            "FROM rows WHERE state = 'pending'"
        )
        pending, lookups, media, unbound_media = found[0]
        if unbound_media:
            media += sum(min(max(0, senders - bound), unbound)
                         for bound, unbound in await self._all(_UNBOUND_UPLOADS))
        return PlanTotals(pending=pending, lookups=lookups, media_uploads=media)

    async def invalid_rows(self, limit: int | None) -> list[RowRecord]:
        sql = f"SELECT {_ROW_COLUMNS} FROM rows WHERE state = 'invalid' ORDER BY line LIMIT ?"
        return [_record(r) for r in await self._all(sql, (-1 if limit is None else limit,))]

    # -- run: reading work ----------------------------------------------------------------

    async def due_rows(self, sender: str, *, after_id: int, now_s: float, limit: int) -> list[RowRecord]:
        """Rows of ``sender`` to work on now (pending or unknown), in id order after ``after_id``."""
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE sender = ? AND state IN ('pending', 'unknown') "
            "AND id > ? AND next_attempt_at <= ? ORDER BY id LIMIT ?"
        )
        return [_record(r) for r in await self._all(sql, (sender, after_id, now_s, limit))]

    async def next_due_s(self, sender: str) -> float | None:
        """When the earliest waiting row of ``sender`` is due; None when it has none left."""
        rows = await self._all(
            "SELECT MIN(next_attempt_at), COUNT(*) FROM rows "
            "WHERE sender = ? AND state IN ('pending', 'unknown')",
            (sender,),
        )
        return None if not rows or rows[0][1] == 0 else float(rows[0][0])

    async def unbound_rows(self, *, after_id: int, now_s: float, limit: int) -> list[RowRecord]:
        """Pending rows bound to no sender yet, due now, in id order after ``after_id``."""
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE state = 'pending' AND sender IS NULL "
            "AND id > ? AND next_attempt_at <= ? ORDER BY id LIMIT ?"
        )
        return [_record(r) for r in await self._all(sql, (after_id, now_s, limit))]

    async def next_unbound_due_s(self) -> float | None:
        """When the earliest unbound pending row is due; None when there is none."""
        rows = await self._all(
            "SELECT MIN(next_attempt_at), COUNT(*) FROM rows "
            "WHERE state = 'pending' AND sender IS NULL"
        )
        return None if not rows or rows[0][1] == 0 else float(rows[0][0])

    async def due_s(self, row_id: int) -> float | None:
        """When the row is due for its next attempt or settling (None: no such row)."""
        rows = await self._all("SELECT next_attempt_at FROM rows WHERE id = ?", (row_id,))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def rows_by_state(self, states: Sequence[str], *, after_id: int, limit: int) -> list[RowRecord]:
        marks = ", ".join("?" * len(states))
        # +state: walk the table in id order (one pass for a whole export) instead of
        # gathering every row of the states from the index and sorting them for each page
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE +state IN ({marks}) AND id > ? "
            "ORDER BY id LIMIT ?"
        )
        return [_record(r) for r in await self._all(sql, (*states, after_id, limit))]

    async def originals(self, ids: Sequence[int]) -> dict[int, str]:
        """The original fields (JSON objects) of those of ``ids`` that were invalid when read."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT id, original FROM rows WHERE id IN ({marks}) AND original IS NOT NULL"
        return {int(i): str(o) for i, o in await self._all(sql, tuple(ids))}

    async def rows_by_ids(self, ids: Sequence[int]) -> list[RowRecord]:
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT {_ROW_COLUMNS} FROM rows WHERE id IN ({marks}) ORDER BY id"
        return [_record(r) for r in await self._all(sql, tuple(ids))]

    async def rows_of_sender(
        self, sender: str, states: Sequence[str], *, after_id: int, limit: int
    ) -> list[RowRecord]:
        marks = ", ".join("?" * len(states))
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE sender = ? AND state IN ({marks}) AND id > ? "
            "ORDER BY id LIMIT ?"
        )
        return [_record(r) for r in await self._all(sql, (sender, *states, after_id, limit))]

    async def sent_as(self, row_id: int, key: str) -> str | None:
        """The account as the row's first attempt under ``key`` named it (None: no attempt
        under it, or one made before bulkdm kept it): a replay must name it the same, however
        the settings spell it now."""
        rows = await self._all(
            "SELECT sent_as FROM attempts WHERE row_id = ? AND idempotency_key = ? "
            "ORDER BY attempt LIMIT 1", (row_id, key))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    async def senders_tried(self, row_id: int) -> list[str]:
        return [str(r[0]) for r in await self._all(
            "SELECT DISTINCT sender FROM attempts WHERE row_id = ?", (row_id,)
        )]

    async def failures(self, row_id: int, *, exclude_codes: Sequence[str]) -> int:
        """Attempts of a row that failed for a reason that counts against its retry budget."""
        marks = ", ".join("?" * len(exclude_codes)) or "''"
        return await self._scalar(
            f"SELECT COUNT(*) FROM attempts WHERE row_id = ? AND action IN ('retry', 'verify') "
            f"AND COALESCE(code, '') NOT IN ({marks})",
            (row_id, *exclude_codes),
        )

    async def first_attempt_s(self, row_id: int, sender: str) -> float | None:
        """When ``sender``'s first attempt at the row took its slot (its request left later)."""
        rows = await self._all(
            "SELECT MIN(at_s) FROM attempts WHERE row_id = ? AND sender = ?", (row_id, sender)
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def attempt_times(
        self, sender: str | None, *, since_s: float, limit: int
    ) -> list[tuple[float, bool]]:
        """(time, settled) of the newest ``limit`` attempts since ``since_s``, of one sender or
        (``None``) of all: a limiter's history on a restart, bounded by what it can hold. An
        attempt without a result was in flight when the run stopped; its time is when its slot
        was taken, and the request may have left later. With ``None`` (the API key's history),
        media uploads count too: they take the key's write slots, not a sender's."""
        if sender is None:
            sql = ("SELECT at_s, action IS NOT NULL FROM attempts WHERE at_s >= ? UNION ALL "
                   "SELECT at_s, done FROM uploads WHERE at_s >= ? ORDER BY 1 DESC LIMIT ?")
            params: tuple[Any, ...] = (since_s, since_s, limit)
        else:
            # an account is its handle whatever its case: the settings may have changed it
            sql = ("SELECT at_s, action IS NOT NULL FROM attempts WHERE sender = ? COLLATE NOCASE "
                   "AND at_s >= ? ORDER BY at_s DESC LIMIT ?")
            params = (sender, since_s, limit)
        return [(float(t), bool(d)) for t, d in await self._all(sql, params)]

    async def cached_users(self, usernames: Sequence[str]) -> dict[str, tuple[str | None, str]]:
        """username (lower case) -> (user id or None, status) for those already resolved."""
        if not usernames:
            return {}
        marks = ", ".join("?" * len(usernames))
        sql = f"SELECT username, user_id, status FROM users WHERE username IN ({marks})"
        return {str(u): (i, str(s)) for u, i, s in await self._all(sql, tuple(usernames))}

    async def cached_media(self, path: str, sender: str) -> str | None:
        rows = await self._all(
            "SELECT media_id FROM media WHERE path = ? AND sender = ?", (path, sender)
        )
        return str(rows[0][0]) if rows else None

    async def sender_records(self) -> list[SenderRecord]:
        rows = await self._all("SELECT account, state, until_s, reason FROM senders")
        return [SenderRecord(account=a, state=s, until_s=u, reason=r) for a, s, u, r in rows]

    async def finished_after(self, seq: int, *, limit: int) -> list[tuple[int, RowRecord]]:
        sql = (
            f"SELECT finish_seq, {_ROW_COLUMNS} FROM rows WHERE finish_seq > ? "
            "ORDER BY finish_seq LIMIT ?"
        )
        return [(int(r[0]), _record(r[1:])) for r in await self._all(sql, (seq, limit))]

    async def handoff_cursor(self) -> HandoffCursor:
        rows = dict(await self._all("SELECT key, value FROM meta WHERE key LIKE 'handoff.%'"))
        return HandoffCursor(
            seq=int(rows.get("handoff.seq", 0)),
            offset=int(rows.get("handoff.offset", 0)),
            path=rows.get("handoff.path"),
        )

    async def wrote_handoff(self, path: str) -> bool:
        """Whether this checkpoint has written the handoff file ``path`` (see :func:`own_handoff`)."""
        return await self._scalar(
            "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?)", (_OWNED + path,)
        ) == 1

    async def wrote_replies(self, path: str) -> bool:
        """Whether this checkpoint has written the replies file ``path`` (see :func:`own_replies`)."""
        return await self._scalar(
            "SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?)", (_OWNED_REPLIES + path,)
        ) == 1

    async def issued_key(self, key: str) -> bool:
        """Whether this checkpoint gave a row the idempotency key ``key`` (a handoff record's)."""
        return await self._scalar(
            "SELECT EXISTS (SELECT 1 FROM attempts WHERE idempotency_key = ?) "
            "OR EXISTS (SELECT 1 FROM rows WHERE idempotency_key = ?)", (key, key)) == 1

    async def recorded_reply(self, message_id: str) -> bool:
        """Whether this checkpoint recorded the answer ``message_id`` (a replies record's)."""
        return await self._scalar(
            "SELECT EXISTS (SELECT 1 FROM replies WHERE message_id = ?)", (message_id,)) == 1

    async def owned_files(self) -> dict[str, list[str]]:
        """Every file this checkpoint has written or is writing, by kind (``handoff file``,
        ``replies file``): the recorded owners and the cursors' paths."""
        rows = await self._all(
            "SELECT key, value FROM meta WHERE key LIKE 'handoff.%' OR key LIKE 'replies.%'")
        found: dict[str, list[str]] = {"handoff file": [], "replies file": []}
        for key, value in rows:
            kind = "handoff file" if key.startswith("handoff.") else "replies file"
            if key.startswith((_OWNED, _OWNED_REPLIES)):
                found[kind].append(key.removeprefix(_OWNED).removeprefix(_OWNED_REPLIES))
            elif key in ("handoff.path", "replies.path"):
                found[kind].append(value)
        return {kind: sorted(set(paths)) for kind, paths in found.items()}

    async def spend_counts(self) -> tuple[int, int, int, int, int]:
        """What this campaign has been billed for so far: DM attempts (retries and replays
        included), media uploads and username lookups made, and the history pages its reply
        reads took and the messages those returned."""
        rows = await self._all(
            "SELECT (SELECT COUNT(*) FROM attempts), (SELECT COUNT(*) FROM uploads), "
            "(SELECT COUNT(*) FROM users), (SELECT COALESCE(SUM(pages), 0) FROM read_costs), "
            "(SELECT COALESCE(SUM(results), 0) FROM read_costs)", ())
        dms, uploads, lookups, pages, results = rows[0]
        return int(dms), int(uploads), int(lookups), int(pages), int(results)

    async def failure_counts(self) -> dict[str, int]:
        return await self.reason_counts(("failed",))

    # -- replies (see bulkdm.replies) -----------------------------------------------------------

    async def sent_rows(self, *, after_id: int, limit: int) -> list[RowRecord]:
        """The conversations to read, by id: rows sent (with a message id), and rows whose DM
        may have been delivered (``unknown``, or failed ``outcome_unknown``): a STOP answering
        one of those is an opt-out all the same."""
        sql = (f"SELECT {_ROW_COLUMNS} FROM rows WHERE id > ? AND recipient_id IS NOT NULL AND "
               "((state = 'sent' AND message_id IS NOT NULL) OR state = 'unknown' OR "
               "(state = 'failed' AND reason = 'outcome_unknown')) ORDER BY id LIMIT ?")
        return [_record(r) for r in await self._all(sql, (after_id, limit))]

    async def reply_reads(self, row_ids: Sequence[int]) -> dict[int, ReplyRead]:
        """How far each row's conversation was read whole (the newest message then seen), and
        when the sender first wrote again after the row's DM, if it did."""
        marks = ", ".join("?" * len(row_ids))
        rows = await self._all(f"SELECT row_id, until_at, later_at, read_at_s, answered FROM "
                               f"reply_reads WHERE row_id IN ({marks})", tuple(row_ids))
        return {int(r[0]): ReplyRead(until_at=str(r[1]), later_at=r[2], read_at_s=r[3],
                                     answered=bool(r[4])) for r in rows}

    async def replies_after(self, seq: int, *, limit: int) -> list[ReplyRecord]:
        """Recorded replies after ``seq``, in order, with their rows."""
        sql = ("SELECT r.seq, r.message_id, r.text, r.received_at, r.opt_out, "
               f"{', '.join('w.' + c.strip() for c in _ROW_COLUMNS.split(','))} "
               "FROM replies r JOIN rows w ON w.id = r.row_id WHERE r.seq > ? "
               "ORDER BY r.seq LIMIT ?")
        return [ReplyRecord(seq=int(r[0]), message_id=str(r[1]), text=str(r[2]),
                            received_at=r[3], opt_out=bool(r[4]), row=_record(r[5:]))
                for r in await self._all(sql, (seq, limit))]

    async def reply_counts(self) -> tuple[int, int, int]:
        """(replies, rows answered, rows whose recipient opted out in an answer)."""
        rows = await self._all("SELECT COUNT(*), COUNT(DISTINCT row_id), "
                               "COUNT(DISTINCT CASE WHEN opt_out THEN row_id END) FROM replies")
        return int(rows[0][0]), int(rows[0][1]), int(rows[0][2])

    async def key_rest_until_s(self) -> float | None:
        """Until when the API key rests (:func:`set_key_rest`; None: it never did)."""
        value = await self._meta_value(_KEY_REST)
        return None if value is None else float(value.partition(" ")[0])

    async def run_tokens(self) -> set[str]:
        """The campaign's tokens this checkpoint holds (:func:`set_run_tokens`), or none."""
        marks = ", ".join("?" * len(_RUN_TOKENS))
        rows = await self._all(f"SELECT value FROM meta WHERE key IN ({marks})", _RUN_TOKENS)
        return {str(value) for value, in rows}

    async def ran_at(self) -> str | None:
        """Where the checkpoint was last run from (:func:`set_ran_at`)."""
        return await self._meta_value(_RAN_AT)

    async def _meta_value(self, key: str) -> str | None:
        rows = await self._all("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def sender_waits(self) -> dict[str, tuple[float, str]]:
        """Each sender's last long wait in a run (:func:`set_sender_wait`): (until, why)."""
        rows = await self._all("SELECT key, value FROM meta WHERE key LIKE ?",
                               (_SENDER_WAIT + "%",))
        waits = {}
        for key, value in rows:
            until, _, reason = value.partition(" ")
            waits[key.removeprefix(_SENDER_WAIT)] = (float(until), reason)
        return waits

    async def last_run(self) -> dict[str, str]:
        """How the last run ended: ``finish_reason``, ``ended_at`` and, if it said why,
        ``detail`` (empty before any run ended)."""
        rows = await self._all("SELECT key, value FROM meta WHERE key LIKE 'run.%'")
        return {key.removeprefix("run."): value for key, value in rows}

    async def replies_cursor(self) -> HandoffCursor:
        rows = dict(await self._all("SELECT key, value FROM meta WHERE key LIKE 'replies.%'"))
        return HandoffCursor(seq=int(rows.get("replies.seq", 0)),
                             offset=int(rows.get("replies.offset", 0)),
                             path=rows.get("replies.path"))


@functools.cache
def _rows_per_insert() -> int:
    # the limit on bound values is a build option of SQLite: 32,766 by default since 3.32, 999
    # before; every connection of the process uses the same library
    with closing(sqlite3.connect(":memory:")) as probe:
        values = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(_MAX_ROWS_PER_INSERT, values // len(_BULK_COLUMNS)))


#: a row of the plan inserted for a :data:`RowParams` row, updated to its values at once
_STAND_IN: Final = (0, "invalid", "", "", "", "", "", "", "", "", "", "")
_PLAIN_STAND_IN: Final = (0, "", "", "", "", "", "")
#: the columns of :data:`PlainValues`, in that order
_PLAIN_COLUMNS: Final = (
    "line", "recipient_username", "recipient_key", "text", "text_sha256", "external_id",
    "consent",
)
_PLAIN_MARKS: Final = "(?, 'pending', NULL, ?, ?, ?, ?, NULL, NULLIF(?, ''), NULL, NULLIF(?, ''), NULL)"
_FIX_ROW_SQL: Final = (
    f"UPDATE rows SET {', '.join(f'{name} = ?' for name in _PLAN_COLUMNS)} WHERE id = ?"
)
#: the bulk columns that a pending row may leave NULL (given as "")
_MAY_BE_EMPTY: Final = frozenset(
    {"recipient_id", "recipient_username", "sender", "external_id", "media", "consent",
     "idempotency_key"}
)
_BULK_MARKS: Final = "(" + ", ".join(
    "NULLIF(?, '')" if name in _MAY_BE_EMPTY else "?" for name in _BULK_COLUMNS
) + ")"


@functools.lru_cache(maxsize=4)  # a plan uses two sizes: full batches and the last one
def _insert_rows_sql(count: int) -> str:
    return f"INSERT INTO rows ({', '.join(_BULK_COLUMNS)}) VALUES " + ", ".join(
        [_BULK_MARKS] * count
    )


def _insert_form(
    batch: Sequence[PlanRow],
) -> tuple[list[Any], tuple[Any, ...], Callable[[int], str]]:
    """A batch's rows in one insert form, that form's stand-in and its statement.

    Plain rows go in their own form (with stand-ins for full rows); a batch that also holds
    other pending rows in the bulk form goes in that form, its plain rows converted.
    """
    values: list[Any] = list(batch)
    widths = set(map(len, values))
    if len(_BULK_COLUMNS) not in widths:
        return values, _PLAIN_STAND_IN, _insert_plain_sql
    if len(_PLAIN_COLUMNS) in widths:
        values = [plain_as_bulk(row) if len(row) == len(_PLAIN_COLUMNS) else row
                  for row in values]
    return values, _STAND_IN, _insert_rows_sql


@functools.lru_cache(maxsize=4)
def _insert_plain_sql(count: int) -> str:
    return f"INSERT INTO rows ({', '.join(_BULK_COLUMNS)}) VALUES " + ", ".join(
        [_PLAIN_MARKS] * count
    )


def plain_as_bulk(row: PlainValues) -> PlanValues:
    """A plain row in the bulk form (:data:`PlanValues`), for a batch that holds both."""
    line, username, key, text, digest, external_id, consent = row
    return (line, "pending", "", username, key, text, digest, "", external_id, "", consent, "")


def row_params(row: PlannedRow) -> RowParams:
    """The insert values of a planned row, in :data:`RowParams` order."""
    return (
        row.line, row.state.value, row.recipient_id, row.recipient_username, row.recipient_key,
        row.text, row.text_sha256, row.sender, row.external_id, row.media, row.consent,
        row.idempotency_key, row.field, row.reason, row.message, row.duplicate_of_line,
        row.original,
    )


def pending_params(
    line: int,
    recipient_id: str | None,
    recipient_username: str | None,
    recipient_key: str,
    text: str,
    text_sha256: str,
    sender: str | None,
    external_id: str | None,
    media: str | None,
    consent: str | None,
    idempotency_key: str | None,
) -> RowParams:
    """The insert values of a pending row, built without a :class:`PlannedRow`.

    Equal to ``row_params(PlannedRow(state=RowState.PENDING, ...))`` with the same values; the
    planner calls it once a row, a million times a plan, where the dataclass costs about 1.5 µs.
    """
    return (
        line, "pending", recipient_id, recipient_username, recipient_key, text, text_sha256,
        sender, external_id, media, consent, idempotency_key, None, None, None, None, None,
    )


def pending_values(
    line: int,
    recipient_id: str | None,
    recipient_username: str | None,
    recipient_key: str,
    text: str,
    text_sha256: str,
    sender: str | None,
    external_id: str | None,
    media: str | None,
    consent: str | None,
    idempotency_key: str | None,
) -> PlanValues:
    """:func:`pending_params` in the bulk insert form, :data:`PlanValues` (``""`` for NULL: a
    row bound to an account late has neither a sender nor a key yet)."""
    return (
        line, "pending", recipient_id or "", recipient_username or "", recipient_key, text,
        text_sha256, sender or "", external_id or "", media or "", consent or "",
        idempotency_key or "",
    )


#: the writer's answer to a batch: whether each submission applied, or why none did
_Result: TypeAlias = "list[bool] | sqlite3.Error | CheckpointError"
_Settle: TypeAlias = "Callable[[list[asyncio.Future[bool]], _Result], None]"
#: an item of the writer's queue: a submission, or a call to run on its thread between batches
_Item: TypeAlias = "tuple[Sequence[Write], asyncio.Future[bool]] | Callable[[], None]"


class _Mark(Enum):
    EMPTY = "the writer's queue ran out"


#: per picture of a pending row bound to no sender: the senders its bound rows have, and its
#: unbound rows
_UNBOUND_UPLOADS: Final = (
    "SELECT COUNT(DISTINCT sender), SUM(sender IS NULL) FROM rows "
    "WHERE state = 'pending' AND media IS NOT NULL GROUP BY media HAVING SUM(sender IS NULL) > 0"
)


class _Writer:
    """The group commit: its own ``sqlite3`` connection on a thread of its own, opened at the
    first write. The thread takes every submission waiting in its queue as one transaction, and
    the next batch the moment one commits: no trip through the event loop between batches (a
    task handing batches to an executor left the writer idle for that trip, about as long as
    the commit itself). Answers go back to the loop once per batch."""

    def __init__(self, path: Path, synchronous: str, settle: _Settle) -> None:
        self._path = path
        self._synchronous = synchronous
        self._settle = settle
        self._items: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None  # touched on the writer's thread only
        self._failed = False  # thread only: nothing is written after a failed batch

    def submit(self, writes: Sequence[Write], future: asyncio.Future[bool]) -> None:
        """Queue one submission; ``settle`` is told the outcome on the loop of ``future``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(future.get_loop(),), name="bulkdm-commit", daemon=True)
            self._thread.start()
        self._items.put((writes, future))

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        batch: list[tuple[Sequence[Write], asyncio.Future[bool]]] = []
        try:
            item: _Item | _Mark | None = self._items.get()
            while item is not None:
                if item is _Mark.EMPTY:
                    item = self._items.get()
                elif callable(item):
                    item()
                    item = self._items.get()
                else:
                    batch = [item]
                    item = self._gather(batch)
                    result = self._result([writes for writes, _ in batch])
                    loop.call_soon_threadsafe(self._settle, [f for _, f in batch], result)
                    batch = []
            self._close_db()
        finally:
            if batch:  # a bug stopped the thread (its error is printed): nobody waits forever
                self._gather(batch)
                stopped = CheckpointError(f"{self._path}: the checkpoint's writer stopped")
                loop.call_soon_threadsafe(self._settle, [f for _, f in batch], stopped)

    def _gather(self, batch: list[tuple[Sequence[Write], asyncio.Future[bool]]]) -> _Item | _Mark | None:
        """Add the submissions queued behind ``batch``'s first; the call or end that stopped
        it, or EMPTY when the queue ran out."""
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                return _Mark.EMPTY
            if item is None or callable(item):
                return item
            batch.append(item)

    def _result(self, batch: list[Sequence[Write]]) -> _Result:
        if self._failed:
            return sqlite3.OperationalError("an earlier write failed")
        try:
            return _apply(self._connection(), batch)
        except sqlite3.Error as exc:
            self._failed = True
            return exc

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, isolation_level=None)
            try:
                db.execute("PRAGMA busy_timeout = 10000")
                db.execute(f"PRAGMA synchronous = {self._synchronous}")  # checked against a set
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    async def release(self) -> None:
        """Close the connection; the next submission opens it again."""
        await self._call(self._close_db)

    async def _call(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the writer's thread, after the batches queued before it."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def call() -> None:
            try:
                function()
            finally:
                loop.call_soon_threadsafe(_resolve, done)

        self._items.put(call)
        await done

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._items.put(None)
            await asyncio.to_thread(thread.join)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _error_of(path: Path, exc: sqlite3.Error, doing: str) -> BulkdmError:
    """A :class:`StorageError` when SQLite says the file cannot be written, else a
    :class:`CheckpointError` that says what was being done."""
    # the primary code: SQLITE_IOERR_WRITE is an SQLITE_IOERR
    primary = "_".join(str(getattr(exc, "sqlite_errorname", "")).split("_")[:2])
    reason = _STORAGE_REASONS.get(primary)
    if reason is None:
        return CheckpointError(f"{path}: {doing}: {exc}")
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")]
    return StorageError.diagnosed(path, files, reason)


def _again(error: BulkdmError) -> BulkdmError:
    """A copy of ``error`` for one more caller (one instance raised many times would grow one
    traceback with every caller's frames)."""
    copy = StorageError(error.path, error.reason) if isinstance(error, StorageError) \
        else CheckpointError(str(error))
    copy.__cause__ = error.__cause__
    return copy


def _apply(db: sqlite3.Connection, batch: list[Sequence[Write]]) -> list[bool]:
    """One transaction for a batch of submissions; whether each applied, in order."""
    applied: list[bool] = []
    plain: list[Write] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for writes in batch:
            if all(w.expect_rows is None for w in writes):
                plain.extend(writes)  # grouped with its neighbours into executemany calls
                applied.append(True)
                continue
            _execute_grouped(db, plain)
            plain = []
            applied.append(_apply_conditional(db, writes))
        _execute_grouped(db, plain)
    except sqlite3.Error:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return applied


def _execute_grouped(db: sqlite3.Connection, writes: list[Write]) -> None:
    start = 0
    while start < len(writes):
        end = start
        while end < len(writes) and writes[end].sql == writes[start].sql:
            end += 1
        db.executemany(writes[start].sql, [w.params for w in writes[start:end]])
        start = end


def _apply_conditional(db: sqlite3.Connection, writes: Sequence[Write]) -> bool:
    """One submission, undone (False) at the first write whose row count is not what it
    expects; the writes after it never run.

    A savepoint is opened only when a conditional write comes after another write. A claim's
    conditional write comes first: when it changes no row, nothing of the submission was
    written, and two statements a claim are saved (the writer's thread takes the GIL back
    for every statement)."""
    if any(write.expect_rows is not None for write in writes[1:]):
        return _apply_in_savepoint(db, writes)
    for write in writes:
        changed = db.execute(write.sql, write.params).rowcount
        if write.expect_rows is not None and changed != write.expect_rows:
            if changed != 0:  # a conditional write names one row by its id
                raise sqlite3.IntegrityError(f"a conditional write changed {changed} rows")
            return False  # the first write: nothing was written
    return True


def _apply_in_savepoint(db: sqlite3.Connection, writes: Sequence[Write]) -> bool:
    db.execute("SAVEPOINT conditional")
    for write in writes:
        changed = db.execute(write.sql, write.params).rowcount
        if write.expect_rows is not None and changed != write.expect_rows:
            db.execute("ROLLBACK TO conditional")
            db.execute("RELEASE conditional")
            return False
    db.execute("RELEASE conditional")
    return True


def _record(values: Sequence[Any]) -> RowRecord:
    return RowRecord(values[0], values[1], RowState(values[2]), *values[3:])


# -- writes: pure builders; the engine groups them and passes them to Checkpoint.submit ------


def claim(
    *, row_id: int, attempt: int, sender: str, key: str, key_rotation: int, at_s: float,
    expect: Expect,
) -> list[Write]:
    """The write-ahead intent: committed before the request leaves. Conditional: it applies
    only while the row is still ``expect`` with ``attempt - 1`` attempts, so of two claims on
    one row exactly one wins; a claim that loses must not be sent. A claim of an unbound row
    (``expect.sender`` None) binds it to ``sender``: two senders racing for it, one wins."""
    return [
        Write(
            "UPDATE rows SET state = 'sending', attempts = ?, sender = ?, idempotency_key = ?, "
            "key_rotation = ?, claimed_at = ?, "
            "bound_by_claim = CASE WHEN sender IS NULL THEN 1 ELSE bound_by_claim END "
            "WHERE id = ? AND state = ? AND sender IS ? AND attempts = ?",
            (attempt, sender, key, key_rotation, at_s, row_id, expect.state.value, expect.sender,
             attempt - 1),
            expect_rows=1,
            moves=(expect.state.value, RowState.SENDING.value),
        ),
        Write(
            "INSERT INTO attempts (row_id, attempt, sender, idempotency_key, at_s, sent_as) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row_id, attempt, sender, key, at_s, sender),
        ),
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Finish:
    """A row's final state and what the provider said."""

    state: RowState
    reason: str | None = None
    message: str | None = None
    message_id: str | None = None
    media_id: str | None = None
    sent_at: str | None = None
    request_id: str | None = None
    write_action_id: str | None = None


def finish(*, row_id: int, seq: int, done: Finish, finished_at: str, expect: Expect) -> Write:
    """The row's final state; conditional on the row still being ``expect``."""
    return Write(
        "UPDATE rows SET state = ?, reason = ?, message = ?, message_id = ?, media_id = ?, "
        "sent_at = ?, request_id = ?, write_action_id = ?, finished_at = ?, finish_seq = ? "
        "WHERE id = ? AND state = ? AND sender IS ?",
        (
            done.state.value, done.reason, done.message, done.message_id, done.media_id,
            done.sent_at, done.request_id, done.write_action_id, finished_at, seq, row_id,
            expect.state.value, expect.sender,
        ),
        expect_rows=1,
        moves=(expect.state.value, done.state.value),
    )


def defer(
    *, row_id: int, state: RowState, due_s: float, reason: str | None, message: str | None,
    expect: Expect,
) -> Write:
    """Back to ``pending`` (provably not delivered) or ``unknown`` (to settle), due at ``due_s``;
    conditional on the row still being ``expect``."""
    return Write(
        "UPDATE rows SET state = ?, next_attempt_at = ?, reason = ?, message = ? "
        "WHERE id = ? AND state = ? AND sender IS ?",
        (state.value, due_s, reason, message, row_id, expect.state.value, expect.sender),
        expect_rows=1,
        moves=(expect.state.value, state.value),
    )


def attempt_result(
    *, row_id: int, attempt: int, action: str, code: str | None, sent_at_s: float | None = None
) -> Write:
    """What an attempt came to, and when its request really left (the limiters' history)."""
    return Write(
        "UPDATE attempts SET action = ?, code = ?, at_s = COALESCE(?, at_s) "
        "WHERE row_id = ? AND attempt = ?",
        (action, code, sent_at_s, row_id, attempt),
    )


def assign_recipient(*, row_id: int, user_id: str, seq: int, now_iso: str) -> Write:
    """Set a resolved user id; the row becomes a ``duplicate`` if that recipient is taken."""
    return Write(_ASSIGN_RECIPIENT, {"uid": user_id, "id": row_id, "seq": seq, "now": now_iso})


def store_user(*, username: str, user_id: str | None, status: str, at_s: float) -> Write:
    return Write(
        "INSERT OR REPLACE INTO users (username, user_id, status, resolved_at) VALUES (?, ?, ?, ?)",
        (username.lower(), user_id, status, at_s),
    )


def store_media(*, path: str, sender: str, media_id: str, at_s: float) -> Write:
    return Write(
        "INSERT OR REPLACE INTO media (path, sender, media_id, uploaded_at) VALUES (?, ?, ?, ?)",
        (path, sender, media_id, at_s),
    )


def upload(*, path: str, sender: str, at_s: float) -> Write:
    """A media upload's slot of the API key, committed before the upload leaves."""
    return Write("INSERT OR IGNORE INTO uploads (path, sender, at_s) VALUES (?, ?, ?)",
                 (path, sender, at_s))


def upload_done(*, path: str, sender: str, at_s: float) -> Write:
    """The upload of :func:`upload` has its answer (whatever it was)."""
    return Write("UPDATE uploads SET done = 1 WHERE path = ? AND sender = ? AND at_s = ?",
                 (path, sender, at_s))


def rotate_key(*, row_id: int) -> Write:
    """The next attempt needs a fresh key (the provider said the old one may not be reused)."""
    return Write("UPDATE rows SET key_rotation = key_rotation + 1 WHERE id = ?", (row_id,))


def set_sender(*, account: str, state: str, until_s: float | None, reason: str | None) -> Write:
    return Write(
        "INSERT OR REPLACE INTO senders (account, state, until_s, reason) VALUES (?, ?, ?, ?)",
        (account, state, until_s, reason),
    )


#: the recorded state of an account the settings no longer name while rows it sent are in
#: doubt: only its own key and conversation can settle them (what ``status`` shows of it)
REMOVED: Final = "removed"


def mark_removed(in_doubt: Mapping[str, int]) -> list[Write]:
    """The accounts of ``in_doubt`` (its rows in doubt, by account) left the settings."""
    return [set_sender(account=account, state=REMOVED, until_s=None,
                       reason=f"the settings no longer name it: add it back to settle its "
                              f"{n} row(s) in doubt")
            for account, n in in_doubt.items()]


def unmark_removed(accounts: Iterable[str]) -> list[Write]:
    """``accounts`` are in the settings (in any case): none of them reads removed."""
    return [Write("DELETE FROM senders WHERE state = ? AND account = ? COLLATE NOCASE",
                  (REMOVED, account)) for account in accounts]


def reassign(*, row_id: int, sender: str, key: str, from_sender: str | None) -> Write:
    """Move a never-delivered row to another sender (its key changes with the sender); only a
    row still ``pending`` with ``from_sender`` moves (a row claimed meanwhile stays)."""
    return Write(
        "UPDATE rows SET sender = ?, idempotency_key = ?, key_rotation = 0 "
        "WHERE id = ? AND state = 'pending' AND sender IS ?",
        (sender, key, row_id, from_sender),
    )


def unbind(
    *, row_id: int, due_s: float, reason: str | None, message: str | None, expect: Expect
) -> Write:
    """Back to ``pending`` and to no sender: a row bound by its claim whose attempt provably was
    not delivered (its sender rests or left, a throttle), so any account may send it, under a
    key computed for that account at its claim. Conditional on the row still being ``expect``."""
    return Write(
        "UPDATE rows SET state = 'pending', sender = NULL, idempotency_key = NULL, "
        "bound_by_claim = 0, next_attempt_at = ?, reason = ?, message = ? "
        "WHERE id = ? AND state = ? AND sender IS ? AND bound_by_claim = 1",
        (due_s, reason, message, row_id, expect.state.value, expect.sender),
        expect_rows=1,
        moves=(expect.state.value, RowState.PENDING.value),
        unbinds=True,
    )


def release_rows(*, sender: str) -> Write:
    """Unbind every pending row ``sender``'s claims bound (it rests past the run, or left):
    none of them was delivered, so another account sends them. Pinned rows stay."""
    return Write(
        "UPDATE rows SET sender = NULL, idempotency_key = NULL, bound_by_claim = 0 "
        "WHERE state = 'pending' AND sender = ? AND bound_by_claim = 1",
        (sender,),
        unbinds=True,
    )


def set_handoff_cursor(cursor: HandoffCursor) -> list[Write]:
    sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
    values = [("handoff.seq", str(cursor.seq)), ("handoff.offset", str(cursor.offset))]
    if cursor.path is not None:
        values.append(("handoff.path", cursor.path))
    return [Write(sql, v) for v in values]


def record_reply(*, message_id: str, row_id: int, text: str, received_at: str | None,
                 opt_out: bool) -> Write:
    """An answer to a sent row, once: a message id recorded before is left as it is."""
    return Write(
        "INSERT OR IGNORE INTO replies (message_id, seq, row_id, text, received_at, opt_out) "
        "VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM replies), ?, ?, ?, ?)",
        (message_id, row_id, text, received_at, int(opt_out)))


def read_replies_until(*, row_id: int, until_at: str, later_at: str | None = None,
                       read_at_s: float | None = None, answered: bool = False) -> Write:
    """The row's conversation was read whole up to ``until_at``, at ``read_at_s``, finding an
    answer or not; ``later_at``: the sender wrote again then (the answers after it are not the
    row's)."""
    return Write("INSERT OR REPLACE INTO reply_reads (row_id, until_at, later_at, read_at_s, "
                 "answered) VALUES (?, ?, ?, ?, ?)",
                 (row_id, until_at, later_at, read_at_s, int(answered)))


def count_reads(*, pages: int, results: int) -> Write:
    """Reply reads billed: ``pages`` history pages that returned ``results`` messages."""
    return Write("UPDATE read_costs SET pages = pages + ?, results = results + ?",
                 (pages, results))


def set_last_run(*, finish_reason: str, detail: str | None, ended_at: str,
                 waits_for: str | None = None, waits_until: str | None = None) -> list[Write]:
    """How a run ended, for ``status``: replaces the last one's. ``waits_for`` (what does not
    answer: "the provider") and ``waits_until``: the process waits it out (``--until-done``)
    and starts again then."""
    sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
    optional = {"run.detail": detail, "run.waits_for": waits_for, "run.waits_until": waits_until}
    return [Write("DELETE FROM meta WHERE key IN ('run.detail', 'run.waits_for', "
                  "'run.waits_until')", ()),
            Write(sql, ("run.finish_reason", finish_reason)),
            Write(sql, ("run.ended_at", ended_at)),
            *(Write(sql, (key, value)) for key, value in optional.items() if value)]


#: a sender's long wait in a run (a daily cap, a send window): for ``status`` only
_SENDER_WAIT: Final = "wait."


def clear_sender_waits(account: str | None = None) -> Write:
    """Forget the long waits recorded for ``account`` (None: every sender's): it waits no
    more, or a new run reads its windows afresh (a cap raised since)."""
    if account is None:
        return Write("DELETE FROM meta WHERE key LIKE ?", (_SENDER_WAIT + "%",))
    return Write("DELETE FROM meta WHERE key = ?", (_SENDER_WAIT + account,))


def set_sender_wait(*, account: str, until_s: float, reason: str) -> Write:
    """``account`` sends nothing before ``until_s`` in a run that waits for it (``reason``):
    what ``status`` shows meanwhile. Never a rest: a restart reads its windows afresh, so a
    cap raised in the settings holds at once."""
    return _set_meta(_SENDER_WAIT + account, f"{until_s!r} {reason}")


#: every table that names a sender, and its column (a sender is its handle, any case)
_SENDER_COLUMNS: Final = (("rows", "sender"), ("attempts", "sender"), ("media", "sender"),
                          ("uploads", "sender"), ("senders", "account"))


def respell_senders(accounts: Iterable[str]) -> list[Write]:
    """Each of ``accounts`` as the settings spell it, wherever the checkpoint holds it in
    another case (``dora_x`` now written ``DORA_X``): its rows, attempts, media, uploads and
    records are its own again, for every lookup by name (replies, claims, status). One pass
    over each table, whatever the number of accounts (a handle is ASCII: ``lower`` folds it)."""
    spelled = "SELECT account FROM temp.spelled"
    return [
        Write("CREATE TEMP TABLE IF NOT EXISTS spelled (folded TEXT PRIMARY KEY, account TEXT)",
              ()),
        Write("DELETE FROM temp.spelled", ()),
        *(Write("INSERT OR REPLACE INTO temp.spelled VALUES (?, ?)", (account.lower(), account))
          for account in accounts),
        *(Write(f"UPDATE OR REPLACE {table} SET {column} = (SELECT account FROM temp.spelled "
                f"WHERE folded = lower({table}.{column})) WHERE lower({column}) IN "
                f"(SELECT folded FROM temp.spelled) AND {column} NOT IN ({spelled})", ())
          for table, column in _SENDER_COLUMNS)]


#: a Retry-After on the API key, kept when no account ledger keeps it
_KEY_REST: Final = "key.rest"


def set_key_rest(*, until_s: float, reason: str) -> Write:
    """No send with the API key before ``until_s`` (a Retry-After): a restart waits it out."""
    return _set_meta(_KEY_REST, f"{until_s!r} {reason}")


#: where the checkpoint was last run from
_RAN_AT: Final = "checkpoint.ran_at"
#: the token this checkpoint holds in the account ledger for its campaign, and the ledger's
#: token it took it from (see ownership.claim_the_campaign)
_RUN_TOKENS: Final = ("checkpoint.token", "checkpoint.token_before")


def set_run_tokens(*, token: str, before: str | None) -> list[Write]:
    """The checkpoint takes the campaign's ``token`` in the ledger, from ``before``."""
    return [Write("DELETE FROM meta WHERE key = ?", (_RUN_TOKENS[1],)),
            _set_meta(_RUN_TOKENS[0], token),
            *([_set_meta(_RUN_TOKENS[1], before)] if before is not None else [])]


def set_ran_at(path: str) -> Write:
    """The checkpoint runs from ``path`` (a copy of its folder finds it there)."""
    return _set_meta(_RAN_AT, path)


def campaign_identity(path: Path) -> str | None:
    """The campaign identity of the checkpoint at ``path`` (read only; None: none there, or
    not a checkpoint). Blocking: call it off the event loop."""
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'plan.campaign_id'").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row and row[0] else None


def _set_meta(key: str, value: str) -> Write:
    return Write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def set_replies_cursor(cursor: HandoffCursor) -> list[Write]:
    sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
    values = [("replies.seq", str(cursor.seq)), ("replies.offset", str(cursor.offset))]
    if cursor.path is not None:
        values.append(("replies.path", cursor.path))
    return [Write(sql, v) for v in values]


def own_handoff(path: str) -> Write:
    """Record that this checkpoint writes the handoff file ``path`` (so it may rewrite it)."""
    return Write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (_OWNED + path,))


def own_replies(path: str) -> Write:
    """Record that this checkpoint writes the replies file ``path`` (so it may rewrite it)."""
    return Write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')",
                 (_OWNED_REPLIES + path,))


def unsettle_in_flight(*, settle_after_s: float = 0.0) -> Write:
    """On start: a row left in ``sending`` may have been delivered; it is settled before it is
    sent again, ``settle_after_s`` after its attempt took its slot."""
    return Write(
        "UPDATE rows SET state = 'unknown', next_attempt_at = COALESCE(claimed_at, 0) + ?, "
        "reason = 'interrupted', message = 'the run stopped while this DM was in flight' "
        "WHERE state = 'sending'",
        (settle_after_s,),
    )


# -- amend: a changed campaign applied to a running plan (see bulkdm/amend.py) ----------------

#: rows an amend may rewrite: never attempted, or provably not delivered
UNSENT_STATES: Final = ("pending", "skipped", "invalid")
_UNSENT_SQL: Final = "('pending', 'skipped', 'invalid')"


def amend_insert(*, params: RowParams, seq: int | None, finished_at: str | None) -> Write:
    """A row the amended file added (``seq``: its finish number when it is final at once)."""
    marks = ", ".join("?" * (len(_PLAN_COLUMNS) + 2))
    return Write(
        f"INSERT INTO rows ({', '.join(_PLAN_COLUMNS)}, finish_seq, finished_at) VALUES ({marks})",
        (*params, seq, finished_at),
    )


def amend_update(*, row_id: int, params: RowParams, seq: int | None, finished_at: str | None) -> Write:
    """Replan an unsent row in place; a row that has left the unsent states is not touched."""
    columns = ", ".join(f"{name} = ?" for name in _PLAN_COLUMNS)
    return Write(
        f"UPDATE rows SET {columns}, key_rotation = 0, bound_by_claim = 0, next_attempt_at = 0, "
        "finish_seq = ?, "
        f"finished_at = ? WHERE id = ? AND state IN {_UNSENT_SQL}",
        (*params, seq, finished_at, row_id),
    )


def amend_remove(*, row_id: int, seq: int, finished_at: str) -> Write:
    """An unsent row no longer in the campaign file: skipped, with the reason, never dropped."""
    return Write(
        "UPDATE rows SET state = 'skipped', reason = 'removed', field = NULL, "
        "message = 'removed from the campaign file by an amend; not sent', "
        f"duplicate_of_line = NULL, finish_seq = ?, finished_at = ? WHERE id = ? "
        f"AND state IN {_UNSENT_SQL}",
        (seq, finished_at, row_id),
    )


def amend_line(*, row_id: int, line: int) -> Write:
    """An unchanged row that moved to another line of the file."""
    return Write("UPDATE rows SET line = ? WHERE id = ?", (line, row_id))


def set_plan_meta(meta: PlanMeta) -> list[Write]:
    sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
    return [Write(sql, (f"plan.{f.name}", str(getattr(meta, f.name)))) for f in fields(PlanMeta)]
