"""Shared pieces of the benchmark suite: the sandbox process, campaign files, plans, results.

Everything here talks to 127.0.0.1 only. A sandbox is a child process in its own process group,
always killed (the whole group) when its ``with`` block ends, whatever happened inside.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Self, TypeVar

import orjson

from bulkdm import loops

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
API_KEY = "bench-key"
API_KEY_ENV = "BULKDM_BENCH_API_KEY"
#: a rate so high it never binds (the overhead runs), as the settings file writes it
UNBOUNDED_RATE = "1000000000/1s"
_T = TypeVar("_T")


# -- results ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Target:
    """One line of the report: a measured figure, its goal and whether it was met.

    ``passed`` is None for an informational figure (no goal).
    """

    key: str
    label: str
    figure: str
    goal: str = ""
    passed: bool | None = None
    detail: str = ""

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[self.passed]
        goal = f"  (goal {self.goal})" if self.goal else ""
        detail = f"\n      {self.detail}" if self.detail else ""
        return f"[{verdict}] {self.key:<22} {self.label}: {self.figure}{goal}{detail}"


@dataclass(kw_only=True)
class Section:
    name: str
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, target: Target) -> Target:
        self.targets.append(target)
        print(target.line(), flush=True)
        return target

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"       {text}", flush=True)


# -- event loops -------------------------------------------------------------------------------


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``asyncio`` (the default loop) or ``uvloop``; None means asyncio's own default."""
    if name == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    if name != "asyncio":
        raise ValueError(f"unknown event loop {name!r}")
    return None


def has_uvloop() -> bool:
    return loops.loop_factory({}) is not None


def cli_loop() -> str:
    """The event loop ``bulkdm run`` and ``engine_proc.py`` run on here (``bulkdm.loops``)."""
    return "asyncio" if loops.loop_factory() is None else "uvloop"


