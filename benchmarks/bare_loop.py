"""The baseline: a bare aiohttp loop sending the engine's requests, nothing else.

One ``ClientSession``, ``TCPConnector(limit=concurrency)``, ``concurrency`` worker tasks, each
POSTing ``/x/dm/{id}`` with the same headers and body the Xquik client sends (API key, JSON body,
``Idempotency-Key``) and reading the JSON answer. No checkpoint, no limiter, no retries.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass

import aiohttp
import orjson

from benchmarks.common import API_KEY

__all__ = ["BareResult", "bare_loop"]


@dataclass(frozen=True, kw_only=True)
class BareResult:
    sends: int
    errors: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.sends / self.wall_s if self.wall_s > 0 else 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bare_loop(
    xquik_url: str, *, rows: int, concurrency: int, senders: int = 1, first_id: int = 10_000_000,
    key_prefix: str = "bare", timeout_s: float = 600.0,
) -> BareResult:
    """Send ``rows`` DMs as fast as ``concurrency`` workers can; returns the rate and CPU."""
    next_row = 0
    errors = 0
    sent = 0
    deadline = time.monotonic() + timeout_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_row, errors, sent
            while next_row < rows and time.monotonic() < deadline:
                n = next_row
                next_row += 1
                account = f"bench{n % senders:03d}"
                body = orjson.dumps({"account": account, "text": f"Hello N{n}, your plan is ready."})
                headers = {"x-api-key": API_KEY, "Accept": "application/json",
                           "Idempotency-Key": f"{key_prefix}-{n}",
                           "Content-Type": "application/json"}
                async with session.post(f"{xquik_url}/x/dm/{first_id + n}", data=body,
                                        headers=headers) as response:
                    answer = orjson.loads(await response.read())
                if response.status == 200 and isinstance(answer, dict):
                    sent += 1
                else:
                    errors += 1

        cpu0, started = _cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu0
    return BareResult(sends=sent, errors=errors, wall_s=wall_s, cpu_s=cpu_s)
