"""The send engine: planned rows in, one durable outcome per row out, exactly once in effect.

Per sender a loop reads its due rows from the checkpoint a page at a time, resolves usernames,
takes a rate slot from the sender's and the API key's limiters together, commits the row's
intent (state ``sending``) and only then lets the request leave. Outcomes are committed after.
A send whose outcome is unknown is never repeated blindly: Xquik rows are replayed with the
same idempotency key, GetXAPI rows are looked up in the conversation first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bulkdm import checkpoint as cp
from bulkdm.backoff import retry_delay_s
from bulkdm.binding import UnboundRows
from bulkdm.checkpoint import Checkpoint, Expect, Finish, Write
from bulkdm.fanout import each
from bulkdm.keys import idempotency_key, idempotency_keys
from bulkdm.ledger import OPTED_OUT_MESSAGE, AccountPool, Refusal, Ticket, opted_out_entry
from bulkdm.outcomes import Action, Outcome, Reconciliation
from bulkdm.policies.breakers import REFUSAL_CODES
from bulkdm.policies.jitter import Draw, Jitter
from bulkdm.policies.warmup import ramp_wait_until_s
from bulkdm.policies.windows import SendWindow
from bulkdm.providers.base import DmRequest, Provider, SenderAuth
from bulkdm.ratelimit import Gate, WindowLimiter
from bulkdm.rates import Rate
from bulkdm.report import billed_cost, spend_cap_note
from bulkdm.rows import RowRecord, RowState
from bulkdm.settings import DmNotAllowedPolicy, ProviderName, SenderSettings, Settings
from bulkdm.timestamps import iso_utc as _iso
from bulkdm.waits import wait_reason

__all__ = ["Engine", "FinishReason", "RunReport", "SenderState"]

_PAGE: Final = 256
_RESOLVE_CONCURRENCY: Final = 8
#: rows checked against the shared opt-outs at once, just before their sends (at a slow rate
#: most are checked again when their slots come: _OPT_OUT_FRESH_S)
_OPT_OUT_AHEAD: Final = 128
#: ledger calls at once when a run starts (each account's history, rest, first send, health:
#: one account after another, 10,000 took seconds)
_RESTORE_AT_ONCE: Final = 64
#: a row whose check is older than this when its slot comes is checked again: a slow sender
#: waits minutes for each slot, and the opt-outs of that time must hold too
_OPT_OUT_FRESH_S: Final = 5.0
#: codes that say "not performed, the key's budget is spent": not the row's fault
_THROTTLE_CODES: Final = frozenset({"rate_limit_exceeded", "x_rate_limited", "http_429"})
#: a send in the checkpoint and one in the ledger this close are the same send (both record the
#: moment its request left; an in-flight one is counted from the restart in both)
_SAME_SEND_S: Final = 1.0
#: the same-error breaker's one code for every passing error (5xx, timeouts, cut connections)
_OUTAGE: Final = "\0outage"
#: a wait for a slot longer than this is one sleep (stop ends it), not a poll every second
_LONG_WAIT_S: Final = 60.0
#: a slot this close to its send window's end is not taken: the request must leave inside it
_WINDOW_MARGIN_S: Final = 1.0
_OUTSIDE_WINDOW: Final = "outside its send window"
_WARMING_UP: Final = "warm-up"
#: what the spend cap counts: DM attempts, media uploads, username lookups, and the reply
#: reads' history pages (GetXAPI's price) and the messages they returned (Xquik's)
_BILLED: Final = ("dms", "uploads", "lookups", "read_pages", "read_results")
_DAY_S: Final = 86400.0
#: the longest single sleep of a sender waiting for its rate slot (the Gate's default is 1 s).
#: A slot only ever moves later while its sender waits (another send, a rest, a send's real
#: time), and the waiter looks again when it wakes, so a longer sleep is never early; and a stop
#: ends it at once. With 1 s, each of 10,000 senders at 1/15m woke every second to build a task
#: group and sleep again: 0.9 of a core while nothing was due (benchmarks/bench_pool.py).
_GATE_MAX_WAIT_S: Final = 60.0
#: claims under way per request in flight (see ``Engine._slots``)
_CLAIMS_PER_REQUEST: Final = 2


class FinishReason(StrEnum):
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    STOPPED_BY_PROVIDER = "stopped_by_provider"
    #: the next billed call would have crossed ``max_spend`` / ``max_credits``
    STOPPED_AT_SPEND_CAP = "stopped_at_spend_cap"
    #: one error on most of the campaign's last sends (the same-error breaker)
    STOPPED_BY_BREAKER = "stopped_by_breaker"
    #: rows are left that only a resting or unusable sender could send
    PAUSED = "paused"


class SenderState(StrEnum):
    READY = "ready"
    RESTING = "resting"
    OUT = "out"
    DONE = "done"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunReport:
    finish_reason: FinishReason
    detail: str | None
    sent_this_run: int
    #: the same-error breaker stopped the run on a passing error (a 5xx, a timeout, a refused
    #: or cut connection): an outage, which a later run may find over
    outage: bool = False


class _Sender:
    """One sender account's state for this run (its limiter and whether it can send)."""

    def __init__(self, auth: SenderAuth, limiter: WindowLimiter,
                 jitter: Jitter | None = None, config: SenderSettings | None = None,
                 window: SendWindow | None = None) -> None:
        self.auth = auth
        self.limiter = limiter
        #: its settings and send window, found once (asked at every slot; a pool is large)
        self.config = config
        self.window = window
        #: human pacing (None: none), and the draw for the gap after its last slot
        self.jitter = jitter
        self.jitter_u = 0.0
        self.state = SenderState.READY
        self.note: str | None = None
        #: the note of the last failed lookup, upload or read, cleared by a success
        self.call_note: str | None = None
        self.sent = 0
        self.inflight = 0
        #: when a sender resting past the run may send again (its rest, cap or next due row)
        self.free_at_s: float | None = None
        #: the shared ledger's reservations for the slot just taken (None: no ledger)
        self.ticket: Ticket | None = None
        #: the ledger's last refusal (another campaign's turn, or its sends filling a window)
        #: and until when: shown while it holds
        self.pool_note: str | None = None
        self.pool_until_s = 0.0
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def account(self) -> str:
        return self.auth.account

    @property
    def usable(self) -> bool:
        return self.state is not SenderState.OUT

    def call_succeeded(self) -> None:
        if self.note is not None and self.note == self.call_note:
            self.note = None
        self.call_note = None

    def started(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def ended(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()


class _SentAt:
    """When a send's request left: its rate slot is counted from then, not from when it was
    taken. The intent's commit comes in between, and on Python 3.11 aiohttp writes the body in
    a task of its own, after whatever else is ready on the loop: both vary with load."""

    def __init__(self, taken_s: float, limiters: tuple[WindowLimiter, ...],
                 ticket: Ticket | None = None) -> None:
        self.at_s = taken_s
        self._limiters = limiters
        self._ticket = ticket
        self._left = False

    def move(self, now_s: float) -> None:
        for limiter in self._limiters:
            limiter.shift(self.at_s, now_s)  # no longer pending, and counted from now
        self.at_s = max(self.at_s, now_s)
        self._left = True
        if self._ticket is not None:
            self._ticket.sent(now_s)

    def end(self) -> None:
        """The send is over: a slot whose request never left counts from when it was taken."""
        if not self._left:
            for limiter in self._limiters:
                limiter.settle(self.at_s)
            self._left = True


class Engine:
    """Sends every due row of a planned checkpoint; :meth:`run` returns why it finished."""

    def __init__(
        self,
        *,
        settings: Settings,
        checkpoint: Checkpoint,
        provider: Provider,
        auths: Mapping[str, SenderAuth],
        stop: asyncio.Event,
        clock: Callable[[], float] = time.time,
        gate: Gate | None = None,
        pool: AccountPool | None = None,
        draw: Draw | None = None,
        probe: bool = False,
    ) -> None:
        """``probe``: the last run stopped on an outage. One send at a time until one is
        answered: a success opens the run's full concurrency, a passing error stops it again
        at once (one row's attempt spent, not a sample's)."""
        self._settings = settings
        #: the campaign's key function (its part of the hash made once, not per row)
        self._keys = idempotency_keys(settings.campaign.key_scope)
        #: the account pool's shared ledger: every send reserves its slot there first
        self._pool = pool
        self._cp = checkpoint
        self._provider = provider
        self._stop = stop
        self._clock = clock
        self._gate = gate or Gate(clock=clock, max_wait_s=_GATE_MAX_WAIT_S)
        #: claims under way: a rate slot taken, the intent committing, the request waiting for
        #: the wire or on it. Twice the requests in flight, so that a commit's wait is not time
        #: a request slot stands idle (rate slots are pending until their request leaves:
        #: ratelimit.py)
        self._probing = probe
        # while probing, one row is claimed and sent at a time
        self._slots = asyncio.Semaphore(
            1 if probe else _CLAIMS_PER_REQUEST * settings.run.concurrency)
        #: requests in flight: ``[run] concurrency`` (one while probing)
        self._wire = asyncio.Semaphore(1 if probe else settings.run.concurrency)
        self._key = self._limiter(settings.provider.rates)
        self._senders = {
            a: _Sender(auths[a], self._limiter(s.windows),
                       settings.sender_jitter(s), s, s.send_window or settings.campaign.send_window)
            for a, s in ((s.account, s) for s in settings.senders)}
        #: the jitter's draws (injected by tests); only pacing, so not a secure generator
        self._draw: Draw = draw or random.Random().uniform
        for sender in self._senders.values():
            if sender.jitter is not None:
                sender.jitter_u = sender.jitter.draw(self._draw)
        self._tasks: set[asyncio.Task[None]] = set()
        #: rows bound to no account yet: each goes to the first sender with a slot
        self._unbound = UnboundRows(checkpoint, clock)
        self._task_errors: list[BaseException] = []
        self._halt: str | None = None
        #: why the run halted, where a policy halted it (else the provider did)
        self._halted_by: FinishReason | None = None
        #: the breakers' samples: the campaign's last error codes (None: sent), and per account
        #: whether each of its last sends was refused
        self._recent_codes: list[str | None] = []
        #: beside it, the code of each passing error (one that came with a retry or a check),
        #: and whether the same-error breaker tripped on them (an outage)
        self._recent_passing: list[str | None] = []
        self._outage = False
        #: since when reads are refused as throttled with none answered (None: one was)
        self._reads_refused_since_s: float | None = None
        self._refusals: dict[str, list[bool]] = {}
        #: what the campaign has been billed for (DM attempts, uploads, lookups), from the
        #: checkpoint at the start, counted before each call in this run
        self._spent: Counter[str] = Counter()
        #: each account's first send in the ledger (its warm-up's day 0), read when the run starts
        self._first_sends: dict[str, float] = {}
        #: per account, the ledger's reservations held ahead at the start (charged at
        #: ``_restored_at_s``): in the windows while leased, but never sends for the warm-up
        self._never_sent: dict[str, int] = {}
        self._restored_at_s = 0.0
        #: each account's warm-up cap in the shared ledger (its daily cap until one is shared)
        self._ramp_shared: dict[str, int] = {}
        #: when each row about to be sent was last checked against the shared opt-outs
        self._screened_s: dict[int, float] = {}
        #: a sender resting longer than this ends its part of the run (the rows wait for a
        #: resume); ``--until-done`` waits however long it takes
        self._patience_s = (float("inf") if settings.run.until_done
                            else settings.run.max_rest_wait_s)
        # a replay under the same key (Xquik) is safe at once; a lookup (GetXAPI) waits for
        # anything the provider may still deliver
        self._settle_after_s = (settings.retry.settle_after_s
                                if settings.provider.name is ProviderName.GETXAPI else 0.0)
        #: failed lookups, uploads and reads per row id in this run (their retry budget)
        self._call_failures: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()
        self.recent_sends_s: list[float] = []
        # a write that cannot be made durable (disk full, read-only file) stops the run as a
        # Ctrl-C does: no new send starts, the sends in flight end, then run() raises the error
        checkpoint.on_failure(lambda _error: stop.set())

    # -- public views ------------------------------------------------------------------------

    @property
    def senders(self) -> Sequence[_Sender]:
        return list(self._senders.values())

    @property
    def first_sends(self) -> Mapping[str, float]:
        """Each account's first send in the ledger (its warm-up's day 0), as far as known."""
        return self._first_sends

    @property
    def api_key_limiter(self) -> WindowLimiter:
        """The API key's budget, shared by every sender (read it; the engine records in it)."""
        return self._key

    def next_slot_in_s(self, account: str) -> float:
        """Seconds until ``account`` may send: its limiter's, the key's and its jitter's wait."""
        sender, now = self._senders[account], self._clock()
        return max(sender.limiter.next_allowed_s(now), self._key.next_allowed_s(now),
                   self._jitter_due_s(sender) or now) - now

    def jitter_due_s(self, account: str) -> float | None:
        """When ``account``'s jittered gap lets its next send leave (None: no jitter)."""
        return self._jitter_due_s(self._senders[account])

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> RunReport:
        """Send until every row is final, a stop is asked for, or only waiting rows remain."""
        await self._restore()
        await self._resolve_opt_out_names()
        waker = asyncio.create_task(self._wake_slot_waiters())
        try:
            return await self._rounds()
        finally:
            waker.cancel()

    async def _wake_slot_waiters(self) -> None:
        await self._stop.wait()
        # senders waiting for a concurrency slot see the stop when they get one; no new send
        # starts after a stop, so the extra permits are never used for one
        for _ in range(_CLAIMS_PER_REQUEST * self._settings.run.concurrency):
            self._slots.release()

    async def _rounds(self) -> RunReport:
        sent_before = self.counts[RowState.SENT]
        for _ in range(10_000):  # a round per wave of rows moved between senders
            ready = [s for s in self._senders.values() if s.state is SenderState.READY]
            ended = await asyncio.gather(*(self._sender_loop(s) for s in ready),
                                         return_exceptions=True)
            await self._drain()
            _raise_first(ended)
            if self._stop.is_set() or not await self._work_left():
                break
        await self._drain()
        if not self._stop.is_set():  # ended by itself: paused, or every row done
            await self._submit(self._paused_waits())
        await self._cp.flush()
        # the counts as the checkpoint holds them: a username resolved to a recipient another
        # line has skipped its row in SQL, where no write says so (the summary said "pending")
        self.counts = Counter(await self._cp.state_counts())
        reason = self._finish_reason()
        detail = self._halt or self._waiting_note()
        if reason is FinishReason.PAUSED:
            detail = "; ".join(filter(None, [detail, self._free_again_note()]))
        return RunReport(finish_reason=reason, detail=detail or None,
                         sent_this_run=self.counts[RowState.SENT] - sent_before,
                         outage=self._outage and reason is FinishReason.STOPPED_BY_BREAKER)

    async def _restore(self) -> None:
        now = self._clock()
        await self._submit([cp.unsettle_in_flight(settle_after_s=self._settle_after_s),
                            cp.clear_sender_waits()])
        self.counts.update(await self._cp.state_counts())
        self._spent.update(dict(zip(_BILLED, await self._cp.spend_counts(), strict=True)))
        if self._pool is not None:
            self._restored_at_s = now
            await self._restore_from_pool(self._pool, now)
        else:
            for account, sender in self._senders.items():
                sender.limiter.charge(await self._history(account, sender.limiter, now))
            self._key.charge(await self._history(None, self._key, now))
            key_rest_s = await self._cp.key_rest_until_s()  # a Retry-After it answered
            if key_rest_s is not None and key_rest_s > now:
                self._key.rest_until(key_rest_s)
        by_handle = {account.casefold(): sender for account, sender in self._senders.items()}
        for record in await self._cp.sender_records():
            sender_run = by_handle.get(record.account.casefold())  # the settings may change case
            if sender_run is not None:
                await self._submit(self._apply_sender_record(sender_run, record, now))

    async def _restore_from_pool(self, pool: AccountPool, now: float) -> None:
        """Every campaign's windows and sends of each account and of the key, from the ledger
        (this campaign's are among them), and the rests any campaign recorded."""
        self._key = self._limiter(pool.rates(None))
        self._key.charge(_merged(await pool.history(None, now),
                                 await self._history(None, self._key, now)))
        rest = await pool.rest_of(None, now)  # a Retry-After on the key, any campaign's
        if rest is not None:
            self._key.rest_until(rest.until_s)
        await each(self._senders.values(), lambda sender: self._restore_sender(pool, sender, now),
                   at_once=_RESTORE_AT_ONCE)

    async def _restore_sender(self, pool: AccountPool, sender: _Sender, now: float) -> None:
        account = sender.account
        sender.limiter = self._limiter(pool.rates(account))
        history = await pool.history(account, now)
        # this campaign's own sends, from the checkpoint, that the ledger does not hold (a
        # ledger deleted, moved, or another file for this run): they count all the same
        sender.limiter.charge(_merged(history, await self._history(account, sender.limiter, now)))
        # reservations a killed run held ahead count in the windows until their lease ends
        # (charged at now); they were never sent, so its warm-up does not count them
        self._never_sent[account] = history.count(now)
        rest = await pool.rest_of(account, now)
        if rest is not None:
            sender.limiter.rest_until(rest.until_s)
            sender.note = f"{rest.reason} until {_iso(rest.until_s)}"
        first_s = await pool.first_send_of(account)
        if first_s is not None:
            self._first_sends[account] = first_s
        health = await pool.health_of(account)
        if health is not None and sender.note is None:
            # recorded by an earlier run: tried again, and cleared by the next delivery
            sender.note = f"{health.reason} as of {_iso(health.at_s)}; trying again"

    async def _history(self, account: str | None, limiter: WindowLimiter, now: float) -> list[float]:
        since_s = now - max((limiter.window_s(r) for r in limiter.rates), default=0.0)
        cap = max((r.count for r in limiter.rates), default=0)
        attempts = await self._cp.attempt_times(account, since_s=since_s, limit=cap)
        # an attempt that was in flight when the run stopped may have left at any time up to
        # now: count it from now, which can only make the windows stricter
        return [t if settled else now for t, settled in attempts]

    def _apply_sender_record(
        self, sender: _Sender, record: cp.SenderRecord, now_s: float
    ) -> list[Write]:
        if record.state == SenderState.OUT:
            # health is checked again on every run: an account fixed since (re-authorised)
            # sends, settling its own unknown rows first; one still broken is dropped again by
            # its first call
            sender.note = sender.call_note = f"out in an earlier run ({record.reason}); trying again"
        if record.state in (SenderState.OUT, cp.REMOVED):  # removed: named again, it settles
            return [cp.set_sender(account=sender.account, state=SenderState.READY, until_s=None,
                                  reason=None)]
        if record.until_s is not None and record.until_s > now_s:
            sender.limiter.rest_until(record.until_s)
            sender.note = f"{record.reason} until {_iso(record.until_s)}"
        return []

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()  # retrieved here, raised by _drain
        if error is not None:
            self._task_errors.append(error)

    async def _drain(self) -> None:
        # every task ends before an error of one is raised: none is left running or unretrieved
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        _raise_first(self._task_errors)

    async def _work_left(self) -> bool:
        """Wake senders that finished before rows were moved to them; True if any woke."""
        woke = False
        unbound = await self._unbound.next_due_s() is not None
        for sender in self._senders.values():
            due_s = await self._cp.next_due_s(sender.account)
            if sender.state is SenderState.DONE and (due_s is not None or unbound):
                sender.state = SenderState.READY
                woke = True
        return woke

    def _finish_reason(self) -> FinishReason:
        if self._halt is not None:
            return self._halted_by or FinishReason.STOPPED_BY_PROVIDER
        if self._stop.is_set():
            return FinishReason.INTERRUPTED
        left = self.counts[RowState.PENDING] + self.counts[RowState.UNKNOWN]
        return FinishReason.PAUSED if left else FinishReason.COMPLETED

    def _free_again_note(self) -> str | None:
        """When the first of the accounts that rest past the run may send again."""
        free = [(s.free_at_s, s.account) for s in self._senders.values()
                if s.usable and s.free_at_s is not None]
        if not free:
            return None
        at_s, account = min(free)
        return f"nothing can be sent before {_iso(at_s)}, when {account} is free again"

    # what each account resting past the run waits for, until when: status shows it once the
    # run has paused (it read "next now"); the next run forgets it (_restore)
    def _paused_waits(self) -> list[Write]:
        now = self._clock()
        writes = []
        for sender in self._senders.values():
            if not sender.usable or sender.free_at_s is None or sender.free_at_s <= now:
                continue
            why = wait_reason(sender.limiter, self._key, now)
            reason = (why.text(now, clock=_iso) if why and why.until_s >= sender.free_at_s
                      else sender.note or "its windows are full")
            writes.append(cp.set_sender_wait(account=sender.account, until_s=sender.free_at_s,
                                             reason=reason))
        return writes

    def _waiting_note(self) -> str | None:
        notes = [f"{s.account}: {s.note}" for s in self._senders.values()
                 if s.note and s.state is not SenderState.READY]
        return "; ".join(notes) or None

    # -- one sender ---------------------------------------------------------------------------

    async def _sender_loop(self, sender: _Sender) -> None:
        await self._send_rows(sender)
        if sender.state is SenderState.RESTING:
            # resting past the run: the rows its claims bound go to the other accounts
            await self._submit([cp.release_rows(sender=sender.account)])

    async def _send_rows(self, sender: _Sender) -> None:
        """The sender's own rows (pinned, or bound by its claims) first, then unbound ones."""
        after_id = 0
        while not self._stop.is_set() and sender.state is SenderState.READY:
            rows = await self._cp.due_rows(
                sender.account, after_id=after_id, now_s=self._clock(), limit=_PAGE
            )
            if rows:
                after_id = rows[-1].id
                await self._work_page(rows, sender)
                continue
            if await self._work_unbound(sender):
                continue  # a page of them at most, then its own rows again (retries due)
            await sender.idle.wait()
            due_s = _earliest(await self._cp.next_due_s(sender.account),
                              await self._unbound.next_due_s())
            if due_s is None:
                sender.state = SenderState.DONE
                return
            after_id = 0
            if not await self._wait_until(due_s, sender):
                return

    async def _work_unbound(self, sender: _Sender) -> bool:
        """Claim unbound due rows for ``sender`` one at a time, as its slots come (late
        binding), up to a page; False when none was due."""
        taken = 0
        while taken < _PAGE and await self._rested(sender):
            row = await self._unbound.take(lambda rows: self._resolve_page(rows, sender),
                                           screen=self._skip_opted_out)
            if row is None:
                break
            taken += 1
            if await self._work_row(row, sender, unbound=True) is None:
                self._unbound.give_back(row.id)  # not claimed: another sender may take it
        return taken > 0

    async def _rested(self, sender: _Sender) -> bool:
        """False when ``sender`` may take no row now: stopped, out, or resting past the run (a
        lookup or upload for an unbound row was told to rest, and the row stays unbound for
        the others). A shorter rest is waited out here."""
        if self._stop.is_set() or sender.state is not SenderState.READY:
            return False
        now = self._clock()
        if not sender.limiter.is_resting(now):
            return True
        until_s = sender.limiter.next_allowed_s(now)
        if until_s - now > self._patience_s:
            sender.state, sender.free_at_s = SenderState.RESTING, until_s
            return False
        await self._sleep(until_s - now)
        return not self._stop.is_set()

    async def _wait_until(self, due_s: float, sender: _Sender) -> bool:
        """Sleep until ``due_s`` unless stopped; False ends this sender's part of the run."""
        wait_s = due_s - self._clock()
        if wait_s > self._patience_s:
            sender.state, sender.free_at_s = SenderState.RESTING, due_s
            return False
        if wait_s > 0:
            # say why a sender with rows left sends nothing (a retry's delay, or unknown
            # outcomes settling), unless it already says something more precise
            waiting = f"next rows due at {_iso(due_s)} (retries, unknown outcomes settling)"
            if sender.note is None:
                sender.note = waiting
            # rows another sender leaves (it rests, or left) wake this one early
            await self._sleep(wait_s, self._unbound.wait_for_more())
            if sender.note == waiting:
                sender.note = None
        return not self._stop.is_set()

    async def _sleep(self, seconds: float, *wake: Coroutine[object, object, None]) -> None:
        """``seconds``, or less if a stop comes or ``wake`` ends first."""
        if not wake:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))
            return
        waits = [asyncio.ensure_future(w) for w in (self._stop.wait(), *wake)]
        try:
            await asyncio.wait(waits, timeout=max(0.0, seconds),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _work_page(self, rows: list[RowRecord], sender: _Sender) -> None:
        rows = await self._resolve_page(rows, sender)
        try:
            for start in range(0, len(rows), _OPT_OUT_AHEAD):
                for row in await self._skip_opted_out(rows[start:start + _OPT_OUT_AHEAD]):
                    if self._stop.is_set() or sender.state is not SenderState.READY:
                        return
                    await self._work_row(row, sender)
        finally:
            for row in rows:  # checked and left (the sender stopped): no entry stays behind
                self._screened_s.pop(row.id, None)

    async def _work_row(self, row: RowRecord, sender: _Sender, *,
                        unbound: bool = False) -> asyncio.Task[None] | None:
        """Send ``row`` from ``sender`` if it still may be; the send's task once claimed.
        ``unbound``: the row came from the unbound cursor, told when its send ends."""
        if row.state is RowState.UNKNOWN and not await self._settle_unknown(row, sender):
            return None
        if row.recipient_id is None or row.state not in (RowState.PENDING, RowState.UNKNOWN):
            return None
        media_id = await self._media_id(row, sender) if row.media else None
        if row.media and media_id is None:
            return None
        at_s = await self._take_slot(sender)
        ticket, sender.ticket = sender.ticket, None
        if at_s is None:
            if not self._stop.is_set() and sender.state is SenderState.READY:
                next_s = max(sender.limiter.next_allowed_s(self._clock()),
                             self._key.next_allowed_s(self._clock()),
                             self._jitter_due_s(sender) or 0.0)
                # the ledger's refusal (all campaigns) may have said later than this run's limiters
                sender.state = SenderState.RESTING
                sender.free_at_s = max(next_s, sender.free_at_s or next_s)
                sender.note = sender.note or f"next slot at {_iso(next_s)} (rate or daily cap)"
            return None
        if sender.state is not SenderState.READY and row.state is RowState.PENDING:
            # dropped while this loop waited for its slot: its pending rows are being moved to
            # the others, and a claim now could be sent after they were (an unknown row is
            # still replayed under its own key: that settles it, _settle_rows_of)
            self._give_back(sender, at_s, ticket)
            return None
        wanted = False
        try:
            wanted = await self._screen_again(row)
        finally:
            if not wanted:  # opted out meanwhile (or the check failed): nothing is sent
                self._give_back(sender, at_s, ticket)
        if not wanted:
            return None
        attempt = row.attempts + 1
        # an unbound row's key is made now, for the account that claims it; a bound row's
        # stays what its first attempt sent (frozen with the claim)
        key = (self._key_for(row, sender.account) if row.sender is None
               else (row.idempotency_key or "").partition("-r")[0])
        if row.key_rotation:
            key = f"{key}-r{row.key_rotation}"
        auth = sender.auth
        if row.attempts:  # a key sent before names its account as its first request did
            spelled = await self._cp.sent_as(row.id, key)
            if spelled is not None and spelled != auth.account:
                auth = replace(auth, account=spelled)
        # conditional on the row as this loop read it: a row moved meanwhile (its sender dropped
        # while this loop waited for a slot) is refused, and a refused claim is not sent
        intent = cp.claim(row_id=row.id, attempt=attempt, sender=sender.account, key=key,
                          key_rotation=row.key_rotation, at_s=at_s, expect=_expect(row))
        sender.started()
        # what the send and its outcome read of the row (not a dataclasses.replace: a send
        # builds one record, not three copies)
        claimed = RowRecord(
            id=row.id, line=row.line, state=RowState.SENDING, recipient_id=row.recipient_id,
            recipient_username=row.recipient_username, text=row.text, sender=sender.account,
            external_id=row.external_id, media=row.media, consent=row.consent,
            idempotency_key=key, attempts=attempt, text_sha256=row.text_sha256,
            key_rotation=row.key_rotation, claimed_at_s=at_s,
            bound_by_claim=row.bound_by_claim or row.sender is None,
        )
        # the sender goes on to its next row while this one's intent commits (grouped with
        # others); the request itself waits for that commit
        task = asyncio.create_task(self._send(claimed, sender, auth, media_id, intent,
                                              replay=row.state is RowState.UNKNOWN,
                                              ticket=ticket, unbound=unbound))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _take_slot(self, sender: _Sender) -> float | None:
        """A concurrency slot and a rate slot at one instant (None: stopped, or resting past
        the run). The rate slot is later moved to when the request reaches the socket.

        With the account pool, the slot is also reserved in the shared ledger (``sender.ticket``),
        for the account and the key, against every campaign's sends; when the ledger has no room
        the slot is given back and taken again once it may have."""
        while True:
            await self._sleep_through_long_wait(sender)
            at_s = await self._gate.acquire(sender.limiter, self._key, stop=self._stop,
                                            slot=self._slots, pending=True,
                                            deadline_s=self._clock() + self._patience_s,
                                            not_before_s=self._jitter_due_s(sender))
            if at_s is None:
                return None
            if self._outside_window(sender, at_s):
                continue
            over, cap = self._over_ramp(sender, at_s)
            if over:
                continue
            if not self._may_spend(dms=1):
                self._give_back(sender, at_s)
                return None
            if self._pool is None:
                return self._drew(sender, at_s)
            await self._share_ramp(self._pool, sender, cap)
            answer = await self._pool.ticket(sender.account)
            if isinstance(answer, Ticket):
                sender.ticket, sender.pool_until_s = answer, 0.0
                return self._drew(sender, at_s)
            self._give_back(sender, at_s)
            if not await self._wait_for_pool(sender, answer):
                return None

    def _limiter(self, rates: Sequence[Rate]) -> WindowLimiter:
        return WindowLimiter(rates, least_guard_s=self._settings.run.rate_guard_s, smooth=True)

    def _give_back(self, sender: _Sender, at_s: float, ticket: Ticket | None = None) -> None:
        """A slot taken and not used: its rate slots, its claim slot and its reservations in
        the shared ledger (``ticket``) are free again."""
        sender.limiter.forget(at_s)
        self._key.forget(at_s)
        self._slots.release()
        if ticket is not None:
            ticket.release()

    def _jitter_due_s(self, sender: _Sender) -> float | None:
        """With jitter, when the sender's next send is due: its last slot plus its pace times
        ``1 + u`` (a floor for the gate; the limiter, window, ramp and spend still apply)."""
        if sender.jitter is None:
            return None
        limiter = sender.limiter
        return sender.jitter.due_s(now_s=self._clock(), previous_s=limiter.last_event_s,
                                   pace_s=limiter.spacing_s, u=sender.jitter_u)

    def _drew(self, sender: _Sender, at_s: float | None) -> float | None:
        """A slot was taken: the gap after it gets a new draw (one per send)."""
        if at_s is not None and sender.jitter is not None:
            sender.jitter_u = sender.jitter.draw(self._draw)
        return at_s

    def _outside_window(self, sender: _Sender, at_s: float) -> bool:
        """True when the sender's send window is closed at ``at_s`` (or closes within a second,
        before the request could leave): the slot is given back and the sender rests until
        the window opens."""
        window = sender.window
        if window is None or window.is_open(at_s) and window.is_open(at_s + _WINDOW_MARGIN_S):
            if sender.note is not None and sender.note.startswith(_OUTSIDE_WINDOW):
                sender.note = None
            return False
        self._give_back(sender, at_s)
        opens_s = window.opens_s(at_s + _WINDOW_MARGIN_S)
        sender.limiter.rest_until(opens_s)
        sender.note = f"{_OUTSIDE_WINDOW} ({window.describe()}) until {_iso(opens_s)}"
        return True

    def _over_ramp(self, sender: _Sender, at_s: float) -> tuple[bool, int | None]:
        """Whether a send at ``at_s`` would pass the sender's warm-up cap for its ramp's day
        (counted from its first send in the ledger), and that cap (None: no warm-up applies).
        When it would, the slot is given back and the sender rests until the oldest of the
        day's sends leaves the day."""
        settings = sender.config
        if self._pool is None or settings is None or settings.warmup is None \
                or settings.daily_cap is None:
            return False, None
        first_s = self._first_sends.setdefault(sender.account, at_s)
        cap = settings.warmup.cap(settings.daily_cap, first_s, at_s)
        until_s = None
        # fewer sends held than the cap (this slot's included) fit without looking at them:
        # on by default, this runs for every send of every sender
        if cap < settings.daily_cap and len(sender.limiter) > cap:
            earlier = _without(sender.limiter.times(), at_s, self._restored_at_s,
                               self._never_sent.get(sender.account, 0))
            # the day as the limiter keeps it: a day and its guard (at most a second)
            until_s = ramp_wait_until_s(earlier, cap, at_s, _DAY_S + 1.0)
        if until_s is None:
            if sender.note is not None and sender.note.startswith(_WARMING_UP):
                sender.note = None
            return False, cap
        self._give_back(sender, at_s)
        sender.limiter.rest_until(until_s)
        day = settings.warmup.day(first_s, at_s)
        sender.note = (f"{_WARMING_UP} day {day} of {settings.warmup.days}: {cap}/{settings.daily_cap} "
                       f"a day, until {_iso(until_s)}")
        return True, cap

    async def _share_ramp(self, pool: AccountPool, sender: _Sender, cap: int | None) -> None:
        """The sender's warm-up cap for the ramp's day (``cap``, as ``_over_ramp`` found it
        for this slot; None: no warm-up) goes to the shared ledger, once a day, so that
        campaigns sending from one new account at the same time share that cap instead of each
        sending it."""
        settings = sender.config
        if settings is None or settings.daily_cap is None or cap is None:
            return
        if self._ramp_shared.get(sender.account, settings.daily_cap) == cap:
            return  # registered already (the whole daily cap, when the pool was opened)
        self._ramp_shared[sender.account] = cap
        await pool.narrow(sender.account, (*settings.rates, Rate(count=cap, period_s=_DAY_S)))

    async def _sleep_through_long_wait(self, sender: _Sender) -> None:
        """A wait within the run's patience but longer than a minute (a daily cap, a rest, with
        ``--until-done``) is one sleep to its end; the gate then looks again."""
        now = self._clock()
        wait_s = max(sender.limiter.next_allowed_s(now), self._key.next_allowed_s(now)) - now
        if _LONG_WAIT_S < wait_s <= self._patience_s:
            # `status` meanwhile: the sender waits (it read "done", its rows "ready")
            why = wait_reason(sender.limiter, self._key, now)
            reason = sender.note or (why.text(now, clock=_iso) if why else "its windows are full")
            await self._submit([cp.set_sender_wait(account=sender.account, until_s=now + wait_s,
                                                   reason=reason)])
            await self._sleep(wait_s)
            await self._submit([cp.clear_sender_waits(sender.account)])

    async def _wait_for_pool(self, sender: _Sender, refusal: Refusal) -> bool:
        """Wait (a second at most before asking again: others may release) for the ledger's
        next slot; False when that is past the run's patience or a stop came."""
        now = self._clock()
        if refusal.next_s - now > self._patience_s:
            sender.note = f"{refusal.reason} (all campaigns): next slot at {_iso(refusal.next_s)}"
            sender.free_at_s = refusal.next_s
            return False
        if refusal.reason.startswith("resting"):
            sender.limiter.rest_until(refusal.next_s)
        sender.pool_note = f"{refusal.reason} (all campaigns)"
        sender.pool_until_s = refusal.next_s
        wait_s = refusal.next_s - now
        # a long wait (a daily cap of all campaigns) is one sleep; a short one asks again in a
        # second, as another campaign may release its reservation
        await self._sleep(wait_s if wait_s > _LONG_WAIT_S else min(wait_s, 1.0))
        return not self._stop.is_set()

    # -- a send and what follows ---------------------------------------------------------------

    async def _send(
        self, row: RowRecord, sender: _Sender, auth: SenderAuth, media_id: str | None,
        intent: list[Write], *, replay: bool, ticket: Ticket | None = None,
        unbound: bool = False,
    ) -> None:
        sent = _SentAt(row.claimed_at_s or 0.0, (self._key, sender.limiter), ticket)
        request = DmRequest(recipient_id=row.recipient_id or "", sender=auth,
                            text=row.text or "", idempotency_key=row.idempotency_key or "",
                            media_id=media_id, on_sent=sent.move)
        try:
            try:
                if not await self._submit(intent):  # durable before the request leaves
                    return  # another sender or run has the row: never sent from here
                async with self._wire:
                    outcome = await self._provider.send(request)
            finally:
                sent.end()
                self._slots.release()
            if (outcome.action is Action.VERIFY and replay and outcome.http_status is not None
                    and self._settings.provider.name is ProviderName.XQUIK):
                # the replay's answer is the original, still ambiguous, action: look it up
                await self._after_replay_ambiguous(row, sender, request, outcome, sent.at_s)
            else:
                await self._submit(await self._after_send(row, sender, request, outcome,
                                                          sent.at_s, unsettled=replay))
        finally:
            if ticket is not None:
                ticket.release()  # the request never left (a no-op once it did)
            if unbound:  # here, not a done-callback: one trip through the loop less a send
                self._unbound.done(row.id)
            sender.ended()

    async def _after_send(
        self, row: RowRecord, sender: _Sender, request: DmRequest, outcome: Outcome,
        sent_at_s: float, *, unsettled: bool = False,
    ) -> list[Write]:
        """The writes a send's answer makes. ``unsettled``: the row's outcome was unknown before
        this send (a replay): an answer that does not settle it leaves it unknown."""
        # the row's own (conditional) write goes first: when it finds the row moved, nothing of
        # the submission was written and the commit needs no savepoint (checkpoint.py)
        writes = [cp.attempt_result(row_id=row.id, attempt=row.attempts,
                                    action=outcome.action.value, code=outcome.code,
                                    sent_at_s=sent_at_s), *self._breakers(sender, outcome)]
        action = outcome.action
        if action is Action.DONE:
            if self._pool is not None:
                self._pool.healthy(sender.account)
            sender.sent += 1
            sender.call_succeeded()
            self.recent_sends_s.append(self._clock())
            return [self._finish_sent(row, outcome, request.media_id), *writes]
        if action is Action.FAIL_ROW:
            return [*await self._refused(row, sender, outcome), *writes]
        if action in (Action.REST_SENDER, Action.DROP_SENDER, Action.STOP_RUN):
            return [*self._sender_problem(row, sender, outcome, unsettled=unsettled), *writes]
        return [*await self._retry_later(row, outcome, unsettled=unsettled), *writes]

    def _within_cap(self, *, dms: int = 0, uploads: int = 0, lookups: int = 0,
                    read_pages: int = 0, read_results: int = 0) -> bool:
        """Whether these calls, on top of what was spent, keep the campaign within its cap."""
        cap = self._settings.campaign.spend_cap
        if not cap.set:
            return True
        spent = self._spent
        usd, credits = billed_cost(self._settings, {
            "dms": spent["dms"] + dms, "uploads": spent["uploads"] + uploads,
            "lookups": spent["lookups"] + lookups, "read_pages": spent["read_pages"] + read_pages,
            "read_results": spent["read_results"] + read_results})
        return cap.allows(usd, credits)

    def _may_spend(self, *, dms: int = 0, uploads: int = 0, lookups: int = 0) -> bool:
        """Count a billed call about to be made, if it keeps the campaign within its spend
        cap; else stop the run before it, saying so."""
        if self._within_cap(dms=dms, uploads=uploads, lookups=lookups):
            # three increments, not Counter.update with a dict: this runs for every send
            counted = self._spent
            counted["dms"] += dms
            counted["uploads"] += uploads
            counted["lookups"] += lookups
            return True
        self._halt_at_cap("DM" if dms else "media upload" if uploads else "username lookup")
        return False

    def reserve_read(self, *, pages: int, results: int) -> bool:
        """Count a reply read (``[replies] sync_every``) that costs at most this, before it
        is made, if it keeps the campaign within its spend cap; else stop the run at the cap,
        saying that reply reads took the budget. :meth:`release_read` gives back the part the
        read did not cost."""
        if not self._within_cap(read_pages=pages, read_results=results):
            self._halt_at_cap("reply read")
            return False
        self._spent["read_pages"] += pages
        self._spent["read_results"] += results
        return True

    def release_read(self, *, pages: int, results: int) -> None:
        """What a reserved reply read did not cost (a shorter page, or none read)."""
        self._spent["read_pages"] -= pages
        self._spent["read_results"] -= results

    @property
    def spend_cap_note(self) -> str | None:
        """Why the spend cap stopped this run (None: it did not)."""
        return self._halt if self._halted_by is FinishReason.STOPPED_AT_SPEND_CAP else None

    def _halt_at_cap(self, what: str) -> None:
        if self._halt is None:
            self._halt = spend_cap_note(self._settings, self._spent, what)
            self._halted_by = FinishReason.STOPPED_AT_SPEND_CAP
            self._stop.set()

    def _breakers(self, sender: _Sender, outcome: Outcome) -> list[Write]:
        """A send's answer goes to the breakers: one error on most of the campaign's last sends
        stops the run; an account refused too often rests (in the ledger too)."""
        self._same_error(outcome)
        if outcome.action not in (Action.DONE, Action.FAIL_ROW):
            return []  # not a row's final answer: a retry, a rest, an unknown outcome
        breaker = self._settings.run.refusal_breaker
        refused = self._refusals.setdefault(sender.account, [])
        refusal = outcome.action is Action.FAIL_ROW and outcome.code in REFUSAL_CODES
        refused.append(refusal)
        del refused[:-breaker.sample]
        # an answer that is no refusal cannot trip it where the one before did not
        if not refusal or not breaker.trips(refused):
            return []
        why = breaker.why(refused)
        refused.clear()
        until_s = self._clock() + breaker.cooldown_s
        sender.limiter.rest_until(until_s)
        sender.note = f"{why}; resting until {_iso(until_s)}"
        if self._pool is not None:  # every campaign of this account rests with it
            self._pool.rest(sender.account, until_s=until_s, reason=why)
        return [cp.set_sender(account=sender.account, state=SenderState.RESTING,
                              until_s=until_s, reason=why)]

    def _same_error(self, outcome: Outcome, *, send: bool = True) -> None:
        """Every send's answer counts (a success as ``None``), final or not: an outage (5xx,
        cut connections, timeouts), a revoked key or a bad template fails send after send,
        and retrying each row in turn would burn through the list. So does every lookup,
        upload and conversation read that fails (one that works counts as a success): an
        outage met before the first send must not fail the list row by row either. A rate
        limit's rest is pacing, not an error: it counts for nothing."""
        if outcome.action is Action.REST_SENDER or outcome.code in _THROTTLE_CODES:
            return
        self._count_answer(None if outcome.action is Action.DONE
                           else outcome.code or outcome.action.value,
                           passing=outcome.action in (Action.RETRY, Action.VERIFY), send=send)

    def _count_answer(self, latest: str | None, *, passing: bool = False,
                      send: bool = True) -> None:
        """One call's answer for the same-error breaker: ``None`` a success, else its code.
        ``passing``: it came with a retry or a check. Passing errors count as one error, an
        outage: a 500 here, a 503 or a timeout there is one provider down, not three causes.
        While probing, only a send's answer decides (reads may work while sends do not)."""
        down = passing and latest is not None
        if self._probing and send:
            self._probed(latest if down else None)
            if down:
                return
        breaker = self._settings.run.same_error_breaker
        full = len(self._recent_codes) >= breaker.sample  # a whole sample before this answer
        self._recent_codes.append(_OUTAGE if down else latest)
        self._recent_passing.append(latest if down else None)
        keep = max(1, breaker.sample)
        del self._recent_codes[:-keep], self._recent_passing[:-keep]
        # once the sample is whole, a success cannot trip it where the answer before did not
        # (no code's count grows); the answer that makes it whole is always looked at
        code = None if latest is None and full else breaker.trips(self._recent_codes)
        if code is not None:
            what = _outage_codes(self._recent_passing) if code == _OUTAGE else code
            self._trip(f"{what} on most of the last {len(self._recent_codes)} calls to the "
                       "provider", outage=code == _OUTAGE)

    def _read_refused(self, sender: _Sender, outcome: Outcome) -> None:
        """A read refused as throttled. A provider that refuses every read for longer than
        ``max_read_throttle_s`` is down for this run (it would wait for ever): the same-error
        breaker stops it as an outage, which ``--until-done`` waits out."""
        now, since = self._clock(), self._reads_refused_since_s
        if since is None:
            self._reads_refused_since_s = now
            return
        breaker = self._settings.run.same_error_breaker
        if breaker.throttled_too_long(since, now):
            self._trip(f"reads refused as throttled ({outcome.code}) since {_iso(since)}, none "
                       f"answered (max_read_throttle {breaker.max_read_throttle_s:g}s)",
                       outage=True)
        elif breaker.sample > 0:
            sender.note = sender.call_note = (
                f"{sender.note}; no read answered since {_iso(since)}, an outage at "
                f"{_iso(since + breaker.max_read_throttle_s)}")

    def _trip(self, why: str, *, outage: bool) -> None:
        """The same-error breaker stops the run (the first halt's reason is kept)."""
        if self._halt is not None:
            return
        self._halt = (f"same-error breaker: {why}; fix the cause (or wait for the provider to "
                      "recover), then run again")
        self._halted_by = FinishReason.STOPPED_BY_BREAKER
        self._outage = outage
        self._stop.set()

    def _probed(self, latest: str | None) -> None:
        """The probe's answer (``None``: the provider answered, if only to refuse a row, and
        the full concurrency opens; else the passing error it still gives)."""
        self._probing = False
        if latest is None:
            concurrency = self._settings.run.concurrency
            for _ in range(concurrency - 1):
                self._wire.release()
            for _ in range(_CLAIMS_PER_REQUEST * concurrency - 1):
                self._slots.release()
        else:
            self._trip(f"{latest} again on the first call after the outage", outage=True)

    def _finish_sent(self, row: RowRecord, outcome: Outcome, media_id: str | None) -> Write:
        now_iso = _iso(self._clock())  # one clock read and format for both
        done = Finish(state=RowState.SENT, message_id=outcome.value, media_id=media_id,
                      sent_at=outcome.sent_at or now_iso,
                      request_id=outcome.request_id, write_action_id=outcome.write_action_id)
        return self._finish(row, done, now_iso)

    def _finish(self, row: RowRecord, done: Finish, now_iso: str | None = None) -> Write:
        return cp.finish(row_id=row.id, seq=self._cp.next_seq(), done=done,
                         finished_at=now_iso or _iso(self._clock()), expect=_expect(row))

    def _fail(self, row: RowRecord, code: str | None, message: str | None) -> Write:
        return self._finish(row, Finish(state=RowState.FAILED, reason=code or "failed",
                                        message=message))

    def _defer(self, row: RowRecord, state: RowState, delay_s: float, outcome: Outcome) -> Write:
        return cp.defer(row_id=row.id, state=state, due_s=self._clock() + delay_s,
                        reason=outcome.code, message=outcome.message, expect=_expect(row))

    async def _refused(self, row: RowRecord, sender: _Sender, outcome: Outcome) -> list[Write]:
        policy = self._settings.run.on_dm_not_allowed
        if outcome.code == "x_dm_not_allowed" and policy is DmNotAllowedPolicy.NEXT_SENDER:
            tried = set(await self._cp.senders_tried(row.id))
            other = next((s for s in self._senders.values()
                          if s.usable and s.account not in tried), None)
            if other is not None:
                # refused before delivery: provably not sent, so another sender may try
                return [self._defer(row, RowState.PENDING, 0.0, outcome),
                        cp.reassign(row_id=row.id, sender=other.account,
                                    key=self._key_for(row, other.account),
                                    from_sender=row.sender)]
        return [self._fail(row, outcome.code, outcome.message)]

    def _sender_problem(self, row: RowRecord, sender: _Sender, outcome: Outcome, *,
                        unsettled: bool = False) -> list[Write]:
        """STOP_RUN, DROP_SENDER or REST_SENDER from a send, lookup, upload or read: the call
        was not performed, so the row goes back to where it was (a claimed row to pending, a
        replayed one to unknown: its first send may have been delivered), or to no sender when
        its claim bound it and it is provably not delivered."""
        back = (RowState.UNKNOWN if unsettled
                else RowState.PENDING if row.state is RowState.SENDING else row.state)
        if outcome.action is not Action.STOP_RUN:
            return [*self._row_leaves(row, back, outcome), *self._sender_leaves(sender, outcome)]
        if self._halt is None:
            self._halt = f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code
        self._stop.set()
        return [self._defer(row, back, 0.0, outcome)]

    def _row_leaves(self, row: RowRecord, back: RowState, outcome: Outcome) -> list[Write]:
        """A row whose sender rests or is dropped, its call not performed. Bound by its claim
        (or not bound yet) and provably not delivered: any other account may send it now. A
        pinned row, or one whose outcome is unknown, waits for its sender."""
        if row.sender is None:
            return []  # a lookup for an unbound row: it stays as it is, for another sender
        if row.bound_by_claim and back is RowState.PENDING:
            return [self._unbind(row, 0.0, outcome)]
        if outcome.action is Action.DROP_SENDER:
            return [self._defer(row, back, 0.0, outcome)]
        return [self._defer(row, back, outcome.retry_after_s or 60.0, outcome)]

    def _sender_leaves(self, sender: _Sender, outcome: Outcome) -> list[Write]:
        now = self._clock()
        writes: list[Write] = []
        if outcome.action is Action.DROP_SENDER:
            if sender.state is not SenderState.OUT:  # once, however many calls said so
                sender.state, sender.note = SenderState.OUT, outcome.code
                if self._pool is not None:
                    self._pool.unhealthy(sender.account, outcome.code or "out")
                task = asyncio.create_task(self._move_rows_from(sender))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
                writes.append(cp.set_sender(account=sender.account, state=SenderState.OUT,
                                            until_s=None, reason=outcome.code))
            return writes
        until_s = now + (outcome.retry_after_s or 60.0)
        sender.limiter.rest_until(until_s)
        sender.note = f"{outcome.code} until {_iso(until_s)}"
        if self._pool is not None:  # every campaign of this account rests with it
            self._pool.rest(sender.account, until_s=until_s, reason=outcome.code or "rest")
        return [cp.set_sender(account=sender.account, state=SenderState.RESTING,
                              until_s=until_s, reason=outcome.code)]

    def _unbind(self, row: RowRecord, delay_s: float, outcome: Outcome) -> Write:
        return cp.unbind(row_id=row.id, due_s=self._clock() + delay_s, reason=outcome.code,
                         message=outcome.message, expect=_expect(row))

    def _call_worked(self, sender: _Sender, *, read: bool = True) -> None:
        """A lookup, upload or read that was answered (a user not found included)."""
        sender.call_succeeded()
        if read:
            self._reads_refused_since_s = None
        self._count_answer(None, send=False)

    def _call_failed(self, row: RowRecord, sender: _Sender, outcome: Outcome, what: str, *,
                     read: bool = True) -> list[Write]:
        """A lookup, media upload or conversation read for ``row`` that did not succeed, acted
        on as a send's outcome is: the sender and run actions apply, and retries are bounded by
        ``max_attempts`` (counted per row in this run), then the row ends in a final state."""
        detail = f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code
        sender.note = sender.call_note = f"{what} failed ({detail})"  # shown in the display
        if outcome.action in (Action.STOP_RUN, Action.DROP_SENDER, Action.REST_SENDER):
            return self._sender_problem(row, sender, outcome)
        if outcome.code in _THROTTLE_CODES or outcome.http_status == 429:
            # the key's reads over the provider's budget: pacing, not the row's failure (the
            # client holds every read back meanwhile); the row waits, its budget untouched
            delay_s = outcome.retry_after_s if outcome.retry_after_s is not None else 1.0
            sender.note = sender.call_note = (f"{what} throttled ({outcome.code}): waiting, "
                                              f"next try in {delay_s:g}s")
            if read:
                self._read_refused(sender, outcome)
            return [self._defer(row, row.state, delay_s, outcome)]
        self._same_error(outcome, send=False)
        self._call_failures[row.id] += 1
        tries = self._call_failures[row.id]
        if tries >= self._settings.retry.max_attempts:
            if row.state is RowState.UNKNOWN:
                return [self._fail(row, "outcome_unknown",
                                   f"may have been delivered; the {what} failed {tries} times "
                                   f"({detail}); check the conversation before sending again")]
            return [self._fail(row, outcome.code, f"{what} gave up after {tries} tries: {detail}")]
        delay_s = retry_delay_s(tries, self._settings.retry, retry_after_s=outcome.retry_after_s)
        return [self._defer(row, row.state, delay_s, outcome)]

    async def _retry_later(self, row: RowRecord, outcome: Outcome, *,
                           unsettled: bool = False) -> list[Write]:
        """A send to try again. ``unsettled`` (a replay whose answer did not settle the row):
        it stays unknown, never unbound nor sent under another key, and once out of attempts
        the conversation settles it (_settle_unknown), never a plain failure a retry file
        would send again."""
        rested: list[Write] = []
        if outcome.code in _THROTTLE_CODES and outcome.retry_after_s:
            until_s = self._clock() + outcome.retry_after_s
            self._key.rest_until(until_s)
            reason = f"{outcome.code} (Retry-After)"
            if self._pool is not None:  # every campaign, process and restart on the key:
                # in the ledger before the checkpoint records the refusal (a kill between the
                # two then still finds the rest)
                await self._pool.rest_now(None, until_s=until_s, reason=reason)
            else:  # a restart of this campaign, with the refusal it answered
                rested.append(cp.set_key_rest(until_s=until_s, reason=reason))
        return [*rested, *await self._retry_row(row, outcome, unsettled=unsettled)]

    async def _retry_row(self, row: RowRecord, outcome: Outcome, *,
                         unsettled: bool) -> list[Write]:
        failures = await self._failures(row)
        delay_s = retry_delay_s(failures, self._settings.retry, retry_after_s=outcome.retry_after_s)
        if outcome.action is Action.VERIFY:
            # with the budget spent too: settled (one look at the conversation) before it fails
            return [self._defer(row, RowState.UNKNOWN,
                                max(delay_s, 1.0, self._settle_after_s), outcome)]
        if unsettled:
            return [self._defer(row, RowState.UNKNOWN, delay_s, outcome)]
        if failures >= self._settings.retry.max_attempts:
            return [self._fail(row, outcome.code, f"gave up after {failures} attempts: "
                                                  f"{outcome.message or outcome.code}")]
        if row.bound_by_claim and outcome.code in _THROTTLE_CODES:
            # refused before delivery: another account may send it, under its own key
            return [self._unbind(row, delay_s, outcome)]
        writes = [self._defer(row, RowState.PENDING, delay_s, outcome)]
        if outcome.new_key:
            writes.append(cp.rotate_key(row_id=row.id))
        return writes

    # -- settling unknown outcomes ---------------------------------------------------------------

    async def _failures(self, row: RowRecord) -> int:
        return await self._cp.failures(row.id, exclude_codes=tuple(_THROTTLE_CODES))

    async def _settle_unknown(self, row: RowRecord, sender: _Sender) -> bool:
        """True when the row may be sent now (Xquik replays with the same key; GetXAPI after
        the conversation shows the message is not there). A row whose retry budget is spent
        is settled and never sent again: sent if the conversation has it, else failed."""
        spent = await self._failures(row) >= self._settings.retry.max_attempts
        # a recipient who opted out meanwhile gets no replay (it would deliver a DM that was
        # not) and no new send: the conversation settles the row
        opted_out = await self._opted_out_now(row)
        if self._settings.provider.name is ProviderName.XQUIK and not spent and not opted_out:
            return True
        result = await self._look_up(row, sender)
        if result is None:
            return False
        if result.found is None:
            outcome = result.outcome or Outcome(action=Action.RETRY, code="history_unavailable")
            await self._submit(self._call_failed(row, sender, outcome, "conversation read"))
            return False
        self._call_worked(sender)
        if result.found:
            await self._submit([self._found(row, sender, result)])
            return False
        if spent or opted_out:
            await self._submit([self._opted_out_unsent(row) if opted_out else self._given_up(row)])
            return False
        return True

    async def _opted_out_now(self, row: RowRecord) -> bool:
        """Whether the row's recipient is in the shared opt-outs now, whatever the row's state."""
        return self._pool is not None and bool(await self._opted_out_ids(self._pool, [row]))

    @staticmethod
    async def _opted_out_ids(pool: AccountPool, rows: Sequence[RowRecord]) -> set[int]:
        """The ids of ``rows`` whose recipient is in the shared opt-outs (one query)."""
        found = await pool.ledger.opted_out(
            pool.realm, user_ids=[r.recipient_id for r in rows if r.recipient_id],
            usernames=[r.recipient_username for r in rows if r.recipient_username])
        return {r.id for r in rows
                if opted_out_entry(r.recipient_id, r.recipient_username, found)} if found else set()

    def _opted_out_unsent(self, row: RowRecord) -> Write:
        """A row in doubt whose recipient opted out, its DM not in the conversation. GetXAPI:
        provably not delivered, so skipped as opted out. Xquik: its write action may still be
        pending, so it fails ``outcome_unknown``: never replayed, never offered for a retry."""
        if self._settings.provider.name is ProviderName.XQUIK:
            return self._fail(row, "outcome_unknown",
                              "the recipient opted out while this DM's outcome was unknown: not "
                              "replayed (it may have been delivered; the conversation does not "
                              "show it yet)")
        return self._finish(row, Finish(state=RowState.SKIPPED, reason="opted_out",
                                        message=OPTED_OUT_MESSAGE))

    def _given_up(self, row: RowRecord) -> Write:
        """A row out of attempts whose DM is not in the conversation. GetXAPI: provably not
        delivered, so it fails with its last error (safe to retry). Xquik: the action may still
        be pending, so it fails ``outcome_unknown`` (never offered for a retry)."""
        last = row.reason or "failed"
        if self._settings.provider.name is ProviderName.XQUIK:
            return self._fail(row, "outcome_unknown",
                              f"{last}: may have been delivered (the write action is not "
                              "settled); check the conversation before sending again")
        return self._fail(row, last, f"gave up after {row.attempts} attempts ({last}); the "
                                     "conversation shows it was not delivered")

    async def _look_up(self, row: RowRecord, sender: _Sender) -> Reconciliation | None:
        """Read the conversation for the row's text (None: stopped before the read)."""
        if self._stop.is_set():  # reads keep the provider's read budget (providers.readbudget)
            return None
        # only this sender's messages created after its first attempt left (less the clock
        # skew allowance): an older DM with the same text is another campaign's
        first_s = await self._cp.first_attempt_s(row.id, sender.account) or self._clock()
        request = DmRequest(recipient_id=row.recipient_id or "", sender=sender.auth,
                            text=row.text or "", idempotency_key=row.idempotency_key or "")
        since_s = first_s - self._settings.retry.clock_skew_s
        return await self._provider.reconcile(request, _iso(since_s))

    def _found(self, row: RowRecord, sender: _Sender, result: Reconciliation) -> Write:
        """The row is in the conversation: record it as sent (counted once it applies)."""
        sender.sent += 1
        return self._finish(row, Finish(
            state=RowState.SENT, message_id=result.message_id,
            sent_at=result.sent_at or _iso(self._clock()),
            reason="reconciled", message="found in the conversation after an unknown outcome"))

    async def _after_replay_ambiguous(
        self, row: RowRecord, sender: _Sender, request: DmRequest, outcome: Outcome,
        sent_at_s: float,
    ) -> None:
        """An Xquik replay answered with the original action, still not terminal. The history
        may already show the DM; if not, the row stays ``unknown`` and is replayed later under
        the SAME key: only Xquik's ``safeToRetry`` allows a new one (providers.md), and an
        action still pending may yet deliver."""
        writes = [cp.attempt_result(row_id=row.id, attempt=row.attempts,
                                    action=outcome.action.value, code=outcome.code,
                                    sent_at_s=sent_at_s)]
        result = await self._look_up(row, sender)
        if result is not None and result.found:
            writes.append(self._found(row, sender, result))
        else:
            writes += await self._retry_later(row, outcome)
        await self._submit(writes)

    # -- opt-outs ----------------------------------------------------------------------------

    async def _skip_opted_out(self, rows: list[RowRecord]) -> list[RowRecord]:
        """The page without its pending rows whose recipient opted out in the shared ledger
        since the plan (a reply in another campaign): each ends ``skipped`` (``opted_out``),
        conditional on the row still being pending, before any send of the page."""
        if self._pool is None:
            return rows
        now = self._clock()
        pending = [r for r in rows if r.state is RowState.PENDING]
        gone = await self._opted_out_ids(self._pool, pending)
        self._screened_s.update((r.id, now) for r in pending if r.id not in gone)
        if not gone:
            return rows
        await asyncio.gather(*(self._submit([self._finish(r, Finish(
            state=RowState.SKIPPED, reason="opted_out", message=OPTED_OUT_MESSAGE))])
            for r in rows if r.id in gone))
        return [r for r in rows if r.id not in gone]

    async def _resolve_opt_out_names(self) -> None:
        """An opt-out recorded by username only (``optouts --add @name``) must also stop a row
        that gives the person by id: each such name is looked up once and its id kept in the
        ledger beside it. A name that cannot be looked up (the provider's lookups down or
        throttled, after the retry budget) stops the run before anything is sent."""
        if self._pool is None or self._stop.is_set():
            return
        pool = self._pool
        named = [o for o in await pool.ledger.opt_outs(pool.realm)
                 if o.user_id is None and o.username]
        sender = next((s for s in self._senders.values() if s.usable), None)
        if not named or sender is None:
            return
        known = await self._cp.cached_users([o.username or "" for o in named])
        for opt_out in named:
            name = opt_out.username or ""
            user_id = known[name][0] if name in known else await self._look_up_name(name, sender)
            if user_id is not None:
                await pool.ledger.add_opt_out(pool.realm, user_id=user_id, username=name,
                                              reason=opt_out.reason, source=opt_out.source,
                                              now_s=self._clock(), said_s=opt_out.at_s)

    async def _look_up_name(self, name: str, sender: _Sender) -> str | None:
        outcome = Outcome(action=Action.RETRY, code="stopped")
        for tries in range(1, self._settings.retry.max_attempts + 1):
            if self._stop.is_set() or not self._may_spend(lookups=1):
                return None  # a stop, or the spend cap's own halt
            outcome = await self._provider.resolve(name, sender.auth)
            if outcome.action in (Action.DONE, Action.FAIL_ROW):
                await self._submit(self._user_writes({name: outcome}))
                return outcome.value if outcome.ok else None
            if outcome.action is Action.STOP_RUN:
                break
            await self._sleep(min(retry_delay_s(tries, self._settings.retry,
                                                retry_after_s=outcome.retry_after_s), 60.0))
        if self._halt is None:
            # a row that gives this person by id would not be known for theirs
            self._halt = (f"the opt-out of @{name} could not be looked up ({outcome.code}): a row "
                          "giving this person by id could reach them, so nothing was sent; run "
                          "again once the provider answers username lookups")
        self._stop.set()
        return None

    async def _screen_again(self, row: RowRecord) -> bool:
        """False when ``row``'s recipient opted out since its check, if that was more than
        ``_OPT_OUT_FRESH_S`` ago (the sender waited for its slot): the row is then skipped."""
        screened_s = self._screened_s.pop(row.id, None)
        if self._pool is None or row.state is not RowState.PENDING or (
                screened_s is not None and self._clock() - screened_s <= _OPT_OUT_FRESH_S):
            return True
        kept = await self._skip_opted_out([row])
        self._screened_s.pop(row.id, None)
        return bool(kept)

    # -- usernames and media ------------------------------------------------------------------------

    async def _resolve_page(self, rows: list[RowRecord], sender: _Sender) -> list[RowRecord]:
        wanted = sorted({r.recipient_username.lower() for r in rows
                         if r.recipient_id is None and r.recipient_username})
        if not wanted:
            return rows
        known = await self._cp.cached_users(wanted)
        missing = [u for u in wanted if u not in known]
        fit = len(missing)
        while fit and not self._within_cap(lookups=fit):
            fit -= 1
        over, missing = missing[fit:], missing[:fit]
        self._may_spend(lookups=fit)  # the lookups within the spend cap go ...
        limit = asyncio.Semaphore(_RESOLVE_CONCURRENCY)

        async def resolve(username: str) -> tuple[str, Outcome]:
            async with limit:
                if self._stop.is_set():
                    return username, Outcome(action=Action.RETRY, code="stopped")
                return username, await self._provider.resolve(username, sender.auth)

        outcomes = dict(await asyncio.gather(*(resolve(u) for u in missing)))
        if over:
            self._may_spend(lookups=1)  # ... and the run stops before the next one
        writes = self._user_writes(outcomes)
        for username, outcome in outcomes.items():
            if outcome.action in (Action.DONE, Action.FAIL_ROW):
                self._call_worked(sender)
                known[username] = (outcome.value, "ok" if outcome.ok else outcome.code or "failed")
        writes += self._recipient_writes(rows, known, outcomes, sender)
        # one submission each: a row another sender took meanwhile refuses only its own write
        await asyncio.gather(*(self._submit([write]) for write in writes))
        return await self._cp.rows_by_ids([r.id for r in rows])

    def _user_writes(self, outcomes: Mapping[str, Outcome]) -> list[Write]:
        now = self._clock()
        return [cp.store_user(username=u, user_id=o.value, at_s=now,
                              status="ok" if o.ok else o.code or "failed")
                for u, o in outcomes.items() if o.action in (Action.DONE, Action.FAIL_ROW)]

    def _recipient_writes(
        self, rows: list[RowRecord], known: Mapping[str, tuple[str | None, str]],
        outcomes: Mapping[str, Outcome], sender: _Sender,
    ) -> list[Write]:
        writes: list[Write] = []
        for row in rows:
            if row.recipient_id is not None or not row.recipient_username:
                continue
            username = row.recipient_username.lower()
            user_id, status = known.get(username, (None, ""))
            if user_id is not None and status == "ok":
                writes.append(cp.assign_recipient(row_id=row.id, user_id=user_id,
                                                  seq=self._cp.next_seq(), now_iso=_iso(self._clock())))
            elif status:
                message = f"@{row.recipient_username} could not be resolved ({status})"
                writes.append(self._fail(row, status, message))
            elif not self._stop.is_set():  # a stopped lookup says nothing about the row
                outcome = outcomes.get(username, Outcome(action=Action.RETRY))
                writes += self._call_failed(row, sender, outcome, "username lookup")
        return writes

    async def _media_id(self, row: RowRecord, sender: _Sender) -> str | None:
        path = row.media or ""
        cached = await self._cp.cached_media(path, sender.account)
        if cached is not None:
            return cached
        if not self._may_spend(uploads=1):
            return None
        at_s = await self._gate.acquire(self._key, stop=self._stop)
        if at_s is None:
            return None
        digest = await asyncio.to_thread(_file_sha256, path)
        key = idempotency_key(campaign=self._settings.campaign.key_scope, recipient_key="media:" + path,
                              sender=sender.account, text_digest=digest)
        # the key's slot is durable before the upload leaves: a restart charges it
        await self._cp.submit([cp.upload(path=path, sender=sender.account, at_s=at_s)])
        outcome = await self._provider.upload_media(Path(path), sender.auth, key)
        done = cp.upload_done(path=path, sender=sender.account, at_s=at_s)
        if outcome.ok and outcome.value:
            self._call_worked(sender, read=False)
            await self._submit([done, cp.store_media(path=path, sender=sender.account,
                                                     media_id=outcome.value, at_s=self._clock())])
            return outcome.value
        if outcome.action is Action.FAIL_ROW:
            await self._submit([done, self._fail(row, outcome.code, outcome.message)])
        else:
            await self._submit([done, *self._call_failed(row, sender, outcome, "media upload",
                                                         read=False)])
        return None

    # -- moving rows off an unusable sender ----------------------------------------------------------

    async def _move_rows_from(self, gone: _Sender) -> None:
        await gone.idle.wait()
        await self._settle_rows_of(gone)
        await gone.idle.wait()
        # rows its claims bound go back to no sender (any account takes them); pinned rows are
        # given to the senders left in turn, each with a key for its new sender
        await self._submit([cp.release_rows(sender=gone.account)])
        targets = [s for s in self._senders.values() if s.usable]
        if not targets:
            return
        after_id, turn = 0, 0
        while rows := await self._cp.rows_of_sender(gone.account, (RowState.PENDING,),
                                                    after_id=after_id, limit=_PAGE):
            writes = []
            for row in rows:
                target = targets[turn % len(targets)]
                turn += 1
                writes.append(cp.reassign(row_id=row.id, sender=target.account,
                                          key=self._key_for(row, target.account),
                                          from_sender=gone.account))
            await self._submit(writes)
            after_id = rows[-1].id

    async def _settle_rows_of(self, gone: _Sender) -> None:
        """An out sender's ``unknown`` rows are settled before anything moves them: Xquik
        replays each under its own key (the stored action settles it), then, as GetXAPI, the
        sender's own conversation is read: found, it was sent; absent, it goes back to pending.
        What cannot be settled stays ``unknown`` with its sender, for a later run."""
        after_id = 0
        while not self._stop.is_set() and (rows := await self._cp.rows_of_sender(
                gone.account, (RowState.UNKNOWN,), after_id=after_id, limit=_PAGE)):
            after_id = rows[-1].id
            for row in rows:
                wait_s = (await self._cp.due_s(row.id) or 0.0) - self._clock()
                if wait_s > self._patience_s:
                    continue  # settled by a later run
                await self._sleep(wait_s)
                if self._stop.is_set():
                    return
                if self._settings.provider.name is ProviderName.XQUIK:
                    await self._replay_unknown(row.id, gone)
                # a replay refused says nothing of the first send (a provider may look at the
                # account, or its windows, before the key): its conversation settles it, once
                # due (a replay whose own answer was lost may yet arrive: it waits its turn)
                [row] = await self._cp.rows_by_ids([row.id])  # as it is now
                due_s = await self._cp.due_s(row.id) or 0.0
                if row.state is RowState.UNKNOWN and row.sender == gone.account \
                        and due_s <= self._clock():
                    await self._settle_by_reading(row, gone)

    async def _replay_unknown(self, row_id: int, gone: _Sender) -> None:
        """Replay an out sender's unknown row under its own key, to its answer: a stored action
        (sent) settles it."""
        [row] = await self._cp.rows_by_ids([row_id])  # as it is now, after the wait
        if row.state is RowState.UNKNOWN and row.sender == gone.account:
            task = await self._work_row(row, gone)
            if task is not None:
                await asyncio.shield(task)  # the send ends (and is recorded) even if we stop

    async def _settle_by_reading(self, row: RowRecord, gone: _Sender) -> None:
        result = await self._look_up(row, gone)
        if result is None:
            return
        if result.found is None:
            code = result.outcome.code if result.outcome else "history_unavailable"
            waiting = f"its unknown rows wait to be settled ({code})"
            if waiting not in (gone.note or ""):  # once, however many rows wait
                gone.note = f"{gone.note or 'out'}; {waiting}"
        elif result.found:
            await self._submit([self._found(row, gone, result)])
        else:
            absent = Outcome(action=Action.RETRY, code="not_delivered",
                             message="not in the conversation of its sender, which is out")
            await self._submit([self._defer(row, RowState.PENDING, 0.0, absent)])

    def _key_for(self, row: RowRecord, sender: str) -> str:
        recipient = f"id:{row.recipient_id}" if row.recipient_id else \
            f"u:{(row.recipient_username or '').lower()}"
        return self._keys(recipient, sender, row.text_sha256 or "")

    async def _submit(self, writes: Sequence[Write]) -> bool:
        """Submit ``writes``; once they applied, count the row state changes they made."""
        applied = await self._cp.submit(writes)
        if applied:
            unbinds = False
            for write in writes:
                if write.moves is not None:
                    self.counts[write.moves[0]] -= 1
                    self.counts[write.moves[1]] += 1
                unbinds = unbinds or write.unbinds
            if unbinds:
                self._unbound.arrived()
        return applied


def _expect(row: RowRecord) -> Expect:
    """The row as the engine read it: a claim, finish or defer applies only to that row."""
    return Expect(state=row.state, sender=row.sender)


def _without(times: Sequence[float], slot_s: float, ahead_s: float, ahead: int) -> list[float]:
    """The sends of ``times`` before the slot at ``slot_s``, less ``ahead`` reservations held
    ahead by an earlier run (charged at ``ahead_s``, never sent)."""
    kept = []
    for t in times:
        if t == slot_s:
            continue
        if t == ahead_s and ahead > 0:
            ahead -= 1
            continue
        kept.append(t)
    return kept


def _earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)


def _raise_first(results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _merged(ledger_s: Sequence[float], own_s: Sequence[float]) -> list[float]:
    """The ledger's send times, plus those of the checkpoint's own that it does not hold: an
    own send matches a ledger entry within :data:`_SAME_SEND_S` (each entry matches once)."""
    ledger = sorted(ledger_s)
    extra: list[float] = []
    j = 0
    for at_s in sorted(own_s):
        while j < len(ledger) and ledger[j] < at_s - _SAME_SEND_S:
            j += 1
        if j < len(ledger) and ledger[j] <= at_s + _SAME_SEND_S:
            j += 1
        else:
            extra.append(at_s)
    return [*ledger, *extra]


def _outage_codes(codes: Sequence[str | None]) -> str:
    """The passing errors of the breaker's sample: ``internal_error``, or, when they differ,
    ``provider errors (http_502 x5, timeout x3)``."""
    counted = Counter(code for code in codes if code is not None).most_common()
    if len(counted) == 1:
        return counted[0][0]
    return "provider errors (" + ", ".join(f"{code} x{n}" for code, n in counted) + ")"
