"""``bulkdm export``: rebuild handoff outputs from a checkpoint, atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    may_have_been_delivered,
    write_atomic,
)
from bulkdm.rows import FINAL_STATES, RowRecord, RowState

__all__ = ["ExportFormat", "Exported", "export_rows"]

_PAGE: Final = 2000


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    CAMPAIGN = "campaign"


@dataclass(frozen=True, kw_only=True, slots=True)
class Exported:
    #: rows written
    count: int
    #: failed rows left out of a retry campaign because they may have been delivered
    unsettled: int


async def export_rows(
    checkpoint: Checkpoint, out: Path, *, fmt: ExportFormat, states: Sequence[str] = ()
) -> Exported:
    """Write the rows in ``states`` (default: every finished row) to ``out``.

    The file is written to a temporary name and renamed, so a reader never sees half of it. A
    retry campaign (``fmt`` CAMPAIGN) leaves out failed rows whose DM may have been delivered
    (``outcome_unknown``) and counts them: sending those again could reach a recipient twice.
    """
    meta = await checkpoint.plan_meta()
    if meta is None:
        raise CheckpointError(f"{checkpoint.path} holds no plan yet; run `bulkdm plan` first")
    wanted = tuple(states) or tuple(sorted(FINAL_STATES))
    context = HandoffContext(campaign=meta.campaign, provider=meta.provider,
                             source_endpoint=SEND_ENDPOINTS.get(meta.provider, ""))
    loop = asyncio.get_running_loop()
    count = unsettled = 0

    def rows() -> Iterator[RowRecord]:
        # runs in the writer's thread: each page is read on the event loop, so memory stays flat
        nonlocal count, unsettled
        after_id = 0
        while page := asyncio.run_coroutine_threadsafe(
            checkpoint.rows_by_state(wanted, after_id=after_id, limit=_PAGE), loop
        ).result():
            after_id = page[-1].id
            if fmt is ExportFormat.CAMPAIGN:
                kept = [r for r in page if not _unsettled_failure(r)]
                unsettled += len(page) - len(kept)
                page = kept
            count += len(page)
            yield from page

    def chunks() -> Iterator[bytes]:
        if fmt is ExportFormat.CAMPAIGN:
            return campaign_rows(rows())
        records = (handoff_record(row, context) for row in rows())
        if fmt is ExportFormat.CSV:
            return csv_rows(records)
        return (encode_jsonl([record]) for record in records)

    await asyncio.to_thread(write_atomic, out, chunks())
    return Exported(count=count, unsettled=unsettled)


def _unsettled_failure(row: RowRecord) -> bool:
    return row.state is RowState.FAILED and may_have_been_delivered(row)
