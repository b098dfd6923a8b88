"""A campaign row as planned and as it moves through a run: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

__all__ = ["FINAL_STATES", "UNBOUND", "PlannedRow", "RowRecord", "RowState"]

#: where rows bound to no sender yet are counted, in counts per sender (not an X handle)
UNBOUND: Final = "(any sender)"


class RowState(StrEnum):
    #: waiting to be sent (maybe after ``next_attempt_at``)
    PENDING = "pending"
    #: intent committed; the request may be on the wire
    SENDING = "sending"
    #: the request may have been delivered; settled by replay (Xquik) or history (GetXAPI)
    UNKNOWN = "unknown"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    INVALID = "invalid"


FINAL_STATES = frozenset({RowState.SENT, RowState.FAILED, RowState.SKIPPED, RowState.INVALID})


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedRow:
    """One campaign line after planning. Invalid and skipped rows carry their reason.

    ``reason`` is a short code (``invalid_json``, ``missing_variable``, ``duplicate``, ``suppressed``,
    ``no_consent``, ...); ``field`` names the column or key at fault; ``message`` says what to fix.
    """

    line: int
    state: RowState
    recipient_id: str | None = None
    recipient_username: str | None = None
    text: str | None = None
    text_sha256: str | None = None
    sender: str | None = None
    external_id: str | None = None
    media: str | None = None
    consent: str | None = None
    idempotency_key: str | None = None
    field: str | None = None
    reason: str | None = None
    message: str | None = None
    duplicate_of_line: int | None = None
    #: an invalid row's fields as read (a JSON object), for a fix file
    original: str | None = None

    @property
    def recipient_key(self) -> str | None:
        """Canonical recipient: the id when known, else the lower-cased username."""
        if self.recipient_id is not None:
            return f"id:{self.recipient_id}"
        if self.recipient_username is not None:
            return f"u:{self.recipient_username.lower()}"
        return None


class RowRecord(NamedTuple):
    """A row as the checkpoint holds it during and after a run (what exports are built from).

    Fields are in the checkpoint's column order: it builds records positionally, a page at a
    time on the send path. Everyone else names them. A named tuple, not a frozen dataclass: as
    immutable, and built in a quarter of the time (a frozen dataclass sets each of its 27 fields
    through ``object.__setattr__``; two or three records a send, about 12 µs of it).
    """

    id: int
    line: int
    state: RowState
    recipient_id: str | None
    recipient_username: str | None
    text: str | None
    sender: str | None
    external_id: str | None
    media: str | None
    consent: str | None
    idempotency_key: str | None
    attempts: int = 0
    message_id: str | None = None
    media_id: str | None = None
    #: failure or skip reason code (``x_dm_not_allowed``, ``duplicate``, ``invalid_json``, ...)
    reason: str | None = None
    #: the human-readable message that goes with ``reason``
    message: str | None = None
    #: the column or key at fault, for invalid rows
    field: str | None = None
    duplicate_of_line: int | None = None
    #: ISO 8601 UTC time the DM was delivered (sent rows) or the row finished
    sent_at: str | None = None
    finished_at: str | None = None
    request_id: str | None = None
    write_action_id: str | None = None
    text_sha256: str | None = None
    #: how many times a fresh idempotency key was needed (Xquik ``safeToRetry``)
    key_rotation: int = 0
    #: wall-clock time the current attempt took its rate slot
    claimed_at_s: float | None = None
    #: the sender was chosen by a claim (late binding), not pinned by the campaign file
    bound_by_claim: bool = False
