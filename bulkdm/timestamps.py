"""One form for every timestamp bulkdm writes: RFC 3339 in UTC, with milliseconds and ``Z``, as
Xquik writes them (``2026-11-30T02:46:35.910Z``).

Checkpoint columns, handoff records, exports, status and notes all take theirs from
:func:`iso_utc`; a provider's timestamp is brought to the same form by :func:`normalize_iso`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

__all__ = ["iso_utc", "local_time", "normalize_iso", "now_iso", "parse_iso"]


def iso_utc(epoch_s: float) -> str:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC; milliseconds truncated)."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def local_time(epoch_s: float) -> str:
    """Unix seconds as the local wall clock, for a person to read: ``2026-12-01 09:12:40 CET``
    (the zone named: the notes beside it give UTC times)."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch_s))


def now_iso() -> str:
    """The wall-clock time now, in the form of :func:`iso_utc`."""
    return iso_utc(time.time())


def parse_iso(value: object) -> datetime | None:
    """An ISO 8601 timestamp (``...Z`` or with an offset) as an aware UTC datetime, or None.

    A timestamp without an offset is taken to be UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def normalize_iso(value: object) -> str | None:
    """Any ISO 8601 timestamp in the form of :func:`iso_utc`; None when it is not one."""
    if isinstance(value, str) and _is_canonical(value):
        # kept as it is, without the round trip through a float (Xquik writes this form):
        # the round trip was a tenth of the client's own work on a send
        return value
    when = parse_iso(value)
    return None if when is None else iso_utc(when.timestamp())


def _is_canonical(text: str) -> bool:
    return (
        len(text) == _CANONICAL_LEN
        and text.isascii()
        and text[4] == text[7] == "-"
        and text[10] == "T"
        and text[13] == text[16] == ":"
        and text[19] == "."
        and text[23] == "Z"
        # further from 1970 a float's seconds keep too few bits for the milliseconds, and the
        # round trip moves them: those take the long way, moved the same
        and "1900" <= text[:4] < "2200"
        and parse_iso(text) is not None  # a real date and time (the parse checks the digits)
    )


_CANONICAL_LEN: Final = len("2026-11-30T02:46:35.910Z")
