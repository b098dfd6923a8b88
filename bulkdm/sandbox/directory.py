"""The sandbox's X: who exists, their numeric ids, and who may DM whom (deterministic rules).

Names compare case-insensitively and a leading ``@`` is ignored.

Users (recipients)
    * Every username is a user whose id is derived from it: ``derive_user_id(name)``, a stable
      18-19 digit number from SHA-256 of the lower-cased name. The directory remembers each id it
      derives (by a lookup, a send by username or a sender account), so ids map back to names.
    * An all-digits id given directly that the directory never derived is an existing, ordinary
      user named ``user_<id>`` (campaigns may give ids without a lookup).
    * ``nf_*`` users do not exist: lookups answer 404 ``user_not_found``, and a send to the id
      derived from such a name fails (Xquik 422 ``x_target_not_found``, GetXAPI 404).
    * ``banned_*`` users are suspended by X: a lookup answers GetXAPI 403 ``User has been
      suspended.`` (X's words: an answer about the user looked up, not about any sender),
      Xquik 404 ``user_not_found``.
    * ``closed_*`` users refuse DMs (Xquik 422 ``x_dm_not_allowed``, GetXAPI 403) from every
      sender except those whose account starts with ``vip``.
    * ``protected_*`` users refuse DMs from everyone (Xquik 422 ``x_account_protected``,
      GetXAPI 403).

Sender accounts (Xquik ``account``; GetXAPI ``auth_token`` with a leading ``tok-`` stripped)
    * ``suspended*``: Xquik 422 ``x_account_suspended``; GetXAPI 403.
    * ``reauth*``: Xquik 403 ``{"error": "account_needs_reauth"}`` (bare); GetXAPI 401.
    * ``restricted*``: Xquik 403 ``{"error": "account_restricted"}`` (bare); GetXAPI 403.
    * ``nosuch*``: Xquik 404 ``account_not_found``; GetXAPI 401.
    * ``daily*``: delivers 3 DMs, then Xquik 429 ``x_daily_limit``; GetXAPI 429.
    * ``vip*``: may DM ``closed_*`` users.
    * GetXAPI tokens starting ``bad``: 401 ``Invalid auth_token - could not extract userId``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DAILY_DELIVERIES",
    "Directory",
    "Profile",
    "RecipientRefusal",
    "SenderRefusal",
    "derive_user_id",
    "is_banned",
    "normalize_account",
]

#: deliveries a ``daily*`` sender makes before its daily limit
DAILY_DELIVERIES = 3

_ID_FLOOR = 10**17
_ID_SPAN = 9_000_000_000_000_000_000 - _ID_FLOOR


class RecipientRefusal(StrEnum):
    NOT_FOUND = "not_found"
    DMS_CLOSED = "dms_closed"
    PROTECTED = "protected"


class SenderRefusal(StrEnum):
    SUSPENDED = "suspended"
    NEEDS_REAUTH = "needs_reauth"
    RESTRICTED = "restricted"
    NOT_CONNECTED = "not_connected"
    DAILY_LIMIT = "daily_limit"


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """What both providers tell about a user; each renders it in its own field names."""

    id: str
    username: str
    protected: bool
    can_dm: bool

    @property
    def display_name(self) -> str:
        return self.username.replace("_", " ").title()

    @property
    def followers(self) -> int:
        # stable, varied numbers, so a client that reads them sees something plausible
        return int(self.id) % 100_000


def normalize_account(account: str) -> str:
    """The account as the sandbox labels it: stripped, without a leading ``@``."""
    return account.strip().removeprefix("@")


def derive_user_id(username: str) -> str:
    """The stable numeric id (18-19 digits) the sandbox gives ``username``."""
    digest = hashlib.sha256(normalize_account(username).lower().encode()).digest()
    return str(_ID_FLOOR + int.from_bytes(digest[:8], "big") % _ID_SPAN)


class Directory:
    """Maps usernames to ids and back, and applies the rules in this module's docstring."""

    def __init__(self) -> None:
        self._names_by_id: dict[str, str] = {}
        self._deliveries: dict[str, int] = {}

    def register(self, username: str) -> str:
        """The id of ``username``, remembered so that the id maps back to the name."""
        name = normalize_account(username)
        user_id = derive_user_id(name)
        self._names_by_id.setdefault(user_id, name)
        return user_id

    def username_for(self, user_id: str) -> str:
        """The name behind ``user_id``; ``user_<id>`` for ids given directly."""
        return self._names_by_id.get(user_id) or f"user_{user_id}"

    def exists(self, user_id: str) -> bool:
        return user_id.isdigit() and not _is_missing(self.username_for(user_id))

    def find(self, username: str) -> str | None:
        """The id of an existing ``username``, or None (``nf_*`` and ``banned_*`` names)."""
        user_id = self.register(username)
        return None if _is_missing(username) or is_banned(username) else user_id

    def profile(self, user_id: str) -> Profile:
        name = self.username_for(user_id)
        lower = name.lower()
        protected = lower.startswith("protected_")
        closed = protected or lower.startswith("closed_")
        return Profile(id=user_id, username=name, protected=protected, can_dm=not closed)

    def recipient_refusal(self, sender: str, recipient_id: str) -> RecipientRefusal | None:
        name = self.username_for(recipient_id).lower()
        if _is_missing(name):
            return RecipientRefusal.NOT_FOUND
        if name.startswith("protected_"):
            return RecipientRefusal.PROTECTED
        if name.startswith("closed_") and not self.sender_name(sender).lower().startswith("vip"):
            return RecipientRefusal.DMS_CLOSED
        return None

    def sender_refusal(self, sender: str) -> SenderRefusal | None:
        name = self.sender_name(sender).lower()
        for prefix, refusal in _SENDER_PREFIXES:
            if name.startswith(prefix):
                return refusal
        if name.startswith("daily") and self._deliveries.get(name, 0) >= DAILY_DELIVERIES:
            return SenderRefusal.DAILY_LIMIT
        return None

    def sender_name(self, sender: str) -> str:
        """A sender given by id is named by the directory; one given by name keeps its name."""
        name = normalize_account(sender)
        return self.username_for(name) if name.isdigit() else name

    def sender_id(self, sender: str) -> str:
        name = normalize_account(sender)
        return name if name.isdigit() else self.register(name)

    def count_delivery(self, sender: str) -> None:
        name = self.sender_name(sender).lower()
        self._deliveries[name] = self._deliveries.get(name, 0) + 1

    def clear(self) -> None:
        self._names_by_id.clear()
        self._deliveries.clear()


_SENDER_PREFIXES = (
    ("suspended", SenderRefusal.SUSPENDED),
    ("reauth", SenderRefusal.NEEDS_REAUTH),
    ("restricted", SenderRefusal.RESTRICTED),
    ("nosuch", SenderRefusal.NOT_CONNECTED),
)


def is_banned(username: str) -> bool:
    """A user X suspended (``banned_*``): lookups find no one, GetXAPI says why."""
    return normalize_account(username).lower().startswith("banned_")


def _is_missing(username: str) -> bool:
    return username.lower().startswith("nf_")
