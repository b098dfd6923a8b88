"""Keeps the handoff file in step with the checkpoint: each finished row once, in finish order.

The checkpoint stores a cursor (the last exported finish number and the file's size after it).
Lines are appended and fsynced first, and the cursor is committed after; a crash in between
leaves lines the cursor does not cover, and reopening cuts the file back to the cursor, so
after any crash and resume the file holds every finished row exactly once and no partial line.
A file that cannot be written (disk full, read-only) is a :class:`StorageError` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import Checkpoint, HandoffCursor
from bulkdm.errors import CheckpointError, StorageError
from bulkdm.handoff import HandoffContext, HandoffLog, encode_jsonl, handoff_record, write_atomic
from bulkdm.ownership import HANDOFF_FILE, moved_here

__all__ = ["Outbox"]

_PAGE: Final = 2000
#: how often finished rows are appended: often enough to feel live, rarely enough that the
#: file's fsync and the cursor's commit stay a small cost next to the sends
_PUMP_PERIOD_S: Final = 0.2


class Outbox:
    """The live appender of ``bulkdm run``; :meth:`follow` runs beside the engine."""

    def __init__(self, checkpoint: Checkpoint, log: HandoffLog, context: HandoffContext,
                 seq: int) -> None:
        self._cp = checkpoint
        self._log = log
        self._context = context
        self._seq = seq

    @classmethod
    async def open(cls, checkpoint: Checkpoint, path: Path, *, campaign: str, provider: str,
                   source_endpoint: str) -> Outbox:
        """Open the handoff file (an absolute ``path``) at the checkpoint's cursor, starting it
        over if it was lost or edited.

        :raises CheckpointError: ``path`` holds records this checkpoint did not write (another
            campaign's handoff file); it is left as it is.
        """
        context = HandoffContext(campaign=campaign, provider=provider,
                                 source_endpoint=source_endpoint)
        cursor = await checkpoint.handoff_cursor()
        if cursor.path != str(path) and await _moved_here(checkpoint, path):
            cursor = HandoffCursor(seq=cursor.seq, offset=cursor.offset, path=str(path))
            await checkpoint.submit(cp.set_handoff_cursor(cursor))  # it goes on where it was
        same_file = cursor.path == str(path)
        if same_file:
            await checkpoint.submit([cp.own_handoff(str(path))])  # also in older checkpoints
        else:
            await _claim_file(checkpoint, path)
        try:
            log = await asyncio.to_thread(HandoffLog.open, path, cursor.offset) if same_file \
                else None
            seq = cursor.seq if log is not None else 0
            if log is None:
                # cannot continue where it was: write it again from the first finished row
                await asyncio.to_thread(write_atomic, path, [])
                log = await asyncio.to_thread(HandoffLog.open, path, 0)
        except OSError as exc:
            raise StorageError.from_os_error(path, exc) from exc
        if log is None:
            raise StorageError(path, "the handoff file changed while it was opened")
        return cls(checkpoint, log, context, seq)

    async def pump(self) -> int:
        """Append every row finished since the cursor; returns how many lines were written."""
        written = 0
        while rows := await self._cp.finished_after(self._seq, limit=_PAGE):
            data = encode_jsonl(handoff_record(row, self._context) for _, row in rows)
            try:
                offset = await asyncio.to_thread(self._log.append_bytes, data)
            except OSError as exc:
                raise StorageError.from_os_error(self._log.path, exc) from exc
            self._seq = rows[-1][0]
            cursor = HandoffCursor(seq=self._seq, offset=offset, path=str(self._log.path))
            await self._cp.submit(cp.set_handoff_cursor(cursor))
            written += len(rows)
        return written

    async def follow(self, done: asyncio.Event, stop: asyncio.Event) -> None:
        """Pump every few hundred milliseconds until ``done`` is set, then once more.

        A file that cannot be written (this one, or the checkpoint) sets ``stop``, so the run
        ends as on Ctrl-C, and is raised once ``done`` is set.
        """
        try:
            while not done.is_set():
                await self.pump()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=_PUMP_PERIOD_S)
            await self.pump()
        except StorageError:
            stop.set()
            await done.wait()
            raise

    async def close(self) -> None:
        await asyncio.to_thread(self._log.close)


async def _moved_here(checkpoint: Checkpoint, path: Path) -> bool:
    return bool(await asyncio.to_thread(_size, path)) and await moved_here(
        checkpoint, path, kind=HANDOFF_FILE)


async def _claim_file(checkpoint: Checkpoint, path: Path) -> None:
    """Make ``path`` this checkpoint's handoff file, unless it holds records of a checkpoint
    other than this one (one that never wrote it).

    The path is recorded before the file is touched, so after any crash the checkpoint still
    knows the file is its own and never takes it for a stranger's.
    """
    size = await asyncio.to_thread(_size, path)
    if size and not await checkpoint.wrote_handoff(str(path)):
        raise CheckpointError(
            f"{path} holds handoff records that {checkpoint.path} did not write (another "
            "campaign's handoff file?); it was left as it is. Pass --out with a new file, or "
            "move that file away if it is this campaign's"
        )
    cursor = HandoffCursor(seq=0, offset=0, path=str(path))
    await checkpoint.submit([cp.own_handoff(str(path)), *cp.set_handoff_cursor(cursor)])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
