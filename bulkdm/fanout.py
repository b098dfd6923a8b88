"""Many independent awaits, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["each"]

_T = TypeVar("_T")


async def each(items: Iterable[_T], call: Callable[[_T], Awaitable[None]], *, at_once: int) -> None:
    """``await call(item)`` for every item, ``at_once`` of them at a time. The first error
    cancels the calls still running and is raised as it was (not in an exception group)."""
    left = iter(items)  # shared by the workers: each item is taken once

    async def worker() -> None:
        for item in left:
            await call(item)

    try:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(max(1, at_once)):
                tasks.create_task(worker())
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
