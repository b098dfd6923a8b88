"""The baselines: a bare aiohttp loop sending the engine's requests, and bulkdm's Xquik client
alone sending them the same way.

Both use ``concurrency`` worker tasks over one connection pool and POST ``/x/dm/{id}`` with
the headers and body the Xquik client sends (API key, JSON body, ``Idempotency-Key``), reading
the JSON answer. The bare loop is one ``ClientSession`` with ``TCPConnector(limit=concurrency)``
and nothing else: no checkpoint, no limiter, no retries. The provider loop calls
``XquikProvider.send`` as the engine does (its trace hooks, timeouts, answer parsing and
classification), still without the engine: it splits the engine's distance from the bare loop
into the client's share and the engine's own.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson

from benchmarks.common import API_KEY
from bulkdm.providers.base import DmRequest, SenderAuth
from bulkdm.providers.http import HttpClient
from bulkdm.providers.xquik import XquikProvider
from bulkdm.secrets import Secret

__all__ = ["BareResult", "bare_loop", "provider_loop"]


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


async def _drive(rows: int, concurrency: int, send: Callable[[int], Awaitable[bool]],
                 timeout_s: float) -> BareResult:
    """Send rows 0..rows-1 with ``concurrency`` workers; ``send(n)`` says whether it worked."""
    next_row = errors = sent = 0
    deadline = time.monotonic() + timeout_s

    async def worker() -> None:
        nonlocal next_row, errors, sent
        while next_row < rows and time.monotonic() < deadline:
            n = next_row
            next_row += 1
            if await send(n):
                sent += 1
            else:
                errors += 1

    cpu0, started = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu0
    return BareResult(sends=sent, errors=errors, wall_s=wall_s, cpu_s=cpu_s)


def _text(n: int) -> str:
    return f"Hello N{n}, your plan is ready."


async def bare_loop(
    xquik_url: str, *, rows: int, concurrency: int, senders: int = 1, first_id: int = 10_000_000,
    key_prefix: str = "bare", timeout_s: float = 600.0,
) -> BareResult:
    """Send ``rows`` DMs as fast as ``concurrency`` workers can; returns the rate and CPU."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(n: int) -> bool:
            body = orjson.dumps({"account": f"bench{n % senders:03d}", "text": _text(n)})
            headers = {"x-api-key": API_KEY, "Accept": "application/json",
                       "Idempotency-Key": f"{key_prefix}-{n}",
                       "Content-Type": "application/json"}
            async with session.post(f"{xquik_url}/x/dm/{first_id + n}", data=body,
                                    headers=headers) as response:
                answer = orjson.loads(await response.read())
            return response.status == 200 and isinstance(answer, dict)

        return await _drive(rows, concurrency, send, timeout_s)


async def provider_loop(
    xquik_url: str, *, rows: int, concurrency: int, senders: int = 1, first_id: int = 10_000_000,
    key_prefix: str = "prov", timeout_s: float = 600.0,
) -> BareResult:
    """:func:`bare_loop` through ``XquikProvider.send``, with the engine's pool size."""
    http = HttpClient.open(concurrency=concurrency, request_timeout_s=30.0)
    provider = XquikProvider(http=http, base_url=xquik_url, api_key=Secret(API_KEY),
                             poll_timeout_s=60.0)
    auths = [SenderAuth(account=f"bench{i:03d}") for i in range(senders)]

    def on_sent(at_s: float) -> None:
        del at_s  # the engine moves a rate slot here; the hook's cost is what is measured

    async def send(n: int) -> bool:
        request = DmRequest(recipient_id=str(first_id + n), sender=auths[n % senders],
                            text=_text(n), idempotency_key=f"{key_prefix}-{n}", on_sent=on_sent)
        return (await provider.send(request)).ok

    try:
        return await _drive(rows, concurrency, send, timeout_s)
    finally:
        await provider.aclose()
