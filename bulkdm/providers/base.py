"""The interface every provider client implements; the engine sees only this and plain values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bulkdm.outcomes import Outcome, Reconciliation
from bulkdm.secrets import Secret

__all__ = ["DmRequest", "HistoryMessage", "HistoryPage", "Provider", "SenderAuth"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderAuth:
    """Who sends: the account name, and for GetXAPI the sender's X session token."""

    account: str
    auth_token: Secret | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DmRequest:
    recipient_id: str
    sender: SenderAuth
    text: str
    idempotency_key: str
    media_id: str | None = None
    #: called with the wall-clock time the request's body reached the socket
    on_sent: Callable[[float], None] | None = field(default=None, compare=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryMessage:
    """One message of a conversation as the provider's history gives it."""

    message_id: str
    sender_id: str
    text: str
    #: ISO 8601 UTC, normalized; None when the provider gave none readable
    created_at: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryPage:
    """One page of a one-to-one conversation, newest first; ``cursor`` reads the next (older)
    page, None on the last. ``pages`` counts the requests it took (GetXAPI finds the sender's
    own id with ``dm/list`` once), for the read cost."""

    messages: tuple[HistoryMessage, ...]
    cursor: str | None
    pages: int = 1


class Provider(Protocol):
    """A hosted DM API. Every method returns an :class:`Outcome`; none raises for an answer
    the engine can act on. Exceptions (:class:`bulkdm.errors.ProviderError`) mean the run stops.
    """

    name: str
    #: the endpoint recorded as ``source_endpoint`` in handoff records, e.g. ``POST /x/dm/{userId}``
    send_endpoint: str

    async def resolve(self, username: str, sender: SenderAuth) -> Outcome:
        """Username to numeric user id (``value``); ``FAIL_ROW`` with ``user_not_found``."""
        ...

    async def send(self, request: DmRequest) -> Outcome:
        """Send one DM; ``DONE`` with the message id in ``value``."""
        ...

    async def reconcile(self, request: DmRequest, since_iso: str) -> Reconciliation:
        """Look in the conversation for ``request.text`` sent after ``since_iso``."""
        ...

    async def upload_media(self, path: Path, sender: SenderAuth, idempotency_key: str) -> Outcome:
        """Upload a file for a DM; ``DONE`` with the media id in ``value``."""
        ...

    async def history_page(self, sender: SenderAuth, recipient_id: str,
                           cursor: str | None) -> HistoryPage | Outcome:
        """One page (newest first) of ``sender``'s conversation with ``recipient_id``, or why
        it cannot be read (a read: through the API key's read budget)."""
        ...

    async def aclose(self) -> None: ...
