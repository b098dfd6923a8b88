"""Run a planned campaign in this process exactly as ``bulkdm run`` wires it (``run_campaign``).

The settings come from the campaign's settings file through ``load_settings``, the API key from
the environment mapping, the handoff file is written, the progress display is off. The only
instrumentation is a wrapper around ``Checkpoint.close`` that reads the CPU time of the
checkpoint's SQLite threads (aiosqlite's worker for reads, the group commit's writer) just
before they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import API_KEY, API_KEY_ENV, thread_cpu_s
from bulkdm.checkpoint import Checkpoint
from bulkdm.runner import RunOptions, run_campaign
from bulkdm.settings import load_settings

__all__ = ["EngineResult", "run_engine"]


@dataclass(frozen=True, kw_only=True)
class EngineResult:
    exit_code: int
    wall_s: float
    cpu_s: float
    sqlite_cpu_s: float
    summary: str


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _sqlite_thread_cpu(seen: list[float]) -> Iterator[None]:
    original = Checkpoint.close

    async def close(self: Checkpoint) -> None:
        await self.flush()
        db: Any = getattr(self, "_db", None)
        writer: Any = getattr(self, "_writer", None)
        threads = [getattr(db, "_thread", None), getattr(writer, "_thread", None)]
        for thread in threads:
            native_id = getattr(thread, "native_id", None)
            if native_id is not None:
                seen.append(thread_cpu_s(native_id))
        await original(self)

    Checkpoint.close = close  # type: ignore[method-assign]
    try:
        yield
    finally:
        Checkpoint.close = original  # type: ignore[method-assign]


async def run_engine(
    campaign: Path, settings_path: Path, checkpoint: Path, out: Path, *,
    stop_after_s: float | None = None, timeout_s: float = 900.0,
) -> EngineResult:
    """``run_campaign`` on the running loop; ``stop_after_s`` sets the stop event (like Ctrl-C)."""
    settings = load_settings(campaign, config_path=settings_path)
    options = RunOptions(campaign=campaign, checkpoint=checkpoint, out=out, progress="none")
    stop = asyncio.Event()
    stream = io.StringIO()
    sqlite_cpu: list[float] = []
    loop = asyncio.get_running_loop()
    handles = [loop.call_later(timeout_s, stop.set)]
    if stop_after_s is not None:
        handles.append(loop.call_later(stop_after_s, stop.set))
    with _sqlite_thread_cpu(sqlite_cpu):
        cpu0, started = _cpu_s(), time.perf_counter()
        try:
            code = await run_campaign(options, settings, stream=stream, stop=stop,
                                      environ={API_KEY_ENV: API_KEY})
        finally:
            for handle in handles:
                handle.cancel()
        wall_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu0
    return EngineResult(exit_code=int(code), wall_s=wall_s, cpu_s=cpu_s,
                        sqlite_cpu_s=sum(sqlite_cpu), summary=stream.getvalue())
