"""The delivery ledger: every DM the sandbox delivered, in order, indexed by conversation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Delivery", "Entry", "Ledger", "Page", "page_newest_first", "pair_key"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivery:
    """One delivered DM, recorded at the moment of delivery (before any answer is sent)."""

    #: ``"xquik"`` or ``"getxapi"``
    provider: str
    #: the sender account as the request named it (without ``@``; GetXAPI: from the auth token)
    sender: str
    recipient_id: str
    text: str
    media_id: str | None
    message_id: str
    idempotency_key: str | None
    #: ``time.time()`` when the DM was delivered
    at_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """A delivery as history sees it: with the sender's numeric user id."""

    delivery: Delivery
    sender_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Page:
    """One page of a conversation, newest first; ``next_cursor`` is None on the last page."""

    entries: tuple[Entry, ...]
    next_cursor: str | None


class Ledger:
    """Append-only list of deliveries, plus per-conversation and per-user indexes for history."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        #: recipients' answers: in the conversations, never among ``deliveries``
        self.replies: list[Delivery] = []
        self._by_pair: defaultdict[tuple[str, str], list[Entry]] = defaultdict(list)
        self._by_user: defaultdict[str, list[Entry]] = defaultdict(list)

    def record(self, delivery: Delivery, *, sender_id: str) -> None:
        entry = Entry(delivery=delivery, sender_id=sender_id)
        self.deliveries.append(delivery)
        self._by_pair[pair_key(sender_id, delivery.recipient_id)].append(entry)
        self._by_user[sender_id].append(entry)
        if delivery.recipient_id != sender_id:
            self._by_user[delivery.recipient_id].append(entry)

    def record_reply(self, reply: Delivery, *, sender_id: str) -> None:
        """An answer from a recipient (``sender_id``) to the account ``reply.recipient_id``."""
        entry = Entry(delivery=reply, sender_id=sender_id)
        self.replies.append(reply)
        self._by_pair[pair_key(sender_id, reply.recipient_id)].append(entry)
        self._by_user[sender_id].append(entry)
        self._by_user[reply.recipient_id].append(entry)

    def conversation(self, user_a: str, user_b: str) -> Sequence[Entry]:
        return self._by_pair.get(pair_key(user_a, user_b), ())

    def involving(self, user_id: str) -> Sequence[Entry]:
        return self._by_user.get(user_id, ())

    def clear(self) -> None:
        # cleared in place: callers may hold a reference to ``deliveries``
        self.deliveries.clear()
        self.replies.clear()
        self._by_pair.clear()
        self._by_user.clear()


def pair_key(user_a: str, user_b: str) -> tuple[str, str]:
    """The two ids of a one-to-one conversation, numerically lower first (X's own order)."""
    return (user_a, user_b) if _numeric(user_a) <= _numeric(user_b) else (user_b, user_a)


def page_newest_first(entries: Sequence[Entry], cursor: str | None, size: int) -> Page | None:
    """The page ending just before ``cursor`` (None: the newest); None if the cursor is invalid.

    A cursor is the index (in delivery order) one past the next entry to return, so a page stays
    stable while newer messages arrive.
    """
    if cursor:
        if not cursor.startswith("c") or not cursor[1:].isdigit():
            return None
        end = min(int(cursor[1:]), len(entries))
    else:
        end = len(entries)
    start = max(0, end - size)
    chosen = tuple(entries[i] for i in range(end - 1, start - 1, -1))
    return Page(entries=chosen, next_cursor=f"c{start}" if start > 0 else None)


def _numeric(user_id: str) -> int:
    return int(user_id) if user_id.isdigit() else -1
