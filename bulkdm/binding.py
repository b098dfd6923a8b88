"""Late binding: the rows bound to no account yet, handed to the senders one at a time.

A row planned without a ``sender`` column has no account until a sender with a free slot claims
it (:func:`~bulkdm.checkpoint.claim` with ``expect.sender`` None binds it). In one process this
hands each unbound row to one sender loop at a time, so two loops never take a slot for the same
row; between processes the conditional claim decides, and the loser does not send.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from bulkdm.checkpoint import Checkpoint
from bulkdm.rows import RowRecord, RowState

__all__ = ["UnboundRows"]

#: unbound rows read at a time (one sender resolves the page's usernames), or as many as
#: loops wait for the read, up to the most
_PAGE = 64
_MAX_PAGE = 512
#: rows screened at a time just before they are handed out: each screen is a trip to the
#: shared ledger (at 16, one every 22 sends cost the ledger's runs 7-10 % of their rate); a
#: row whose screen has grown old by its send is screened again then (Engine._screen_again)
_SCREEN_AHEAD = 128


class _Fill:
    """A read or screen under way: the loops waiting for it wake together when it ends."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        #: False: a read from the start found no due row, so no loop need look again now
        self.go_on = True


class UnboundRows:
    """A cursor over the checkpoint's unbound due rows, shared by every sender loop."""

    def __init__(self, checkpoint: Checkpoint, clock: Callable[[], float]) -> None:
        self._cp = checkpoint
        self._clock = clock
        self._after_id = 0
        self._buffer: deque[RowRecord] = deque()
        #: ids of buffered rows the screen has passed
        self._screened: set[int] = set()
        #: rows handed to a sender and not yet claimed or given back
        self._held: set[int] = set()
        #: the read or screen under way, awaited by the other loops
        self._filling: _Fill | None = None
        #: loops waiting for it
        self._waiting = 0
        self._more = asyncio.Event()

    async def take(
        self, prepare: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]],
        screen: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]] | None = None,
    ) -> RowRecord | None:
        """The next unbound due row no other loop holds (None: none is due now). ``prepare``
        runs on each page read (the taker resolves its usernames); ``screen`` on the next few
        rows just before they are handed out, and keeps only the rows it returns.

        A row that is read and screened already is handed out at once, without a lock: with
        thousands of senders, a lock passed from one waiter to the next woke one of them per
        turn of the event loop, and that capped the whole pool at a few hundred rows a second
        (benchmarks/bench_pool.py). Only a read or a screen is done by one taker at a time, and
        everyone waiting for it wakes together when it ends."""
        reads = 0  # this loop's reads: forward, then from the start, then it gives up
        while True:
            row = self._pop_ready(screened=screen is None)
            if row is not None:
                return row
            if self._filling is not None:
                if not await self._wait_for(self._filling):
                    return None
                continue
            if not self._buffer:
                if reads == 2:
                    return None
                reads += 1
            await self._fill(prepare, screen, from_start=reads == 2)

    async def _wait_for(self, filling: _Fill) -> bool:
        """Wait for the read or screen under way; False when it found no due row at all."""
        self._waiting += 1
        try:
            await filling.ended.wait()
        finally:
            self._waiting -= 1
        return filling.go_on

    def _pop_ready(self, *, screened: bool) -> RowRecord | None:
        """The first buffered row that may be handed out now; rows no loop may take (held,
        bound or finished since the read) are dropped on the way."""
        while self._buffer and (screened or self._buffer[0].id in self._screened):
            row = self._buffer.popleft()
            self._screened.discard(row.id)
            if row.id not in self._held and row.sender is None and row.state is RowState.PENDING:
                self._held.add(row.id)
                return row
        return None

    async def _fill(
        self, prepare: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]],
        screen: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]] | None, *,
        from_start: bool,
    ) -> None:
        """Read a page when the buffer is empty (with a screen: too short for the loops
        waiting), then screen the rows at its front; the loops waiting meanwhile wake together
        when it ends."""
        filling = self._filling = _Fill()
        # with a screen, a buffer too short for the loops waiting is topped up first: a screen
        # of what is left, then a read and a screen, was two fills to wait for
        read = not self._buffer or (screen is not None and not from_start
                                    and len(self._buffer) < self._ahead())
        try:
            if read:
                await self._read(prepare, from_start=from_start)
            # a page just read is screened in the same fill: the loops waiting for it wake
            # once, to rows they can take, not twice (read, then screen)
            if screen is not None and self._buffer:
                await self._screen(screen)
        finally:
            self._filling = None
            # a read from the start that found nothing: no loop need look again now
            filling.go_on = not (read and from_start and not self._buffer)
            filling.ended.set()

    def _ahead(self) -> int:
        # rows for the loops waiting now, and as many again for those that come meanwhile
        return max(_SCREEN_AHEAD, 2 * (self._waiting + 1))

    async def _screen(self, screen: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]]) -> None:
        # enough for every loop waiting now, and as many again for the loops that come while it
        # runs: with only the ones waiting at its start, a pool of 1,000 senders at 1/2s
        # waited for three screens a row taken (each wait a wake-up of a sender's loop)
        count = min(self._ahead(), len(self._buffer))
        ahead = [self._buffer.popleft() for _ in range(count)]
        kept = await screen(ahead)
        self._screened.update(row.id for row in kept)
        self._buffer.extendleft(reversed(kept))

    async def _read(
        self, prepare: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]], *,
        from_start: bool,
    ) -> None:
        if from_start:
            self._after_id = 0
        # a page for every loop waiting now (they wait for this read) and those that come
        # meanwhile, within a bound
        limit = min(max(_PAGE, self._ahead()), _MAX_PAGE)
        rows = await self._cp.unbound_rows(after_id=self._after_id, now_s=self._clock(),
                                           limit=limit)
        if rows:
            self._after_id = rows[-1].id
            self._buffer.extend(await prepare(rows))

    def done(self, row_id: int) -> None:
        """The row was claimed (or finished, or deferred): later reads see it as it is now."""
        self._held.discard(row_id)

    def give_back(self, row_id: int) -> None:
        """The row was not claimed: the next read (from the start) offers it again."""
        self._held.discard(row_id)
        self._buffer.clear()
        self._screened.clear()
        self._after_id = 0

    def arrived(self) -> None:
        """Rows were unbound (a sender rests or left): wake the senders waiting for rows."""
        more, self._more = self._more, asyncio.Event()
        more.set()

    async def wait_for_more(self) -> None:
        """Until :meth:`arrived` is next called."""
        await self._more.wait()

    async def next_due_s(self) -> float | None:
        """When the earliest unbound row is due (None: none is left)."""
        return await self._cp.next_unbound_due_s()
