"""Canonical recipients: an X username (``@`` stripped, 1-15 of ``[A-Za-z0-9_]``) or a numeric id.

Usernames compare case-insensitively; a row that names both keeps the id as its identity (the
username stays for display and for the handoff). Bad input is a value, :class:`RecipientProblem`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CANONICAL_USERNAME",
    "Recipient",
    "RecipientProblem",
    "canonical_id",
    "canonical_username",
    "parse_recipient",
    "recipient_key",
    "recipient_values",
]

_USERNAME: Final = re.compile(r"[A-Za-z0-9_]{1,15}")
#: ``CANONICAL_USERNAME.fullmatch(raw)`` exactly when ``canonical_username(raw) == raw``: the
#: username as written is already canonical (no ``@``, no spaces)
CANONICAL_USERNAME: Final = _USERNAME
#: X user ids are unsigned 64-bit integers: at most 20 digits
_USER_ID: Final = re.compile(r"[0-9]{1,20}")
_MAX_USER_ID: Final = 2**64 - 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipient:
    """Who a row writes to. At least one of ``user_id`` and ``username`` is set."""

    user_id: str | None
    username: str | None

    @property
    def key(self) -> str:
        """``id:123`` when the id is known, else ``u:`` and the lower-cased username."""
        return recipient_key(user_id=self.user_id, username=self.username)


@dataclass(frozen=True, kw_only=True, slots=True)
class RecipientProblem:
    """Why a row has no usable recipient; ``field`` is the column or key at fault."""

    field: str
    reason: str
    message: str


def canonical_username(raw: str) -> str | None:
    """``"@Alice_1"`` -> ``"Alice_1"``; ``None`` when it is not a valid X username."""
    name = raw.strip()
    name = name.removeprefix("@")
    return name if _USERNAME.fullmatch(name) else None


def canonical_id(raw: str) -> str | None:
    """``"00123"`` -> ``"123"``; ``None`` unless it is a positive 64-bit integer in digits."""
    digits = raw.strip()
    if not _USER_ID.fullmatch(digits):
        return None
    value = int(digits)
    return str(value) if 0 < value <= _MAX_USER_ID else None


def recipient_key(*, user_id: str | None, username: str | None) -> str:
    """The key two rows share exactly when they write to the same person."""
    if user_id is not None:
        return f"id:{user_id}"
    if username is not None:
        return f"u:{username.lower()}"
    raise ValueError("a recipient needs an id or a username")


def parse_recipient(user_id: str | None, username: str | None) -> Recipient | RecipientProblem:
    """Validate a row's ``recipient_id`` and ``recipient_username`` (``None`` when absent)."""
    found = recipient_values(user_id, username)
    if isinstance(found, RecipientProblem):
        return found
    return Recipient(user_id=found[0], username=found[1])


def recipient_values(
    user_id: str | None, username: str | None
) -> tuple[str | None, str | None] | RecipientProblem:
    """:func:`parse_recipient` as a plain ``(user_id, username)`` pair, for the planner's bulk path.

    A frozen :class:`Recipient` costs about 0.3 µs to build, a tenth of planning a row.
    """
    if user_id is None and username is None:
        return RecipientProblem(
            field="recipient_username",
            reason="missing_recipient",
            message="the row has neither recipient_username nor recipient_id; add one",
        )
    canonical_user_id = None if user_id is None else canonical_id(user_id)
    if user_id is not None and canonical_user_id is None:
        return RecipientProblem(
            field="recipient_id",
            reason="bad_recipient_id",
            message=f"{user_id!r} is not an X user id (a positive integer of up to 20 digits)",
        )
    canonical_name = None if username is None else canonical_username(username)
    if username is not None and canonical_name is None:
        return RecipientProblem(
            field="recipient_username",
            reason="bad_username",
            message=f"{username!r} is not an X username (1-15 letters, digits or _)",
        )
    return canonical_user_id, canonical_name
