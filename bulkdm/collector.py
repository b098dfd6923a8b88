"""The garbage collector tuned for sending.

A send allocates hundreds of short-lived objects (its task, futures, request and answer
objects), so with CPython's default threshold a young collection ran every few sends, and the
older generations' collections walked every object the run holds (its settings, pages of rows,
aiohttp's state). While a run sends, what exists already is frozen out of the collector's walks
(``gc.freeze``) and a young collection waits for 10,000 allocations: 5-10 % less CPU per send
than the same run with the default collector, three interleaved runs of 20,000 sends (``gc`` in
benchmarks/README.md). Garbage in reference cycles is still collected, a little later; memory
stays flat (``run-rss``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["SEND_THRESHOLDS", "tuned_collector"]

SEND_THRESHOLDS: Final = (10_000, 50, 100)

_depth = 0
_before: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def tuned_collector() -> Iterator[None]:
    """The collector tuned while the block runs, and as it was after (runs in one process,
    as in the tests, nest: the first to enter tunes it, the last to leave restores it)."""
    global _depth, _before
    if _depth == 0:
        _before = gc.get_threshold()
        gc.collect()  # the plan's garbage is not frozen with the run's objects
        gc.freeze()
        gc.set_threshold(*SEND_THRESHOLDS)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            gc.set_threshold(*_before)
            gc.unfreeze()
