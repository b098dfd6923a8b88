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

#: unbound rows read at a time (one sender resolves the page's usernames)
_PAGE = 64
#: rows screened at a time just before they are handed out (a page is read well ahead of its
#: sends at a slow rate: an opt-out recorded meanwhile must still stop them)
_SCREEN_AHEAD = 16


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
        self._lock = asyncio.Lock()
        self._more = asyncio.Event()

    async def take(
        self, prepare: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]],
        screen: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]] | None = None,
    ) -> RowRecord | None:
        """The next unbound due row no other loop holds (None: none is due now). ``prepare``
        runs on each page read (the taker resolves its usernames); ``screen`` on the next few
        rows just before they are handed out, and keeps only the rows it returns."""
        async with self._lock:
            for rewound in (False, True):
                if not self._buffer:
                    await self._read(prepare, from_start=rewound)
                while self._buffer:
                    if screen is not None and self._buffer[0].id not in self._screened:
                        await self._screen(screen)
                        continue
                    row = self._buffer.popleft()
                    self._screened.discard(row.id)
                    if (row.id not in self._held and row.sender is None
                            and row.state is RowState.PENDING):
                        self._held.add(row.id)
                        return row
            return None

    async def _screen(self, screen: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]]) -> None:
        ahead = [self._buffer.popleft() for _ in range(min(_SCREEN_AHEAD, len(self._buffer)))]
        kept = await screen(ahead)
        self._screened.update(row.id for row in kept)
        self._buffer.extendleft(reversed(kept))

    async def _read(
        self, prepare: Callable[[list[RowRecord]], Awaitable[list[RowRecord]]], *,
        from_start: bool,
    ) -> None:
        if from_start:
            self._after_id = 0
        rows = await self._cp.unbound_rows(after_id=self._after_id, now_s=self._clock(),
                                           limit=_PAGE)
        if rows:
            self._after_id = rows[-1].id
            self._buffer.extend(await prepare(rows))

    def done(self, row_id: int) -> None:
        """The row was claimed (or finished, or deferred): later reads see it as it is now."""
        self._held.discard(row_id)

    def done_with(self, row_id: int, _task: asyncio.Task[None]) -> None:
        """:meth:`done` as a task's done-callback (the row's send ended)."""
        self.done(row_id)

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
