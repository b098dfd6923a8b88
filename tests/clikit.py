"""Running the real ``bulkdm`` CLI in a subprocess against a sandbox served by the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bulkdm.rates import Rate
from bulkdm.sandbox import Delivery

API_KEY = "xq_test_key_4f9a"
ENV = {"XQUIK_API_KEY": API_KEY, "GETXAPI_API_KEY": API_KEY}


@dataclass(frozen=True, kw_only=True)
class Done:
    code: int
    stdout: str
    stderr: str


def write_campaign(folder: Path, rows: Sequence[Mapping[str, object]], *, url: str,
                   provider: str = "xquik", senders: Sequence[str] = ("alice",),
                   sender_rate: str = "1000/1s", extra: str = "") -> Path:
    campaign = folder / "camp.jsonl"
    campaign.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    sender_blocks = "".join(
        f'[[senders]]\naccount = "{s}"\nrate = "{sender_rate}"\n'
        + (f'auth_token_env = "TOK_{s.upper()}"\n' if provider == "getxapi" else "")
        for s in senders)
    (folder / "camp.toml").write_text(
        f'[campaign]\nname = "camp"\ntemplate = "Hello {{first_name}}"\n\n'
        f'[provider]\nname = "{provider}"\nbase_url = "{url}"\nrate = "100000/1s"\n'
        f'api_key_env = "{"XQUIK_API_KEY" if provider == "xquik" else "GETXAPI_API_KEY"}"\n\n'
        f"{sender_blocks}\n[retry]\nmax_attempts = 6\nbase_delay = \"10ms\"\n"
        f'max_delay = "100ms"\nsettle_after = "50ms"\n\n[run]\nconcurrency = 8\n{extra}\n',
        encoding="utf-8")
    return campaign


def env_for(senders: Sequence[str] = ("alice",)) -> dict[str, str]:
    env = {**os.environ, **ENV, "PYTHONUNBUFFERED": "1"}
    env.update({f"TOK_{s.upper()}": f"tok-{s}" for s in senders})
    return env


async def start(*args: str, env: Mapping[str, str] | None = None,
                preexec_fn: Callable[[], None] | None = None) -> asyncio.subprocess.Process:
    """``preexec_fn`` runs in the child before ``bulkdm`` starts (e.g. to set an rlimit)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkdm", *args, env=dict(env or env_for()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=preexec_fn)


async def finish(process: asyncio.subprocess.Process, *, timeout_s: float = 60.0) -> Done:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    assert process.returncode is not None
    return Done(code=process.returncode, stdout=stdout.decode(), stderr=stderr.decode())


async def bulkdm(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60.0,
                 preexec_fn: Callable[[], None] | None = None) -> Done:
    return await finish(await start(*args, env=env, preexec_fn=preexec_fn), timeout_s=timeout_s)


@contextlib.asynccontextmanager
async def sandbox_process(*flags: str) -> AsyncIterator[dict[str, str]]:
    """``python -m bulkdm.sandbox FLAGS`` in a process of its own, as a provider is: its own
    event loop and collector, so the test process's pauses (a full collection of its heap)
    never delay its stamps. Yields the URLs it prints (``sandbox``, ``xquik``, ``getxapi``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkdm.sandbox", "--host", "127.0.0.1", "--port", "0", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        urls: dict[str, str] = {}
        while len(urls) < 3:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=20.0)
            assert line, f"the sandbox ended before it served (exit code {process.returncode})"
            name, _, url = line.decode().strip().partition(" ")
            urls[name] = url.strip()
        yield urls
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10.0)


async def delivered(root_url: str) -> list[Delivery]:
    """The deliveries a sandbox recorded (``GET /_sandbox/ledger``)."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"{root_url}/_sandbox/ledger") as answer:
        body = orjson.loads(await answer.read())
    return [Delivery(**d) for d in body["deliveries"]]


async def wait_for(ready: Callable[[], bool], *, timeout_s: float = 30.0,
                   process: asyncio.subprocess.Process | None = None) -> None:
    """Poll ``ready()`` every 2 ms until it holds, the process ends, or the time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not ready() and loop.time() < deadline:
        if process is not None and process.returncode is not None:
            return
        await asyncio.sleep(0.002)


async def kill_when(process: asyncio.subprocess.Process, ready: Callable[[], bool], *,
                    signum: int = signal.SIGKILL, timeout_s: float = 30.0) -> Done:
    """Send ``signum`` once ``ready()`` holds, then collect the process."""
    await wait_for(ready, timeout_s=timeout_s, process=process)
    if process.returncode is None:
        process.send_signal(signum)
    return await finish(process)


def handoff_lines(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the handoff file ends in a partial line"
    return [orjson.loads(line) for line in data.splitlines()]


def windows_over(ledger: Sequence[Delivery], rate: Rate) -> list[tuple[str, int]]:
    """(sender, count) for every sliding window of ``rate`` that holds more than allowed."""
    over = []
    by_sender: dict[str, list[float]] = {}
    for delivery in ledger:
        by_sender.setdefault(delivery.sender, []).append(delivery.at_s)
    for sender, times in by_sender.items():
        times.sort()
        start = 0
        for end, at_s in enumerate(times):
            while times[start] <= at_s - rate.period_s:
                start += 1
            if end - start + 1 > rate.count:
                over.append((sender, end - start + 1))
    return over