def run_on(loop: str, main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` to completion on a fresh event loop of the kind ``loop`` names."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


# -- CPU accounting ------------------------------------------------------------------------------


def thread_cpu_s(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process (Linux ``/proc``); 0 elsewhere."""
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``); 0 elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait_s(pid: int) -> float:
    """Seconds the main thread of process ``pid`` has spent runnable but waiting for a CPU
    (Linux ``/proc/PID/schedstat``; 0 elsewhere): what a shared machine held it back."""
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return 0.0
    return int(fields[1]) / 1e9


# -- the sandbox process ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SandboxProc:
    root_url: str
    xquik_url: str
    process: subprocess.Popen[bytes]

    def ledger(self, *, page_timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Every delivery so far, read over ``GET /_sandbox/ledger`` a page at a time."""
        deliveries: list[dict[str, Any]] = []
        for _ in range(10_000):  # bounded: each page returns everything after the offset
            url = f"{self.root_url}/_sandbox/ledger?offset={len(deliveries)}"
            with urllib.request.urlopen(url, timeout=page_timeout_s) as answer:
                page = orjson.loads(answer.read())
            deliveries.extend(page["deliveries"])
            if not page["deliveries"] or len(deliveries) >= page["total"]:
                break
        return deliveries

    def ledger_total(self) -> int:
        # offset past any real length: the page is empty, "total" is the count
        url = f"{self.root_url}/_sandbox/ledger?offset=999999999999"
        with urllib.request.urlopen(url, timeout=10.0) as answer:
            return int(orjson.loads(answer.read())["total"])

    def cpu_s(self) -> float:
        """CPU seconds the sandbox process has used so far (Linux ``/proc``)."""
        return process_cpu_s(self.process.pid)


@contextlib.contextmanager
def sandbox_process(*flags: str, start_timeout_s: float = 20.0) -> Iterator[SandboxProc]:
    """``python -m bulkdm.sandbox --port 0 FLAGS`` in its own process group, killed on exit."""
    command = [PYTHON, "-m", "bulkdm.sandbox", "--host", "127.0.0.1", "--port", "0", *flags]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        urls = _read_urls(process, start_timeout_s)
        yield SandboxProc(root_url=urls["sandbox"], xquik_url=urls["xquik"], process=process)
    finally:
        _kill_group(process)


def _read_urls(process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, str]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    urls: dict[str, str] = {}
    while len(urls) < 3 and time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        name, _, url = line.strip().partition(" ")
        if url.strip().startswith("http://127.0.0.1:"):
            urls[name] = url.strip()
    if len(urls) < 3:
        raise RuntimeError(f"the sandbox did not start (exit code {process.poll()})")
    return urls


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5.0)
    if process.stdout is not None:
        process.stdout.close()


# -- campaigns, settings and plans -----------------------------------------------------------


def sender_names(count: int) -> list[str]:
    return [f"bench{n:03d}" for n in range(count)]


def write_campaign(path: Path, rows: int, *, first_id: int = 10_000_000) -> None:
    """A JSONL campaign of ``rows`` distinct numeric recipients (no lookups needed)."""
    chunk = 50_000
    with path.open("wb") as out:
        for start in range(0, rows, chunk):
            out.write(b"".join(
                orjson.dumps({"recipient_id": str(first_id + n), "first_name": f"N{n}"})
                + b"\n" for n in range(start, min(rows, start + chunk))))


def write_settings(
    path: Path, *, base_url: str, senders: Sequence[str],
    sender_rate: str | Sequence[str] = UNBOUNDED_RATE, key_rate: str = UNBOUNDED_RATE,
    concurrency: int = 64, synchronous: str = "FULL", ledger: bool = True,
    name: str = "bench", shared_ledger: Path | None = None,
) -> None:
    """The settings file of a benchmark campaign (Xquik, API key from ``API_KEY_ENV``), with a
    fresh account ledger beside it (``ledger=False``: none, budgets per campaign only;
    ``shared_ledger``: that ledger file, which several campaigns' settings name)."""
    rates = [sender_rate] if isinstance(sender_rate, str) else list(sender_rate)
    rate = ", ".join(f'"{r}"' for r in rates)
    ledger_path = shared_ledger or path.with_suffix(".ledger.sqlite")
    if shared_ledger is None:
        for stale in (ledger_path, *(Path(f"{ledger_path}{x}") for x in ("-wal", "-shm"))):
            stale.unlink(missing_ok=True)
    blocks = "".join(
        f'[[senders]]\naccount = "{s}"\nrate = [{rate}]\ndaily_cap = 2000000000\n\n'
        for s in senders)
    path.write_text(
        f'[campaign]\nname = "{name}"\ntemplate = "Hello {{first_name}}, your plan is ready."\n\n'
        f'[provider]\nname = "xquik"\nbase_url = "{base_url}"\nrate = "{key_rate}"\n'
        f'read_rate = "{UNBOUNDED_RATE}"\napi_key_env = "{API_KEY_ENV}"\n'
        'request_timeout = "30s"\n\n'
        f"{blocks}"
        '[retry]\nmax_attempts = 5\nbase_delay = "50ms"\nmax_delay = "1s"\n\n'
        f'[run]\nconcurrency = {concurrency}\nsynchronous = "{synchronous}"\n'
        'stop_grace = "10s"\nprogress_interval = "1000s"\n\n'
        f'[accounts]\nledger = "{ledger_path if ledger else "off"}"\n',
        encoding="utf-8")


def bench_env() -> dict[str, str]:
    return {**os.environ, API_KEY_ENV: API_KEY, "PYTHONUNBUFFERED": "1"}


def plan_checkpoint(campaign: Path, settings: Path, checkpoint: Path, *,
                    timeout_s: float = 600.0) -> float:
    """``bulkdm plan`` in a subprocess; returns its wall time in seconds."""
    command = [PYTHON, "-m", "bulkdm", "plan", str(campaign), "--config", str(settings),
               "--checkpoint", str(checkpoint), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=timeout_s, env=bench_env())
    if done.returncode != 0:
        raise RuntimeError(f"bulkdm plan failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - started


def copy_checkpoint(source: Path, target: Path) -> None:
    """A fresh copy of a planned checkpoint (the plan is closed, so it is one file), made a
    campaign of its own: bulkdm refuses a copy of a campaign's checkpoint while the original
    is there (both would send the rows left), so the copy gets a new identity and forgets
    where the plan was made."""
    for suffix in ("", "-wal", "-shm"):
        stale = Path(str(target) + suffix)
        if stale.exists():
            stale.unlink()
    shutil.copyfile(source, target)
    with contextlib.closing(sqlite3.connect(target)) as db, db:
        db.execute("DELETE FROM meta WHERE key LIKE 'checkpoint.%'")
        db.execute("UPDATE meta SET value = ? WHERE key = 'plan.campaign_id'",
                   (uuid.uuid4().hex,))


def windows_over(times_s: Sequence[float], count: int, period_s: float) -> int:
    """How many deliveries close a window of ``period_s`` holding more than ``count``.

    ``times_s`` ascending. A window is half-open, ``(t - period_s, t]``, as a provider measures it.
    """
    over, start = 0, 0
    for end, at_s in enumerate(times_s):
        while times_s[start] <= at_s - period_s:
            start += 1
        if end - start + 1 > count:
            over += 1
    return over


@dataclass(frozen=True, kw_only=True)
class Pace:
    """What a ledger shows of a paced run: achieved rate and deliveries over a sender's limit."""

    achieved: float
    over: int
    delivered: int
    slowest: int
    #: deliveries in each whole second of the counted span: the median and the fewest, and the
    #: longest time without any delivery there (a stall shows as a low minimum and a long gap;
    #: an even shortfall as a low median)
    median_per_s: float = 0.0
    fewest_per_s: int = 0
    longest_gap_s: float = 0.0

    def shape(self) -> str:
        """The span's deliveries a second and its longest gap, for a target line."""
        return (f"a second: median {self.median_per_s:g}, fewest {self.fewest_per_s}; "
                f"longest gap {self.longest_gap_s:.2f} s")


class DiskProbe:
    """Times an fsync of a small file in ``folder`` every ``every_s`` while a run goes on, from a
    thread of the process it runs in. Every send waits for its intent's commit (an fsync): a
    stalled run whose probe is slow stalled on the disk, or, with the engine in this process,
    on a thread that kept the GIL (the limiter's busy poll, benchmarks/README.md sixth pass)."""

    def __init__(self, folder: Path, every_s: float = 0.25) -> None:
        self._path = folder / "disk-probe.bin"
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-probe", daemon=True)
        self.fsyncs_s: list[float] = []

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._path.unlink(missing_ok=True)

    def _run(self) -> None:
        with self._path.open("wb") as file:
            while not self._stop.wait(self._every_s):
                self.fsyncs_s.append(_timed_fsync(file))

    def summary(self) -> str:
        """The slowest fsync and how many took over half a second, for a target line."""
        slow = sum(1 for s in self.fsyncs_s if s > 0.5)
        return (f"disk: a 4 KB fsync every {self._every_s:g} s, slowest "
                f"{max(self.fsyncs_s, default=0.0):.2f} s, {slow} over 0.5 s")


def settle_disk(folder: Path, *, quick_s: float = 0.02, timeout_s: float = 60.0) -> str:
    """Write back what is dirty (``os.sync``), then wait until an fsync is quick again (three in
    a row under ``quick_s``): a section measures bulkdm, not the previous section's
    writeback."""
    started = time.perf_counter()
    os.sync()
    path, quick = folder / "disk-settle.bin", 0
    with path.open("wb") as file:
        while quick < 3 and time.perf_counter() - started < timeout_s:
            quick = quick + 1 if _timed_fsync(file) < quick_s else 0
            time.sleep(0.05)
    path.unlink()
    state = "settled" if quick >= 3 else "still slow"
    return f"disk {state} after {time.perf_counter() - started:.1f} s (sync, then fsyncs)"


def _timed_fsync(file: BinaryIO) -> float:
    """Seconds to append 4 KB to ``file`` and fsync it."""
    started = time.perf_counter()
    file.write(b"\0" * 4096)
    file.flush()
    os.fsync(file.fileno())
    return time.perf_counter() - started


def pace_of(ledger: Sequence[dict[str, Any]], senders: Sequence[str], *, duration_s: float,
            count: int, period_s: float) -> Pace:
    """Deliveries between ``t0 + 1 s`` and ``t0 + duration_s - 1 s`` over that span (``t0`` the
    first delivery), and per sender the deliveries that close a ``(t - period_s, t]`` window
    holding more than ``count`` (the ledger's times, as the sandbox stamped them)."""
    times = sorted(float(d["at_s"]) for d in ledger)
    start_s, end_s = times[0] + 1.0, times[0] + duration_s - 1.0
    span = times[bisect.bisect_left(times, start_s):bisect.bisect_left(times, end_s)]
    by_sender: dict[str, list[float]] = {}
    for delivery in ledger:
        by_sender.setdefault(str(delivery["sender"]), []).append(float(delivery["at_s"]))
    over = sum(windows_over(sorted(t), count, period_s) for t in by_sender.values())
    slowest = min(len(by_sender.get(name, [])) for name in senders)
    seconds = [0] * max(1, int(end_s - start_s))
    for t in span:
        seconds[min(len(seconds) - 1, int(t - start_s))] += 1
    gaps = [b - a for a, b in itertools.pairwise([start_s, *span, end_s])]
    return Pace(achieved=len(span) / (end_s - start_s), over=over, delivered=len(ledger),
                slowest=slowest, median_per_s=statistics.median(seconds),
                fewest_per_s=min(seconds), longest_gap_s=max(gaps))


def start_engine(campaign: Path, settings: Path, checkpoint: Path, out: Path, *,
                 timeout_s: float = 900.0) -> subprocess.Popen[bytes]:
    """``engine_proc.py`` (a ``bulkdm run`` in a process of its own) in its own process group;
    stop it with SIGTERM to the group, then :func:`finish_engine`."""
    command = [PYTHON, str(REPO / "benchmarks" / "engine_proc.py"), str(campaign),
               "--config", str(settings), "--checkpoint", str(checkpoint), "--out", str(out),
               "--timeout-s", f"{timeout_s:g}"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=bench_env(), start_new_session=True)


def finish_engine(process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> dict[str, float]:
    """Wait for an ``engine_proc.py`` process (killed past ``timeout_s``); its report line."""
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    lines = stdout.decode().strip().splitlines()
    # a run that finished before the stop arrived may be hit by SIGTERM on its way out: its
    # report line is there all the same
    if process.returncode not in (0, -signal.SIGTERM) or not lines:
        raise RuntimeError(f"engine_proc.py failed ({process.returncode}): "
                           f"{stderr.decode()[-2000:]}")
    report: dict[str, float] = orjson.loads(lines[-1])
    return report
