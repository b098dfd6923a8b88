"""Handoff records: one JSON line per finished row, in Xquik's DM result schema, for CRMs.

A record follows the "Direct message handoff" of Xquik's Send DM page (``record_type``,
``message_id``, ``user_id``, ``account``, ``text``, ``media_ids``/``media_id``, ``send_status``,
``handoff_format``) and adds what a CRM needs to match it to its own data (``campaign``, ``line``,
``external_id``, ...). Ids are always JSON strings: X ids do not fit a double, and an external id
such as ``"00123"`` must come back as written. No record holds a secret.

This module also writes the files: the live appender (:class:`HandoffLog`), atomic rewrites
(:func:`write_atomic`), the CSV export (:func:`csv_rows`) and a retry campaign
(:func:`campaign_rows`).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Final, Self, TypeAlias

import orjson

from bulkdm.rows import RowRecord, RowState

if TYPE_CHECKING:
    from bulkdm.checkpoint import ReplyRecord

__all__ = [
    "CSV_COLUMNS",
    "CSV_DELIMITERS",
    "DUPLICATE_REASON",
    "ERROR_FIELD",
    "HANDOFF_FORMAT",
    "OPTED_OUT_REASON",
    "RAW_LINE",
    "REPLY_CSV_COLUMNS",
    "SEND_ENDPOINTS",
    "UNSETTLED_REASON",
    "HandoffContext",
    "HandoffLog",
    "RetryItem",
    "campaign_csv_rows",
    "campaign_fields",
    "campaign_rows",
    "csv_rows",
    "encode_jsonl",
    "flat_cell",
    "handoff_record",
    "reply_record",
    "retryable",
    "write_atomic",
]

HANDOFF_FORMAT: Final = "jsonl"
#: ``source_endpoint`` of a record, by provider name
SEND_ENDPOINTS: Final = {"xquik": "POST /x/dm/{userId}", "getxapi": "POST /twitter/dm/send"}
#: a spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection")
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
#: final and provably not delivered: the only rows a retry campaign may hold (a pending row is
#: still the running campaign's, and a sending or unknown one may have reached the recipient)
_RETRYABLE: Final = frozenset({RowState.FAILED, RowState.SKIPPED, RowState.INVALID})
#: the reason of a failed row whose DM may have been delivered (its outcome was never settled)
UNSETTLED_REASON: Final = "outcome_unknown"
#: a row skipped because an earlier line has the same recipient
DUPLICATE_REASON: Final = "duplicate"
#: a row skipped because its recipient asked not to be messaged again
OPTED_OUT_REASON: Final = "opted_out"
#: new files get this mode: the records hold no secret, and a CRM importer may run as another user
_NEW_FILE_MODE: Final = 0o644

CSV_COLUMNS: Final = (
    "record_type", "send_status", "message_id", "user_id", "recipient_username", "account",
    "text", "media_id", "media_ids", "sent_at", "finished_at", "campaign", "line", "external_id",
    "consent", "idempotency_key", "provider", "source_endpoint", "attempts", "error_code",
    "error_message", "error_field",
)  # fmt: skip
#: ``--delimiter`` names of the CSV export's field separators
CSV_DELIMITERS: Final = {",": ",", ";": ";", "tab": "\t", "\t": "\t", "|": "|"}


@dataclass(frozen=True, kw_only=True, slots=True)
class HandoffContext:
    """What every record of a run shares. ``source_endpoint``: ``"POST /x/dm/{userId}"`` (Xquik)
    or ``"POST /twitter/dm/send"`` (GetXAPI)."""

    campaign: str
    provider: str
    source_endpoint: str


def handoff_record(row: RowRecord, ctx: HandoffContext) -> dict[str, object]:
    """The handoff record of one row (a plain dict, ready for :func:`encode_jsonl`).

    ``send_status`` is the row's state: ``sent``, ``failed``, ``skipped`` or ``invalid`` (a row
    exported before it is final keeps its state, e.g. ``pending``). ``sent_at`` is the delivery
    time of a sent row and ``null`` otherwise; ``finished_at`` is when the row reached its state.
    A row that was not sent carries ``error``: ``{code, message}`` plus ``field`` (invalid rows)
    or ``duplicate_of_line`` (duplicates) when known.
    """
    sent = row.state is RowState.SENT
    record: dict[str, object] = {
        "record_type": "dm_media_send" if row.media is not None else "dm_send",
        "message_id": _id(row.message_id),
        "user_id": _id(row.recipient_id),
        "account": row.sender,
        "text": row.text,
    }
    if row.media is not None:
        media_id = _id(row.media_id)
        record["media_ids"] = [] if media_id is None else [media_id]
        record["media_id"] = media_id
    record |= {
        "send_status": row.state.value,
        "handoff_format": HANDOFF_FORMAT,
        "source_endpoint": ctx.source_endpoint,
        "sent_at": row.sent_at if sent else None,
        "finished_at": row.finished_at,
        "campaign": ctx.campaign,
        "line": row.line,
        "external_id": _id(row.external_id),
        "consent": row.consent,
        "recipient_username": row.recipient_username,
        "idempotency_key": row.idempotency_key,
        "provider": ctx.provider,
        "attempts": row.attempts,
    }
    if not sent and row.state in {RowState.FAILED, RowState.SKIPPED, RowState.INVALID}:
        record["error"] = _error(row)
    return record


#: the columns of ``export --format csv --records replies`` (ids as text, as in the records)
REPLY_CSV_COLUMNS: Final = (
    "record_type", "campaign", "line", "external_id", "user_id", "username", "account",
    "message_id", "in_reply_to", "text", "received_at", "opt_out",
)


def reply_record(reply: ReplyRecord, *, campaign: str) -> dict[str, object]:
    """A recipient's answer as a handoff line (``record_type`` ``dm_reply``): the answer's
    message id, text and time, whether it opted out, and the row it answers."""
    row = reply.row
    return {
        "record_type": "dm_reply",
        "campaign": campaign,
        "line": row.line,
        "external_id": row.external_id,
        "user_id": _id(row.recipient_id),
        "username": row.recipient_username,
        "account": row.sender,
        "message_id": _id(reply.message_id),
        "in_reply_to": _id(row.message_id),
        "text": reply.text,
        "received_at": reply.received_at,
        "opt_out": reply.opt_out,
        "handoff_format": HANDOFF_FORMAT,
    }


def _id(value: object) -> str | None:
    # SQLite column affinity can hand back an int for a digits-only text; ids leave as strings
    return None if value is None else str(value)


def _error(row: RowRecord) -> dict[str, object]:
    code = row.reason or row.state.value
    message = row.message or _DEFAULT_MESSAGES.get(code, code.replace("_", " "))
    error: dict[str, object] = {"code": code, "message": message}
    if row.field is not None:
        error["field"] = row.field
    if row.duplicate_of_line is not None:
        first = f"line {row.duplicate_of_line}"
        if first not in message:
            error["message"] = f"{message} (first on {first})"
        error["duplicate_of_line"] = row.duplicate_of_line
    return error


_DEFAULT_MESSAGES: Final = {
    "duplicate": "the same recipient appears on an earlier line",
    "suppressed": "the recipient is on the suppression list",
    "no_consent": "the campaign requires consent and the row has none",
}


def encode_jsonl(records: Iterable[Mapping[str, object]]) -> bytes:
    """The records as JSON Lines: one compact object a line, each ending with ``\\n``."""
    return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)


class HandoffLog:
    """The live handoff file of a run: appends whole lines and makes them durable.

    The checkpoint keeps a cursor: the byte offset of the file after the last exported row.
    :meth:`open` cuts the file back to that offset, which drops a partial last line and any lines
    written but not yet recorded before a crash; the engine then appends those rows again.
    """

    def __init__(self, path: Path, file: io.FileIO, offset: int) -> None:
        self._path = path
        self._file = file
        self._offset = offset

    @classmethod
    def open(cls, path: Path, offset: int) -> Self | None:
        """Open ``path`` for appending at ``offset``, cutting off anything after it.

        Returns ``None`` when the file cannot continue from ``offset``: it is missing (with
        ``offset > 0``), shorter than ``offset``, or the byte before ``offset`` does not end a line
        (someone deleted or edited it). Rebuild it from the checkpoint with :func:`write_atomic`
        and open it again at the new size.

        :raises ValueError: if ``offset`` is negative.
        :raises OSError: if the file cannot be read or written.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if not path.exists():
            return cls._create(path) if offset == 0 else None
        with path.open("r+b") as file:
            if not _continues_at(file, offset):
                return None
            if file.seek(0, os.SEEK_END) > offset:
                file.truncate(offset)
                os.fsync(file.fileno())
        return cls(path, path.open("ab", buffering=0), offset)

    @classmethod
    def _create(cls, path: Path) -> Self:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _NEW_FILE_MODE)
        log = cls(path, os.fdopen(fd, "ab", buffering=0), 0)
        _fsync_dir(path.parent)
        return log

    @property
    def path(self) -> Path:
        return self._path

    @property
    def offset(self) -> int:
        """The file's size after the last successful append: store it as the cursor."""
        return self._offset

    def append(self, records: Iterable[Mapping[str, object]]) -> int:
        """Append the records, flush and fsync; returns the new offset.

        If the write fails, the file is cut back to the previous offset before the error
        propagates, so a later append never follows half a line.
        """
        return self.append_bytes(encode_jsonl(records))

    def append_bytes(self, data: bytes) -> int:
        """Append already encoded lines (see :meth:`append`); returns the new offset."""
        if not data:
            return self._offset
        try:
            view = memoryview(data)
            while view:
                # unbuffered: nothing can linger in a buffer and land after the cut below
                view = view[self._file.write(view) :]
            os.fsync(self._file.fileno())
        except OSError:
            self._file.truncate(self._offset)
            raise
        self._offset += len(data)
        return self._offset

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _continues_at(file: BinaryIO, offset: int) -> bool:
    size = file.seek(0, os.SEEK_END)
    if size < offset:
        return False
    if offset == 0:
        return True
    file.seek(offset - 1)
    return file.read(1) == b"\n"


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace ``path`` with the concatenated chunks, all or nothing.

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path`` and fsyncs
    the directory. If anything fails (including the ``chunks`` iterator raising), the old file is
    left as it was and the temporary file is removed. A replaced file keeps its permissions.
    """
    mode = path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    replaced = False
    try:
        with os.fdopen(fd, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        replaced = True
    finally:
        if not replaced:
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # makes a create or rename durable; Windows cannot open a directory, and needs no such step
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def csv_rows(
    records: Iterable[Mapping[str, object]],
    *,
    delimiter: str = ",",
    bom: bool = False,
    formula_safe: bool = False,
    columns: Sequence[str] | None = None,
) -> Iterator[bytes]:
    """CSV for CRM import (RFC 4180): the header, then one row per record, UTF-8, ``\\r\\n``.

    Columns are :data:`CSV_COLUMNS` (``media_ids`` joined with ``;``, ``error`` split into
    ``error_code``/``error_message``/``error_field``). Every cell holds exactly what the record
    holds, so a CRM stores what was sent. ``formula_safe=True`` is for a file a person opens in a
    spreadsheet: a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading ``'`` so it is shown as text instead of run as a formula (and the cell no
    longer equals the text sent). ``bom=True`` prefixes a UTF-8 BOM, which Excel needs to read
    UTF-8; ``delimiter`` is ``,`` by default (``;`` for a spreadsheet set to a German locale).
    """
    cell = _neutralise if formula_safe else _same
    columns = CSV_COLUMNS if columns is None else columns
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n"
    )

    def encoded(cells: Iterable[str]) -> bytes:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode("utf-8")

    yield (b"\xef\xbb\xbf" if bom else b"") + encoded(columns)
    for record in records:
        yield encoded(cell(flat_cell(record, column)) for column in columns)


def flat_cell(record: Mapping[str, object], column: str) -> str:
    """The text of one :data:`CSV_COLUMNS` column of a record (``""`` for a missing value)."""
    if column.startswith("error_"):
        error = record.get("error")
        value = error.get(column.removeprefix("error_")) if isinstance(error, Mapping) else None
    elif column == "media_ids":
        ids = record.get("media_ids")
        value = ";".join(str(i) for i in ids) if isinstance(ids, list) else None
    else:
        value = record.get(column)
    if isinstance(value, bool):  # as JSON writes it (opt_out), not Python's True
        return "true" if value else "false"
    return "" if value is None else str(value)


def _same(cell: str) -> str:
    return cell


def _neutralise(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


#: an invalid row's original when its line was not a JSON object: ``{RAW_LINE: the line}``
RAW_LINE: Final = "bulkdm_line"
#: the column of a retry or fix file that says why the row is in it (an unused template
#: variable when the file runs; replaced, not kept, when the file is exported again)
ERROR_FIELD: Final = "bulkdm_error"
_CAMPAIGN_COLUMNS: Final = (
    "recipient_username", "recipient_id", "text", "external_id", "consent", "media",
)  # fmt: skip
#: a retry or fix row: the row, and for an invalid row its fields as read (else ``None``)
RetryItem: TypeAlias = tuple[RowRecord, Mapping[str, object] | None]


def retryable(row: RowRecord) -> bool:
    """Whether a row may go into a new campaign: final and provably not delivered.

    A pending row still belongs to the running campaign, and a sending or unknown one, or one
    failed as ``outcome_unknown`` (never settled), may have reached its recipient; either could
    reach them twice. A duplicate was skipped because its recipient gets the message of an
    earlier line, and an opted-out row because its recipient asked not to be messaged again (a
    retry file holding it would offer them for sending, by a ledger that may be off or
    another's). The one predicate for this: change it here, and every retry path follows.
    """
    if row.state is RowState.FAILED:
        return row.reason != UNSETTLED_REASON
    return row.state in _RETRYABLE and not (
        row.state is RowState.SKIPPED and row.reason in (DUPLICATE_REASON, OPTED_OUT_REASON))


def campaign_fields(row: RowRecord, original: Mapping[str, object] | None) -> dict[str, object]:
    """One row of a retry or fix file: the campaign fields, and why the row is there.

    An invalid row keeps every field it was read with (``original``), so fixing the file is
    editing the field the error names (a line that was not a JSON object has its text under
    :data:`RAW_LINE`; :func:`campaign_rows` writes it back as it was). Another row gets ``recipient_id`` and/or
    ``recipient_username``, ``text``, ``external_id``, ``media``, ``consent`` (absent ones left
    out); ``sender`` is left out so the retry may go through any sender, and the text is the
    text as it was rendered, with ``{`` and ``}`` doubled so the planner does not render it a
    second time. :data:`ERROR_FIELD` says what went wrong.

    :raises ValueError: for a row that is not :func:`retryable`.
    """
    if not retryable(row):
        state = UNSETTLED_REASON if row.state is RowState.FAILED else row.state.value
        raise ValueError(
            f"line {row.line} is {state}: only failed (and settled), skipped or invalid rows "
            "can go into a new campaign (anything else could reach its recipient twice)"
        )
    if original is not None:
        line = {key: value for key, value in original.items() if key != ERROR_FIELD}
    else:
        fields = {
            "recipient_id": _id(row.recipient_id),
            "recipient_username": row.recipient_username,
            "text": None if row.text is None else _escape_braces(row.text),
            "external_id": _id(row.external_id),
            "media": row.media,
            "consent": row.consent,
        }
        line = {key: value for key, value in fields.items() if value is not None}
    error = _error(row)
    where = f" ({error['field']})" if "field" in error else ""
    line[ERROR_FIELD] = f"line {row.line}: {error['code']}{where}: {error['message']}"
    return line


def campaign_rows(items: Iterable[RetryItem]) -> Iterator[bytes]:
    """The rows as a new campaign JSONL file (``--as-campaign``): :func:`campaign_fields`."""
    for row, original in items:
        if original is not None and set(original) == {RAW_LINE} and retryable(row):
            # malformed JSON comes back as it was written: fixing it is editing that line
            yield str(original[RAW_LINE]).encode() + b"\n"
            continue
        yield orjson.dumps(campaign_fields(row, original), option=orjson.OPT_APPEND_NEWLINE)


def campaign_csv_rows(
    items: Iterable[RetryItem], *, delimiter: str = ",", bom: bool = False
) -> Iterator[bytes]:
    """The rows as a new campaign CSV file (``--as-campaign --format csv``), cells exact.

    The header is the campaign columns, then every other field an invalid row was read with, in
    the order first met, then :data:`ERROR_FIELD`. The header needs every row first, so the rows
    are held in memory: a retry file is the rows that did not go, not the campaign.
    """
    lines = [campaign_fields(row, original) for row, original in items]
    extra = dict.fromkeys(key for line in lines for key in line)
    header: list[str] = [c for c in _CAMPAIGN_COLUMNS if c in extra]
    header += [k for k in extra if k not in _CAMPAIGN_COLUMNS and k != ERROR_FIELD]
    header.append(ERROR_FIELD)
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n"
    )
    writer.writerow(header)
    for line in lines:
        writer.writerow(_campaign_cell(line.get(key)) for key in header)
    yield (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8")


def _campaign_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return orjson.dumps(value).decode()


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
