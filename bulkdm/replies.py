"""Reading the answers to sent DMs: each recipient's reply recorded once, opt-outs shared.

For every sent row, the conversation of its sender with its recipient is read newest first,
page by page, until it reaches the DM (its message id; or a message older than its first
attempt, less the clock skew), or what an earlier sync already read whole (``reply_reads``).
Each message the recipient wrote after the DM, up to the sender's next message to them (another
campaign's DM, an agent's), is recorded in the checkpoint once, by its message id; the answers
after that next message are that message's, and only their opt-outs count here. An answer
that matches the opt-out rules (:mod:`bulkdm.optout`) is written to the shared ledger's opt-out
store **before** the checkpoint records it, so a sync killed at any point loses no opt-out: the
next sync reads that conversation again (its read mark is written with its replies, in one
transaction) and records what is missing; what it recorded before is left as it is.

Reads cost money: Xquik bills a credit per message its history returns, GetXAPI $0.001 per
page (plus one ``dm/list`` page per sender); every read takes the API key's read budget, and a
``Retry-After`` is waited out (up to :data:`MAX_WAIT_S` a time). What each conversation's read
cost is recorded with it (``read_costs``), and the spend cap counts it: a page is read only if
the most it can cost keeps the campaign within the cap (:class:`ReadSpend`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import Checkpoint, HandoffCursor, ReplyRead, Write
from bulkdm.errors import ProviderError
from bulkdm.handoff import HandoffLog, encode_jsonl, reply_record, write_atomic
from bulkdm.ledger import Ledger, Realm
from bulkdm.optout import OptOutRules
from bulkdm.outcomes import Action, Outcome
from bulkdm.policies.rereads import due
from bulkdm.providers.base import HistoryMessage, HistoryPage, Provider, SenderAuth
from bulkdm.report import billed_cost, read_cost, spend_cap_note
from bulkdm.rows import RowRecord
from bulkdm.runlock import RunLock
from bulkdm.settings import ProviderName, Settings
from bulkdm.timestamps import parse_iso

__all__ = ["MAX_PAGES", "MAX_WAIT_S", "REPLIES_SUFFIX", "CappedReads", "ReadSpend", "SyncReport",
           "replies_lock", "reply_records", "sync_replies", "write_replies_file"]

#: the replies file beside the campaign: one ``dm_reply`` handoff record per answer, once
REPLIES_SUFFIX = ".replies.jsonl"

#: pages read of one conversation before it is left for the next sync
MAX_PAGES = 50
#: the longest Retry-After waited out; a longer one ends the sync (run it again later)
MAX_WAIT_S = 60.0
#: tries of one page when the provider says try again
_TRIES = 5
#: the most messages an Xquik history page returns (each billed)
_XQUIK_PAGE_MAX = 20
_ROWS_PAGE = 200


@dataclass(kw_only=True, slots=True)
class SyncReport:
    """What one sync read and recorded."""

    conversations: int = 0
    pages: int = 0
    #: messages the history returned (Xquik bills each)
    results: int = 0
    new_replies: int = 0
    opt_outs: int = 0
    #: conversations that could not be read, by reason code
    unread: dict[str, int] = field(default_factory=dict)

    #: a read the spend cap refused: the sync stopped there
    capped: bool = False
    #: conversations not read: not due on a run's schedule (``due_only``)
    not_due: int = 0

    def cost(self, settings: Settings) -> tuple[int | None, float]:
        """(credits, dollars) of the reads."""
        return read_cost(settings, pages=self.pages, results=self.results)


class ReadSpend(Protocol):
    """The spend cap as reply reads see it: each read is counted, at the most it can cost,
    before it is made, and what it did not cost is given back."""

    def reserve_read(self, *, pages: int, results: int) -> bool:
        """Count a read that costs at most this, if it keeps the campaign within its cap."""
        ...

    def release_read(self, *, pages: int, results: int) -> None:
        """Give back what a reserved read did not cost."""
        ...


class CappedReads:
    """The spend cap of ``bulkdm replies``: what the checkpoint says the campaign spent (its
    runs' DMs, uploads, lookups and reply reads), plus this sync's reads."""

    def __init__(self, settings: Settings, spent: tuple[int, int, int, int, int]) -> None:
        self._settings = settings
        self._spent = dict(zip(("dms", "uploads", "lookups", "read_pages", "read_results"),
                               spent, strict=True))
        #: why the cap stopped the reads (None: it did not)
        self.note: str | None = None

    def reserve_read(self, *, pages: int, results: int) -> bool:
        more = {**self._spent, "read_pages": self._spent["read_pages"] + pages,
                "read_results": self._spent["read_results"] + results}
        if not self._settings.campaign.spend_cap.allows(*billed_cost(self._settings, more)):
            self.note = self.note or spend_cap_note(self._settings, self._spent, "reply read")
            return False
        self._spent = more
        return True

    def release_read(self, *, pages: int, results: int) -> None:
        self._spent["read_pages"] -= pages
        self._spent["read_results"] -= results


@dataclass(frozen=True, kw_only=True, slots=True)
class _Conversation:
    answers: tuple[HistoryMessage, ...]
    #: the newest message seen, when the read reached the DM (None: read again next time)
    read_until: str | None
    #: the recipient's messages after a later message of the sender, and that message's time
    later: tuple[HistoryMessage, ...] = ()
    later_at: str | None = None
    problem: str | None = None


Sleep = Callable[[float], Awaitable[None]]


async def sync_replies(
    checkpoint: Checkpoint, settings: Settings, provider: Provider,
    auths: Mapping[str, SenderAuth], *, ledger: Ledger | None, realm: Realm,
    sleep: Sleep = asyncio.sleep, now_s: Callable[[], float], budget: ReadSpend | None = None,
    due_only: bool = False,
) -> SyncReport:
    """Read the conversation of every sent row (``due_only``: of those due on a run's schedule,
    :mod:`bulkdm.policies.rereads`); record new answers; share opt-outs. What the reads cost
    is recorded in the checkpoint with each conversation; with a ``budget`` (the spend cap) no
    page is read that could cross it: the sync stops there (``capped``).

    :raises ProviderError: the provider refuses every read (a bad key, no credits).
    """
    report = SyncReport()
    # an account is its handle whatever its case (the settings may have respelled it)
    by_handle = {account.casefold(): auth for account, auth in auths.items()}
    reader = _Reader(provider=provider, settings=settings, report=report, sleep=sleep,
                     budget=budget)
    rules = OptOutRules(settings.replies.opt_out)
    after_id = 0
    while rows := await checkpoint.sent_rows(after_id=after_id, limit=_ROWS_PAGE):
        after_id = rows[-1].id
        reads = await checkpoint.reply_reads([r.id for r in rows])
        for row in rows:
            auth = by_handle.get((row.sender or "").casefold())
            if auth is None:
                report.unread["sender_not_configured"] = \
                    report.unread.get("sender_not_configured", 0) + 1
                continue
            # the DM cannot be older than its first attempt (its sent_at may be much later:
            # Xquik's completedAt of an action it confirmed late)
            first_s = await checkpoint.first_attempt_s(row.id, row.sender or "")
            read, read_at_s = reads.get(row.id), now_s()
            if due_only and not _due(row, read, first_s, settings, read_at_s):
                report.not_due += 1
                continue
            pages, results = report.pages, report.results
            found = await reader.read(auth, row, read, first_s=first_s)
            billed = cp.count_reads(pages=report.pages - pages, results=report.results - results)
            await _record(checkpoint, row, found, rules, ledger, realm, settings, report, now_s,
                          billed, read_at_s=read_at_s)
            if report.capped:
                return report
    return report


def _due(row: RowRecord, read: ReplyRead | None, first_s: float | None, settings: Settings,
         now_s: float) -> bool:
    """Whether a run's sync reads this conversation now (see :mod:`bulkdm.policies.rereads`)."""
    sent = parse_iso(row.sent_at)
    dm_at_s = first_s if first_s is not None else None if sent is None else sent.timestamp()
    return due(now_s=now_s, dm_at_s=dm_at_s, read_at_s=None if read is None else read.read_at_s,
               answered=read is not None and read.answered,
               sync_every_s=settings.replies.sync_every_s)


async def _record(checkpoint: Checkpoint, row: RowRecord, found: _Conversation,
                  rules: OptOutRules, ledger: Ledger | None, realm: Realm, settings: Settings,
                  report: SyncReport, now_s: Callable[[], float], billed: Write, *,
                  read_at_s: float) -> None:
    report.conversations += 1
    if found.problem is not None:
        report.unread[found.problem] = report.unread.get(found.problem, 0) + 1
    # what the read cost, with its replies and read mark: a restart's spend cap counts it
    writes = [billed]
    # an answer not recorded before makes the next sync read the conversation again (the
    # newest message of the last read is read again: it may be an answer recorded then)
    answered = False
    for answer in found.answers:
        answered = answered or not await checkpoint.recorded_reply(answer.message_id)
        opt_out = rules.matches(answer.text)
        if opt_out:
            # the ledger first: a sync killed after it records the reply on its next pass
            await _opt_out(ledger, realm, row, answer, settings, now_s)
        writes.append(cp.record_reply(message_id=answer.message_id, row_id=row.id,
                                      text=answer.text, received_at=answer.created_at,
                                      opt_out=opt_out))
    for answer in found.later:  # another message's answers: not this row's, but a STOP holds
        if rules.matches(answer.text):
            await _opt_out(ledger, realm, row, answer, settings, now_s)
    if found.read_until is not None:
        writes.append(cp.read_replies_until(row_id=row.id, until_at=found.read_until,
                                            later_at=found.later_at, read_at_s=read_at_s,
                                            answered=answered))
    before = await checkpoint.reply_counts()
    await checkpoint.submit(writes)
    await checkpoint.flush()
    after = await checkpoint.reply_counts()
    report.new_replies += after[0] - before[0]
    report.opt_outs += after[2] - before[2]


async def _opt_out(ledger: Ledger | None, realm: Realm, row: RowRecord, answer: HistoryMessage,
                   settings: Settings, now_s: Callable[[], float]) -> None:
    if ledger is None:
        return
    said = parse_iso(answer.created_at)
    await ledger.add_opt_out(realm, user_id=row.recipient_id, username=row.recipient_username,
                             reason=f"replied {answer.text[:200]!r}",
                             source=f"reply:{settings.campaign.name}:{answer.message_id}",
                             now_s=now_s(), said_s=None if said is None else said.timestamp())


@dataclass(kw_only=True, slots=True)
class _Reader:
    """Reads conversations page by page, each page within the spend cap's ``budget``."""

    provider: Provider
    settings: Settings
    report: SyncReport
    sleep: Sleep
    budget: ReadSpend | None
    #: senders whose own id the provider has (GetXAPI asks ``dm/list`` once per sender)
    listed: set[str] = field(default_factory=set)

    async def read(self, auth: SenderAuth, row: RowRecord, read: ReplyRead | None, *,
                   first_s: float | None) -> _Conversation:
        """The recipient's messages after the DM, newest first, reading no further than
        needed. Those after a later message of the sender (another campaign's DM, an agent's)
        answer that message: they come back apart (``later``), for the opt-out rules only."""
        floor = _floor(row, first_s, self.settings.retry.clock_skew_s)
        known = parse_iso(read.until_at) if read is not None else None
        walk = _Walk(later_at=read.later_at if read is not None else None)
        newest: str | None = None
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await self._page(auth, row, cursor)
            if isinstance(page, Outcome):
                return walk.conversation(None, problem=page.code or page.action.value)
            for message in page.messages:
                newest = newest or message.created_at
                if _reached(message, row, floor, known):
                    return walk.conversation(newest or _until(read))
                walk.see(message, row)
            if page.cursor is None:  # the start of the conversation
                return walk.conversation(newest or _until(read))
            cursor = page.cursor
        return walk.conversation(None, problem="history_too_long")

    async def _page(self, auth: SenderAuth, row: RowRecord,
                    cursor: str | None) -> HistoryPage | Outcome:
        outcome: Outcome | None = None
        for _ in range(_TRIES):
            page = await self._billed_page(auth, row, cursor)
            if isinstance(page, HistoryPage):
                return page
            outcome = page
            if page.action is Action.STOP_RUN:
                raise ProviderError(f"reading replies: {page.message or page.code}")
            if page.action not in (Action.RETRY, Action.REST_SENDER):
                return page
            wait_s = page.retry_after_s if page.retry_after_s is not None else 1.0
            if wait_s > MAX_WAIT_S:
                return page
            await self.sleep(wait_s)
        assert outcome is not None
        return outcome

    async def _billed_page(self, auth: SenderAuth, row: RowRecord,
                           cursor: str | None) -> HistoryPage | Outcome:
        """One page, counted against the budget at the most it can cost before it is read
        (a full page on Xquik; on GetXAPI, a sender's first read also lists its
        conversations), and at what it cost once read."""
        most = (1, _XQUIK_PAGE_MAX) if self.settings.provider.name is ProviderName.XQUIK \
            else (1 if auth.account in self.listed else 2, 0)
        budget = self.budget
        if budget is not None and not budget.reserve_read(pages=most[0], results=most[1]):
            self.report.capped = True
            return Outcome(action=Action.FAIL_ROW, code="spend_cap")
        page = await self.provider.history_page(auth, row.recipient_id or "", cursor)
        pages, results = (page.pages, len(page.messages)) if isinstance(page, HistoryPage) \
            else (0, 0)
        if budget is not None:
            budget.release_read(pages=most[0] - pages, results=most[1] - results)
        if isinstance(page, HistoryPage):
            self.listed.add(auth.account)
            self.report.pages += pages
            self.report.results += results
        return page


def _until(read: ReplyRead | None) -> str | None:
    return None if read is None else read.until_at


def _floor(row: RowRecord, first_s: float | None, skew_s: float) -> datetime | None:
    """No message older than this is after the DM: its first attempt (or its sent_at, if
    earlier), less the clock skew allowance."""
    dm_at = parse_iso(row.sent_at)
    if first_s is not None:
        first = datetime.fromtimestamp(first_s, tz=UTC)
        dm_at = first if dm_at is None else min(dm_at, first)
    return None if dm_at is None else dm_at - timedelta(seconds=skew_s)


@dataclass(slots=True)
class _Walk:
    """The messages after the DM, newest first: the recipient's are the DM's answers until a
    later message of the sender shows that those seen so far answer that message instead."""

    later_at: str | None
    answers: list[HistoryMessage] = field(default_factory=list)
    later: list[HistoryMessage] = field(default_factory=list)

    def see(self, message: HistoryMessage, row: RowRecord) -> None:
        if message.sender_id == row.recipient_id:
            after = self.later_at is not None and message.created_at is not None \
                and message.created_at >= self.later_at
            (self.later if after else self.answers).append(message)
        elif message.text != row.text:  # the sender wrote again after the DM
            self.later += self.answers
            self.answers = []
            if message.created_at is not None:
                self.later_at = min(filter(None, (self.later_at, message.created_at)))

    def conversation(self, read_until: str | None, *, problem: str | None = None) -> _Conversation:
        return _Conversation(answers=tuple(self.answers), later=tuple(self.later),
                             read_until=read_until, later_at=self.later_at, problem=problem)


def _reached(message: HistoryMessage, row: RowRecord, floor: datetime | None,
             known: datetime | None) -> bool:
    """The DM itself, a message before it, or one an earlier sync read already."""
    if message.message_id == row.message_id:
        return True
    created = parse_iso(message.created_at)
    if created is None:
        return False
    return (floor is not None and created < floor) or (known is not None and created < known)


def replies_lock(checkpoint_path: Path) -> RunLock:
    """One reader of a campaign's replies at a time (``replies``, or a run's ``sync_every``):
    two would append the same replies to the file. Held beside the checkpoint's own lock, so a
    sync may read while a run sends."""
    return RunLock(checkpoint_path.with_name(checkpoint_path.name + ".replies"))


async def reply_records(checkpoint: Checkpoint, *, campaign: str, after_seq: int = 0,
                        limit: int = 1000) -> list[tuple[int, dict[str, object]]]:
    """(seq, ``dm_reply`` record) of the replies recorded after ``after_seq``."""
    return [(r.seq, reply_record(r, campaign=campaign))
            for r in await checkpoint.replies_after(after_seq, limit=limit)]


async def write_replies_file(checkpoint: Checkpoint, path: Path, *, campaign: str) -> int:
    """Append the replies not yet in ``path`` (its cursor in the checkpoint), each once; a
    file that no longer continues from the cursor is rebuilt whole. How many were added."""
    cursor = await checkpoint.replies_cursor()
    log = await asyncio.to_thread(HandoffLog.open, path, cursor.offset)
    if log is None:  # deleted or edited: rebuilt from the checkpoint, all at once
        everything = await _all_records(checkpoint, campaign)
        await asyncio.to_thread(write_atomic, path, [encode_jsonl(r for _, r in everything)])
        cursor = HandoffCursor(seq=everything[-1][0] if everything else 0,
                               offset=(await asyncio.to_thread(path.stat)).st_size,
                               path=str(path))
        await checkpoint.submit(cp.set_replies_cursor(cursor))
        await checkpoint.flush()
        return len(everything)
    added = 0
    try:
        while batch := await reply_records(checkpoint, campaign=campaign, after_seq=cursor.seq):
            offset = await asyncio.to_thread(log.append, [r for _, r in batch])
            cursor = HandoffCursor(seq=batch[-1][0], offset=offset, path=str(path))
            await checkpoint.submit(cp.set_replies_cursor(cursor))
            await checkpoint.flush()
            added += len(batch)
    finally:
        log.close()
    return added


async def _all_records(checkpoint: Checkpoint,
                       campaign: str) -> list[tuple[int, dict[str, object]]]:
    found: list[tuple[int, dict[str, object]]] = []
    while batch := await reply_records(checkpoint, campaign=campaign,
                                       after_seq=found[-1][0] if found else 0):
        found += batch
    return found
