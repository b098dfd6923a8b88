"""The engine's side of the account pool: reservations taken ahead in small batches, settled
in the background.

A send needs a :class:`Ticket`: one reservation of its account and one of the API key. Each
subject's reservations are taken a few at a time (as many as fit now, at most what the account's
pace uses within half a lease), so most sends take a ticket without a trip to the ledger. Send
times and releases are written in groups by one background task: until they are written, a
reservation counts as "now" for everyone else, which is the safe side.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from bulkdm.errors import LedgerError
from bulkdm.ledger.base import (
    LEASE_S,
    Ask,
    Grant,
    Health,
    Ledger,
    Realm,
    Rest,
    account_subject,
    effective_rates,
    key_subject,
    window_s,
)
from bulkdm.rates import Rate

__all__ = ["AccountPool", "Refusal", "Ticket"]

#: reservations asked for at once, at most (fewer when fewer fit now or the pace is slow); a
#: grant is one row of the ledger however many it holds
BATCH: Final = 256
#: reservations asked for at once in one transaction, at most (one commit, one fsync for
#: them all; a slow account's reservation is one send, so a group is that many sends)
GROUP: Final = 16
#: how long settlements gather before they are written together
SETTLE_EVERY_S: Final = 0.05
#: a running campaign registers its windows again this often (a registration counts for a
#: day, REGISTRATION_TTL_S: a run of days must keep other campaigns to its limits)
REFRESH_S: Final = 3600.0


def batch_size(rates: Sequence[Rate], lease_s: float) -> int:
    """Reservations to take at once: at most what the pace uses in half a lease, and a sixteenth
    of the smallest window (those a killed process held unused count until they leave it)."""
    if not rates:
        return BATCH
    pace_s = min(r.period_s / r.count for r in rates)
    smallest = min(r.count for r in rates)
    return max(1, min(BATCH, int(lease_s / 2 / pace_s), smallest // 16))


@dataclass(frozen=True, kw_only=True, slots=True)
class Refusal:
    """No send for this account now: ask again at ``next_s``."""

    next_s: float
    reason: str


@dataclass(kw_only=True, slots=True, eq=False)
class Ticket:
    """One send's reservations (its account's and its API key's)."""

    pool: AccountPool
    ids: tuple[int, int]
    done: bool = False

    def sent(self, at_s: float) -> None:
        """The request left at ``at_s``: the reservations count from then."""
        if not self.done:
            self.done = True
            self.pool.settle_later(sent=[(i, at_s) for i in self.ids])

    def release(self) -> None:
        """The request never left: the reservations count for nothing (no-op once sent)."""
        if not self.done:
            self.done = True
            self.pool.settle_later(released=list(self.ids))


@dataclass(kw_only=True, slots=True)
class _Held:
    """Reservations of one subject taken ahead and not used yet: (id, its lease's end), oldest
    first; the reservation under way (set when it ends), and the next batch being reserved
    before these run out."""

    ids: deque[tuple[int, float]] = field(default_factory=deque)
    filling: asyncio.Event | None = None
    refill: asyncio.Task[None] | None = None


