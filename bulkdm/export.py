"""``bulkdm export``: rebuild handoff outputs from a checkpoint, atomically.

Which form goes where: JSONL for programs (the handoff records), CSV for a CRM import (exact
cells, RFC 4180), ``.xlsx`` for people (text cells, real dates, nothing that runs), and
``as_campaign`` for a new campaign file of the rows to retry or fix (JSONL or CSV).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import orjson

from bulkdm.checkpoint import Checkpoint
from bulkdm.errors import CheckpointError
from bulkdm.handoff import (
    OPTED_OUT_REASON,
    REPLY_CSV_COLUMNS,
    SEND_ENDPOINTS,
    HandoffContext,
    RetryItem,
    campaign_csv_rows,
    campaign_rows,
    csv_rows,
    encode_jsonl,
    handoff_record,
    retryable,
    write_atomic,
)
from bulkdm.rows import FINAL_STATES, RowRecord, RowState

__all__ = ["CsvOptions", "ExportFormat", "Exported", "export_replies", "export_rows", "format_of"]

_PAGE: Final = 2000
_T = TypeVar("_T")


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    XLSX = "xlsx"


_SUFFIXES: Final = {
    ".jsonl": ExportFormat.JSONL,
    ".ndjson": ExportFormat.JSONL,
    ".csv": ExportFormat.CSV,
    ".tsv": ExportFormat.CSV,
    ".xlsx": ExportFormat.XLSX,
}


def format_of(out: Path | None) -> ExportFormat | None:
    """The format a file name asks for (``big.xlsx``: XLSX), or ``None`` when it names none."""
    return None if out is None else _SUFFIXES.get(out.suffix.lower())


@dataclass(frozen=True, kw_only=True, slots=True)
class CsvOptions:
    """How a CSV export is written (see :func:`~bulkdm.handoff.csv_rows`)."""

    delimiter: str = ","
    bom: bool = False
    formula_safe: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Exported:
    #: rows written
    count: int
    #: failed rows left out of a retry campaign because they may have been delivered
    unsettled: int
    #: skipped duplicates left out of a retry campaign: an earlier line has their recipient
    duplicates: int = 0
    #: skipped rows left out of a retry campaign because their recipient opted out
    opted_out: int = 0


async def export_rows(
    checkpoint: Checkpoint,
    out: Path | BinaryIO,
    *,
    fmt: ExportFormat,
    states: Sequence[str] = (),
    as_campaign: bool = False,
    csv: CsvOptions = CsvOptions(),
) -> Exported:
    """Write the rows in ``states`` (default: every finished row) to ``out``.

    ``out`` is a path or an open binary stream (stdout). A path is written to a temporary name
    and renamed, so a reader never sees half of it. ``as_campaign`` writes a campaign file
    (JSONL or CSV) instead of handoff records; it leaves out failed rows whose DM may have been
    delivered (``outcome_unknown``), skipped duplicates and opted-out rows, and counts them:
    sending those could reach a recipient twice, or one who asked not to be messaged.

    :raises ValueError: ``as_campaign`` with XLSX, or with a row that may reach its recipient
        again (see :func:`~bulkdm.handoff.campaign_rows`).
    """
    meta = await checkpoint.plan_meta()
    if meta is None:
        raise CheckpointError(f"{checkpoint.path} holds no plan yet; run `bulkdm plan` first")
    context = HandoffContext(campaign=meta.campaign, provider=meta.provider,
                             source_endpoint=SEND_ENDPOINTS.get(meta.provider, ""))
    reader = _Pages(checkpoint, tuple(states) or tuple(sorted(FINAL_STATES)))
    if as_campaign:
        chunks = _campaign_chunks(reader, fmt, csv)
    else:
        chunks = _record_chunks((handoff_record(r, context) for r in reader.rows()), fmt, csv)
    await asyncio.to_thread(_writer(out), chunks)
    return Exported(count=reader.count - reader.unsettled - reader.duplicates - reader.opted_out,
                    unsettled=reader.unsettled, duplicates=reader.duplicates,
                    opted_out=reader.opted_out)


class _Pages:
    """The rows of some states, a page at a time, read from the writer's thread."""

    def __init__(self, checkpoint: Checkpoint, states: tuple[str, ...]) -> None:
        self._checkpoint = checkpoint
        self._states = states
        self._loop = asyncio.get_running_loop()
        self.count = 0
        #: rows left out of a retry campaign: failed ones that may have been delivered, and
        #: duplicates (their recipient gets an earlier line's message)
        self.unsettled = 0
        self.duplicates = 0
        self.opted_out = 0

    def _wait(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        # each page is read on the event loop, so memory stays flat
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def pages(self) -> Iterator[list[RowRecord]]:
        after_id = 0
        while page := self._wait(
            self._checkpoint.rows_by_state(self._states, after_id=after_id, limit=_PAGE)
        ):
            self.count += len(page)
            yield page
            after_id = page[-1].id

    def rows(self) -> Iterator[RowRecord]:
        for page in self.pages():
            yield from page

    def retry_items(self) -> Iterator[RetryItem]:
        """Each row with the fields it was read with, when it was invalid."""
        for page in self.pages():
            invalid = [row.id for row in page if row.state is RowState.INVALID]
            originals = self._wait(self._checkpoint.originals(invalid))
            for row in page:
                # final rows that may have reached their recipient are counted and left out;
                # any other row (sent, not final) is refused by campaign_fields, saying why
                if row.state is RowState.FAILED and not retryable(row):
                    self.unsettled += 1
                    continue
                if row.state is RowState.SKIPPED and not retryable(row):
                    if row.reason == OPTED_OUT_REASON:
                        self.opted_out += 1
                    else:
                        self.duplicates += 1
                    continue
                found = originals.get(row.id)
                yield row, None if found is None else orjson.loads(found)


async def export_replies(checkpoint: Checkpoint, out: Path | BinaryIO, *, fmt: ExportFormat,
                         csv: CsvOptions = CsvOptions()) -> int:
    """Write every recorded reply (``dm_reply`` records) to ``out``: JSONL, or CSV with
    :data:`~bulkdm.handoff.REPLY_CSV_COLUMNS` (ids as text) for a CRM. How many."""
    from bulkdm.replies import reply_records

    meta = await checkpoint.plan_meta()
    if meta is None:
        raise CheckpointError(f"{checkpoint.path} holds no plan yet; run `bulkdm plan` first")
    if fmt is ExportFormat.XLSX:
        raise ValueError("replies export as jsonl or csv")
    records: list[dict[str, object]] = []
    last = 0
    while batch := await reply_records(checkpoint, campaign=meta.campaign, after_seq=last):
        last = batch[-1][0]
        records += [r for _, r in batch]
    chunks = (csv_rows(records, delimiter=csv.delimiter, bom=csv.bom,
                       formula_safe=csv.formula_safe, columns=REPLY_CSV_COLUMNS)
              if fmt is ExportFormat.CSV else iter([encode_jsonl(records)]))
    await asyncio.to_thread(_writer(out), chunks)
    return len(records)


def _campaign_chunks(reader: _Pages, fmt: ExportFormat, csv: CsvOptions) -> Iterator[bytes]:
    if fmt is ExportFormat.XLSX:
        raise ValueError("a campaign file is JSONL or CSV; use --format jsonl or csv")
    if fmt is ExportFormat.CSV:
        return campaign_csv_rows(reader.retry_items(), delimiter=csv.delimiter, bom=csv.bom)
    return campaign_rows(reader.retry_items())


def _record_chunks(
    records: Iterator[dict[str, object]], fmt: ExportFormat, csv: CsvOptions
) -> Iterator[bytes]:
    if fmt is ExportFormat.CSV:
        return csv_rows(records, delimiter=csv.delimiter, bom=csv.bom,
                        formula_safe=csv.formula_safe)
    if fmt is ExportFormat.XLSX:
        from bulkdm.workbook import xlsx_bytes  # openpyxl is loaded only for a workbook

        return xlsx_bytes(records)
    return (encode_jsonl([record]) for record in records)


def _writer(out: Path | BinaryIO) -> Callable[[Iterable[bytes]], None]:
    if isinstance(out, Path):
        return functools.partial(write_atomic, out)

    def write(data: Iterable[bytes]) -> None:
        for chunk in data:
            out.write(chunk)
        out.flush()

    return write
