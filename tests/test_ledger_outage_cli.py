"""A PostgreSQL account ledger lost mid-run: the real CLI in a subprocess, a real server of the
test's own (it is stopped or frozen here, so never the session's), the sandbox over 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from bulkdm.rates import Rate
from bulkdm.sandbox import running_sandbox
from tests.clikit import (
    Done,
    bulkdm,
    delivered,
    env_for,
    finish,
    start,
    windows_over,
    write_campaign,
)
from tests.conftest import _PostgresServer

#: trust authentication ignores it: it is here to be masked in every message
PASSWORD = "hunter2"


@pytest.fixture
def own_postgres() -> Iterator[tuple[_PostgresServer, str]]:
    """A PostgreSQL server for one test, with a password in its URL."""
    server = _PostgresServer()
    try:
        url = server.start()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server, url.replace("bulkdm@", f"bulkdm:{PASSWORD}@")
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # a test stopped it
            server.stop()


def server_pids(server: _PostgresServer) -> list[int]:
    """The postmaster and its children (the backends serving the run)."""
    main = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True,
                              check=False, timeout=10).stdout.split()
    return [main, *map(int, children)]


async def run_until_sent(tmp_path: Path, url: str, ledger: str) -> asyncio.subprocess.Process:
    """A run of 40 rows on a ledger, once it has sent three (the ledger then in use)."""
    rows = [{"recipient_id": str(7000 + i), "first_name": "x"} for i in range(40)]
    campaign = write_campaign(tmp_path, rows, url=url, sender_rate="2/1s",
                              extra='progress_interval = "1s"\n')
    env = {**env_for(), "BULKDM_LEDGER": ledger}
    return await start("run", str(campaign), "--progress", "plain", env=env)


async def wait_for_sends(root_url: str, count: int) -> None:
    for _ in range(2000):
        if len(await delivered(root_url)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} sends in 20 s")


@contextlib.asynccontextmanager
async def ended_at_exit(
    process: asyncio.subprocess.Process,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The process, killed on the way out if it still runs (a test that failed midway)."""
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def assert_stopped_by_ledger(done: Done, why: str) -> None:
    assert done.code == 4, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "asyncpg" not in done.stderr, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    masked = "postgresql://bulkdm:***@127.0.0.1:"
    stops = [line for line in done.stderr.splitlines() if line.startswith("bulkdm: stopped: ")]
    assert len(stops) == 1 and masked in stops[0] and why in stops[0], done.stderr
    assert "run the same command to resume" in stops[0]
    assert "interrupted after" in done.stdout, done.stdout
    assert f"note: {masked}" in done.stdout and "To resume: bulkdm run " in done.stdout
    assert "(stopped: the account ledger is unreachable)" in done.stdout, done.stdout


@pytest.mark.timeout(120)
async def test_a_hung_postgres_ledger_stops_the_run_within_its_timeout(
    tmp_path: Path, own_postgres: tuple[_PostgresServer, str],
) -> None:
    # a hung server (or a cut network) held the run for ever, past Ctrl-C and SIGTERM too
    server, ledger = own_postgres
    async with running_sandbox() as sb:
        frozen: list[int] = []
        async with ended_at_exit(await run_until_sent(tmp_path, sb.xquik_url, ledger)) as process:
            try:
                await wait_for_sends(sb.root_url, 3)
                frozen = server_pids(server)  # the backends serving the run among them
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                frozen_at = time.monotonic()
                done = await finish(process, timeout_s=45.0)
                took_s = time.monotonic() - frozen_at
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
        sent = len(await delivered(sb.root_url))
    assert_stopped_by_ledger(done, "the account ledger is unreachable (no answer within 10s)")
    assert took_s < 30.0, took_s  # the 10 s timeout, and the connection's release after it
    assert sent < 40


@pytest.mark.timeout(120)
async def test_a_stopped_postgres_ledger_stops_the_run_with_one_line(
    tmp_path: Path, own_postgres: tuple[_PostgresServer, str],
) -> None:
    # the server stopped mid-run: asyncpg's tracebacks, exit 1, and no 'error:' line
    server, ledger = own_postgres
    async with running_sandbox() as sb, ended_at_exit(
            await run_until_sent(tmp_path, sb.xquik_url, ledger)) as process:
        await wait_for_sends(sb.root_url, 3)
        await asyncio.to_thread(server._run, "pg_ctl", "-D", str(server.folder / "data"),
                                "-m", "fast", "-w", "stop")
        done = await finish(process, timeout_s=45.0)
    assert_stopped_by_ledger(done, "the account ledger is unreachable")
    resumed = done.stdout.split("To resume: ", 1)[1].splitlines()[0]
    assert "--checkpoint" in resumed and "--out" in resumed


@pytest.mark.timeout(120)
async def test_until_done_waits_out_a_postgres_ledger_stopped_and_started_again(
    tmp_path: Path, own_postgres: tuple[_PostgresServer, str],
) -> None:
    """The ledger's server stops mid-run, and a start while it is still down fails too; with
    --until-done the run waits (outage_wait) instead of ending, and once the server is back it
    opens the ledger again and sends the rest: each DM once, no sender window over."""
    server, ledger = own_postgres
    rows = [{"recipient_id": str(7100 + i), "first_name": "x"} for i in range(20)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="4/1s",
                                  extra='outage_wait = "500ms"')
        env = {**env_for(), "BULKDM_LEDGER": ledger}
        async with ended_at_exit(await start("run", str(campaign), "--until-done",
                                             "--progress", "none", env=env)) as process:
            await wait_for_sends(sb.root_url, 3)
            await asyncio.to_thread(server.halt)
            seen: list[str] = []
            for _ in range(2):  # the stop, then a start that found it still down
                await _wait_line(process, seen)
            status = await bulkdm("status", str(campaign), "--json")
            await asyncio.to_thread(server.resume)
            done = await finish(process, timeout_s=60.0)
        delivered = Counter(d.recipient_id for d in sb.ledger)
        ledger_sends = list(sb.ledger)
    out = "".join(seen) + done.stdout
    assert done.code == 0, out + done.stderr
    assert "bulkdm: stopped:" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert PASSWORD not in out + done.stderr
    # 500 ms after the stop (it had sent), and after the start that sent nothing
    assert len(re.findall(r"trying again at \S+ \S+ \S+ \(in 0s\)", "".join(seen))) == 2
    senders = orjson.loads(status.stdout)["senders"]
    assert {s["state"] for s in senders} == {"waiting"}, senders
    assert {s["reason"].split(";")[0] for s in senders} == {
        "for the account ledger to answer again"}
    assert delivered == Counter(str(r["recipient_id"]) for r in rows)  # each once
    assert windows_over(ledger_sends, Rate(count=4, period_s=1.0)) == []


async def _wait_line(process: asyncio.subprocess.Process, seen: list[str]) -> None:
    """Read the run's output up to its next line saying it waits out the ledger's outage."""
    assert process.stdout is not None
    wait = "--until-done: the account ledger is unreachable; trying again at"
    while wait not in (line := (await asyncio.wait_for(process.stdout.readline(), 45)).decode()):
        assert line, "".join(seen)  # it ended instead
        seen.append(line)
    seen.append(line)