class AccountPool:
    """Reservations for one campaign's senders and API key. Build with :meth:`open`."""

    def __init__(self, ledger: Ledger, *, realm: Realm, campaign: str, api_key: str,
                 clock: Callable[[], float] = time.time, lease_s: float = LEASE_S) -> None:
        self.ledger = ledger
        self.realm = realm
        self._campaign = campaign
        self._key = key_subject(realm, api_key)
        self._clock = clock
        self._lease_s = lease_s
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{campaign}"
        self._rates: dict[str, tuple[Rate, ...]] = {}
        self._subjects: dict[str, str] = {}
        self._wants: dict[str, int] = {}
        self._held: dict[str, _Held] = {}
        self._sent: list[tuple[int, float]] = []
        self._released: list[int] = []
        self._chores: list[Callable[[], Awaitable[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: reservations asked for and not sent to the ledger yet, and the task sending them
        self._asks: list[tuple[str, asyncio.Future[Grant]]] = []
        self._reserver: asyncio.Task[None] | None = None
        self._failure: LedgerError | None = None
        self._on_failure: list[Callable[[LedgerError], None]] = []
        #: a stop was asked for: no sender waits for the ledger any more
        self._stopped = False
        self._unhealthy: set[str] = set()
        #: this campaign's own windows per subject, as registered, and when they last were: a
        #: registration counts for REGISTRATION_TTL_S, so a run of days registers again
        self._own: dict[str, tuple[Rate, ...]] = {}
        self._registered_s = clock()

    @classmethod
    async def open(cls, ledger: Ledger, *, realm: Realm, campaign: str, api_key: str,
                   accounts: Mapping[str, Sequence[Rate]], key_rates: Sequence[Rate],
                   clock: Callable[[], float] = time.time,
                   lease_s: float = LEASE_S) -> AccountPool:
        """Register this campaign's windows for each account and the key; the pool keeps every
        registered campaign's windows (the stricter limits hold)."""
        pool = cls(ledger, realm=realm, campaign=campaign, api_key=api_key, clock=clock,
                   lease_s=lease_s)
        windows = {**{pool.subject(a): r for a, r in accounts.items()}, pool._key: key_rates}
        # one call for them all: one each (two round trips and a commit) took seconds for
        # 2,000 accounts
        limits = await ledger.register_many(windows, campaign=campaign, now_s=clock())
        for subject, rates in windows.items():
            pool._rates[subject] = effective_rates(rates, *(c.rates for c in limits[subject]))
            pool._own[subject] = tuple(rates)
        return pool

    async def narrow(self, account: str, rates: Sequence[Rate]) -> None:
        """This campaign's windows for ``account`` are now ``rates`` (a warm-up's cap for the
        day): registered in the ledger, where every campaign's reservations keep them."""
        subject = self.subject(account)
        await self._register(subject, rates, self._clock())
        self._wants.pop(subject, None)  # a batch no larger than the new windows allow

    async def _register(self, subject: str, rates: Sequence[Rate], now_s: float) -> None:
        limits = await self.ledger.register_many({subject: rates}, campaign=self._campaign,
                                                 now_s=now_s)
        self._rates[subject] = effective_rates(rates, *(c.rates for c in limits[subject]))
        self._own[subject] = tuple(rates)

    def _register_again_if_due(self) -> None:
        """Register this campaign's windows again once REFRESH_S has passed (in the
        background): other campaigns keep to them for as long as this one runs, not a day."""
        now = self._clock()
        if now - self._registered_s < REFRESH_S:
            return
        self._registered_s = now
        own = dict(self._own)
        self._chore(lambda: self._register_all(own, now))

    async def _register_all(self, own: Mapping[str, Sequence[Rate]], now_s: float) -> None:
        limits = await self.ledger.register_many(own, campaign=self._campaign, now_s=now_s)
        for subject, rates in own.items():  # and keeps to what others registered meanwhile
            self._rates[subject] = effective_rates(rates, *(c.rates for c in limits[subject]))

    def subject(self, account: str | None) -> str:
        """The subject of ``account`` (``None``: the API key)."""
        if account is None:
            return self._key
        subject = self._subjects.get(account)
        if subject is None:
            subject = self._subjects[account] = account_subject(self.realm, account)
        return subject

    def rates(self, account: str | None) -> tuple[Rate, ...]:
        """Every window kept for ``account`` (``None``: the key): all campaigns' together."""
        return self._rates[self.subject(account)]

    async def history(self, account: str | None, now_s: float) -> list[float]:
        """The send times that count in ``account``'s windows now, every campaign's."""
        longest_s = max((window_s(r) for r in self.rates(account)), default=0.0)
        return await self.ledger.history(self.subject(account), since_s=now_s - longest_s,
                                         now_s=now_s)

    async def first_send_of(self, account: str) -> float | None:
        """When ``account`` first sent, in any campaign (``None``: never)."""
        return await self.ledger.first_send(self.subject(account))

    async def rest_of(self, account: str | None, now_s: float) -> Rest | None:
        return await self.ledger.rest(self.subject(account), now_s=now_s)

    async def health_of(self, account: str) -> Health | None:
        health = await self.ledger.health(self.subject(account))
        if health is not None:
            self._unhealthy.add(account)
        return health

    # -- failure and stop ------------------------------------------------------------------------

    @property
    def failure(self) -> LedgerError | None:
        """The ledger's first failure in this pool's life (None: none)."""
        return self._failure

    def on_failure(self, callback: Callable[[LedgerError], None]) -> None:
        """Call ``callback`` with the error when the ledger first fails (a run stops there)."""
        self._on_failure.append(callback)

    def _fail(self, exc: LedgerError) -> None:
        if self._failure is None:
            self._failure = exc
            for callback in self._on_failure:
                callback(exc)

    def stop(self) -> None:
        """A stop was asked for: every ticket asked for from now on, and every one waiting for
        the ledger, is refused at once (a hung ledger holds no sender past a Ctrl-C); what the
        ledger grants later is released."""
        self._stopped = True
        for _, granted in self._asks:
            if not granted.done():
                granted.set_result(self._stopping_grant())
        for held in self._held.values():
            if held.filling is not None:
                held.filling.set()

    def _stopping_grant(self) -> Grant:
        now = self._clock()
        return Grant(ids=(), expires_s=now, next_s=now, reason="stopping")

    # -- tickets ---------------------------------------------------------------------------------

    async def ticket(self, account: str) -> Ticket | Refusal:
        """A ticket for one send of ``account`` now, or when to ask again."""
        if self._failure is not None:
            raise self._failure
        if self._stopped:
            return Refusal(next_s=self._clock(), reason="stopping")
        self._register_again_if_due()
        subject = self.subject(account)
        mine, key = self._held.get(subject), self._held.get(self._key)
        # both looked at again after any wait, and taken with none between: while it waited
        # for the key's batch, the account's may have gone stale or to another ticket
        while mine is None or key is None or not (self._usable(mine) and self._usable(key)):
            for name in (subject, self._key):
                refusal = await self._ensure(name)
                if refusal is not None:
                    return refusal
            mine, key = self._held[subject], self._held[self._key]
        ticket = Ticket(pool=self, ids=(mine.ids.popleft()[0], key.ids.popleft()[0]))
        self._prefetch(subject, mine)
        self._prefetch(self._key, key)
        return ticket

    def _prefetch(self, subject: str, held: _Held) -> None:
        """Reserve the next batch in the background once a quarter of this one is left, so no
        send waits for the ledger (the spare reservations count as "now": the safe side)."""
        want = self._want(subject)
        if want >= 4 and len(held.ids) <= want // 4 and held.refill is None:
            held.refill = asyncio.get_running_loop().create_task(self._refill(subject, held))

    async def _refill(self, subject: str, held: _Held) -> None:
        try:
            if held.filling is None and len(held.ids) <= self._want(subject) // 4:
                await self._fill(subject, held)
        except LedgerError as exc:  # kept, and raised by the next ticket
            self._fail(exc)
        finally:
            held.refill = None

    async def _ensure(self, subject: str) -> Refusal | None:
        held = self._held.setdefault(subject, _Held())
        while not self._usable(held):
            if self._stopped:
                return Refusal(next_s=self._clock(), reason="stopping")
            if held.filling is not None:
                await held.filling.wait()
                continue
            grant = await self._fill(subject, held)
            if not grant.ids:
                return Refusal(next_s=grant.next_s or self._clock(),
                               reason=grant.reason or "no room")
        return None

    async def _fill(self, subject: str, held: _Held) -> Grant:
        """Reserve ``subject``'s next batch into ``held``; the senders that find none left
        meanwhile wait for this one and wake together. (With a lock, the API key's senders
        woke one per turn of the event loop whenever its batch ran out: with 2,000 senders a
        ticket took 0.1-0.2 s, all of it with the concurrency slot held.)"""
        filling = held.filling = asyncio.Event()
        try:
            grant = await self._reserve(subject)
            held.ids.extend((i, grant.expires_s) for i in grant.ids)
            return grant
        finally:
            held.filling = None
            filling.set()

    async def _reserve(self, subject: str) -> Grant:
        """Reserve a batch of ``subject`` now, in one transaction with every other reservation
        asked for meanwhile (by other senders of this campaign): one commit for them all."""
        granted: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        if self._failure is not None:  # no second wait for a ledger that failed
            raise self._failure
        if self._stopped:
            return self._stopping_grant()
        self._asks.append((subject, granted))
        if self._reserver is None or self._reserver.done():
            self._reserver = asyncio.get_running_loop().create_task(self._reserve_loop())
        return await granted

    async def _reserve_loop(self) -> None:
        # the asks that came while a group was in the ledger form the next group
        asks: list[tuple[str, asyncio.Future[Grant]]] = []
        try:
            while self._asks and self._failure is None:
                # a group at most: its grants let that many sends go at once, and a burst
                # of them waits in the provider's queue, to be stamped later than it left
                asks, self._asks = self._asks[:GROUP], self._asks[GROUP:]
                await self._reserve_group(asks)
        finally:
            # whatever ended this task early (an error other than the ledger's, a cancel), no
            # asker waits for ever: a sender waits for its ticket with its concurrency slot
            # held, and with the key's batch under way every sender waits for this one
            stopped = [granted for _, granted in [*asks, *self._asks] if not granted.done()]
            self._asks = []
            if stopped:
                self._fail(LedgerError(
                    f"{self.ledger.location}: the account ledger's reservations stopped"))
                assert self._failure is not None
                for granted in stopped:
                    granted.set_exception(self._failure)

    async def _reserve_group(self, asks: list[tuple[str, asyncio.Future[Grant]]]) -> None:
        try:
            grants = await self.ledger.reserve_many(
                [Ask(subject=s, rates=self._rates[s], want=self._want(s)) for s, _ in asks],
                holder=self._holder, now_s=self._clock(), lease_s=self._lease_s)
        except LedgerError as exc:  # each asker raises it, and every later ticket
            self._fail(exc)
            for _, granted in asks:
                if not granted.done():
                    granted.set_exception(exc)
            return
        for (_, granted), grant in zip(asks, grants, strict=True):
            if granted.done():  # its asker was cancelled: nothing will send on these
                self.settle_later(released=list(grant.ids))
            else:
                granted.set_result(grant)

    def _usable(self, held: _Held) -> bool:
        """True if the oldest reservation held has half a lease left at least (the intent's
        commit and the request fit in that); older ones are released: never used."""
        stale_s = self._clock() + self._lease_s / 2
        while held.ids and held.ids[0][1] <= stale_s:
            self.settle_later(released=[held.ids.popleft()[0]])
        return bool(held.ids)

    def _want(self, subject: str) -> int:
        want = self._wants.get(subject)
        if want is None:
            want = self._wants[subject] = batch_size(self._rates[subject], self._lease_s)
        return want

    # -- rests and health ------------------------------------------------------------------------

    def rest(self, account: str | None, *, until_s: float, reason: str) -> None:
        """Rest ``account`` (``None``: the API key) for every campaign (written in the
        background)."""
        subject, now = self.subject(account), self._clock()
        self._chore(lambda: self.ledger.set_rest(subject, until_s=until_s, reason=reason,
                                                 now_s=now))

    async def rest_now(self, account: str | None, *, until_s: float, reason: str) -> None:
        """:meth:`rest`, written before it returns."""
        await self.ledger.set_rest(self.subject(account), until_s=until_s, reason=reason,
                                   now_s=self._clock())

    def unhealthy(self, account: str, reason: str) -> None:
        """A provider said ``account`` cannot send (suspended, needs re-auth)."""
        self._unhealthy.add(account)
        subject, now = self.subject(account), self._clock()
        self._chore(lambda: self.ledger.set_health(subject, state="out", reason=reason,
                                                   now_s=now))

    def healthy(self, account: str) -> None:
        """``account`` sent: clear what the ledger said against it, if anything."""
        if account in self._unhealthy:
            self._unhealthy.discard(account)
            subject, now = self.subject(account), self._clock()
            self._chore(lambda: self.ledger.set_health(subject, state=None, reason=None,
                                                       now_s=now))

    # -- the background writer -------------------------------------------------------------------

    def settle_later(self, *, sent: Sequence[tuple[int, float]] = (),
                     released: Sequence[int] = ()) -> None:
        self._sent.extend(sent)
        self._released.extend(released)
        self._wake()

    def _chore(self, chore: Callable[[], Awaitable[None]]) -> None:
        self._chores.append(chore)
        self._wake()

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        while self._sent or self._released or self._chores:
            # gather a few milliseconds' settlements into one transaction: until it is written a
            # send counts as "now" for everyone else, the safe side
            await asyncio.sleep(SETTLE_EVERY_S)
            sent, released, chores = self._sent, self._released, self._chores
            self._sent, self._released, self._chores = [], [], []
            try:
                if sent or released:
                    await self.ledger.settle(sent, released)
                for chore in chores:
                    await chore()
            except LedgerError as exc:  # kept, and raised by the next ticket
                self._fail(exc)
                return

    async def flush(self) -> None:
        """Wait until every settlement, rest and health record is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Release the reservations taken ahead and not used, and write everything (the ledger
        stays open: its opener closes it).

        :raises LedgerError: the ledger failed, now or before (the first failure)."""
        if self._failure is not None or self._stopped:
            # what is under way may wait for a ledger that does not answer: its reservations
            # count until their lease ends, the safe side
            for task in [h.refill for h in self._held.values()] + [self._reserver]:
                if task is not None:
                    task.cancel()
        for held in self._held.values():
            if held.refill is not None:
                await _ended(held.refill)
        if self._reserver is not None:
            await _ended(self._reserver)  # its grants are in held, or released
        for held in self._held.values():
            self.settle_later(released=[i for i, _ in held.ids])
            held.ids.clear()
        if self._failure is None:
            await self.flush()
        elif self._writer is not None:
            self._writer.cancel()
            await _ended(self._writer)
        if self._failure is not None:
            raise self._failure


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for ``task`` to end; raise its error, if it had one other than a cancel (the
    ledger's errors are kept as the pool's failure, not raised by it)."""
    await asyncio.wait([task])
    error = None if task.cancelled() else task.exception()
    if error is not None:
        raise error
