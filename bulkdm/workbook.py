"""``export --format xlsx``: handoff records as a workbook a person opens in a spreadsheet.

One sheet per ``record_type`` (``dm_send``, ``dm_media_send``), a frozen header row, the columns
of the CSV export. Ids, usernames and texts are text cells, so a 19-digit id keeps every digit
and ``00123`` keeps its zeros; ``sent_at`` and ``finished_at`` are real dates (UTC, since a
spreadsheet cell has no time zone). Nothing in the workbook can run: every text is stored as a
string cell, never a formula, whatever it starts with (``=``, ``+``, ``-``, ``@``).

openpyxl writes it in write-only mode: rows go to temporary files as they come, so memory does
not grow with the export.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Final

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from bulkdm.handoff import CSV_COLUMNS, flat_cell

__all__ = ["DATE_COLUMNS", "NUMBER_COLUMNS", "xlsx_bytes"]

#: columns that hold an ISO 8601 UTC time in a record: date cells in the workbook
DATE_COLUMNS: Final = frozenset({"sent_at", "finished_at"})
#: columns that are counts, not ids: number cells
NUMBER_COLUMNS: Final = frozenset({"line", "attempts"})
_MEDIA_ONLY: Final = frozenset({"media_id", "media_ids"})
_DATE_FORMAT: Final = "yyyy-mm-dd hh:mm:ss.000"
_WIDTHS: Final = {"text": 60, "error_message": 50, "idempotency_key": 30}


def xlsx_bytes(records: Iterable[Mapping[str, object]]) -> Iterator[bytes]:
    """The records as one ``.xlsx`` file, yielded in chunks once every record is read."""
    book = Workbook(write_only=True)
    sheets: dict[str, tuple[WriteOnlyWorksheet, tuple[str, ...]]] = {}
    for record in records:
        kind = str(record.get("record_type") or "dm_send")
        if kind not in sheets:
            sheets[kind] = _new_sheet(book, kind)
        sheet, columns = sheets[kind]
        sheet.append([_cell(sheet, record, column) for column in columns])
    if not sheets:
        _new_sheet(book, "dm_send")
    buffer = io.BytesIO()
    book.save(buffer)
    view = buffer.getbuffer()
    for start in range(0, len(view), 1 << 20):
        yield bytes(view[start : start + (1 << 20)])


def _new_sheet(book: Workbook, kind: str) -> tuple[WriteOnlyWorksheet, tuple[str, ...]]:
    sheet = book.create_sheet(title=kind[:31])
    columns = CSV_COLUMNS if kind == "dm_media_send" else tuple(
        c for c in CSV_COLUMNS if c not in _MEDIA_ONLY
    )
    sheet.freeze_panes = "A2"
    for index, column in enumerate(columns, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = _WIDTHS.get(column, 20)
    bold = Font(bold=True)
    header = []
    for column in columns:
        cell = WriteOnlyCell(sheet, value=column)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    return sheet, columns


def _cell(sheet: WriteOnlyWorksheet, record: Mapping[str, object], column: str) -> Cell:
    raw = record.get(column)
    if column in NUMBER_COLUMNS and isinstance(raw, int):
        return WriteOnlyCell(sheet, value=raw)
    text = flat_cell(record, column)
    if column in DATE_COLUMNS and text:
        cell = WriteOnlyCell(sheet, value=_utc(text))
        cell.number_format = _DATE_FORMAT
        return cell
    if not text:
        return WriteOnlyCell(sheet, value=None)
    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("\ufffd", text))
    # openpyxl makes a text starting with "=" a formula; a handoff cell is always plain text
    cell.data_type = "s"
    return cell


def _utc(iso: str) -> datetime:
    """An ISO 8601 time as a naive UTC datetime (a spreadsheet cell has no time zone)."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
