"""``bulkdm export``: rebuild handoff outputs from a checkpoint, atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Final

from bulkdm.checkpoint import Checkpoint
from bulkdm.errors import CheckpointError
from bulkdm.handoff import (
    SEND_ENDPOINTS,
    HandoffContext,
    campaign_rows,
    csv_rows,
    encode_jsonl,
    handoff_record,
    write_atomic,
)
from bulkdm.rows import FINAL_STATES, RowRecord

__all__ = ["ExportFormat", "export_rows"]

_PAGE: Final = 2000


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    CAMPAIGN = "campaign"


async def export_rows(
    checkpoint: Checkpoint, out: Path, *, fmt: ExportFormat, states: Sequence[str] = ()
) -> int:
    """Write the rows in ``states`` (default: every finished row) to ``out``; returns the count.

    The file is written to a temporary name and renamed, so a reader never sees half of it.
    """
    meta = await checkpoint.plan_meta()
    if meta is None:
        raise CheckpointError(f"{checkpoint.path} holds no plan yet; run `bulkdm plan` first")
    wanted = tuple(states) or tuple(sorted(FINAL_STATES))
    context = HandoffContext(campaign=meta.campaign, provider=meta.provider,
                             source_endpoint=SEND_ENDPOINTS.get(meta.provider, ""))
    loop = asyncio.get_running_loop()
    count = 0

    def rows() -> Iterator[RowRecord]:
        # runs in the writer's thread: each page is read on the event loop, so memory stays flat
        nonlocal count
        after_id = 0
        while page := asyncio.run_coroutine_threadsafe(
            checkpoint.rows_by_state(wanted, after_id=after_id, limit=_PAGE), loop
        ).result():
            count += len(page)
            yield from page
            after_id = page[-1].id

    def chunks() -> Iterator[bytes]:
        if fmt is ExportFormat.CAMPAIGN:
            return campaign_rows(rows())
        records = (handoff_record(row, context) for row in rows())
        if fmt is ExportFormat.CSV:
            return csv_rows(records)
        return (encode_jsonl([record]) for record in records)

    await asyncio.to_thread(write_atomic, out, chunks())
    return count
