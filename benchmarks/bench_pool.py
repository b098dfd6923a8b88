"""Target 3 of issue 13: a pool of thousands of senders, each at a slow rate.

* Busy pool: N senders at ``1/2s`` each (2,000 in the full run: about 950 sends/s in all with
  the rate guard, 1 per 2.1 s a sender) against a sandbox answering after 300 ms, stopped after
  the duration. The engine runs in a process of its own (``engine_proc.py``, the CLI's wiring),
  so its peak RSS and CPU are its own. Pace and windows over come from the sandbox ledger (the
  same computation as the ``pace`` section); CPU is the engine process's user + system time
  from the first delivery to the stop, over that wall time (1.0 = one core).
* Waiting pool: M senders at ``1/15m`` (10,000 in the full run), two rows each: every sender
  sends once, then waits a quarter of an hour for its next slot. Once the ledger shows every
  first send, the engine's CPU is read over a quiet span: what a mostly waiting run costs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    DiskProbe,
    SandboxProc,
    Section,
    Target,
    cli_loop,
    finish_engine,
    pace_of,
    plan_checkpoint,
    process_cpu_s,
    run_queue_wait_s,
    sandbox_process,
    sender_names,
    start_engine,
    write_campaign,
    write_settings,
)
from bulkdm.ratelimit import default_guard_s
from bulkdm.rates import Rate

__all__ = ["PoolSizes", "run_pool"]

PACE_GOAL = 0.97
RSS_GOAL_MB = 250.0
CPU_GOAL = 0.7
BUSY_RATE = Rate(count=1, period_s=2.0)
WAIT_RATE = "1/15m"


@dataclass(frozen=True, kw_only=True)
class PoolSizes:
    senders: int
    duration_s: float
    concurrency: int
    #: the waiting pool: senders at 1/15m, and how long its quiet span is measured
    wait_senders: int
    wait_s: float


def run_pool(section: Section, sizes: PoolSizes, folder: Path) -> dict[str, float]:
    figures = _busy(section, sizes, folder)
    figures.update(_waiting(section, sizes, folder))
    return figures


@dataclass(frozen=True, kw_only=True)
class _Run:
    process: subprocess.Popen[bytes]
    sandbox: SandboxProc


def _start(folder: Path, tag: str, rows: int, senders: list[str], rate: str,
           sandbox: SandboxProc, concurrency: int) -> _Run:
    campaign, settings = folder / f"{tag}.jsonl", folder / f"{tag}.toml"
    checkpoint = folder / f"{tag}.sqlite"
    write_campaign(campaign, rows)
    write_settings(settings, base_url=sandbox.xquik_url, senders=senders, sender_rate=rate,
                   concurrency=concurrency)
    plan_checkpoint(campaign, settings, checkpoint)
    process = start_engine(campaign, settings, checkpoint, folder / f"{tag}.handoff.jsonl")
    return _Run(process=process, sandbox=sandbox)


def _wait_for(run: _Run, deliveries: int, timeout_s: float) -> float:
    """Poll the ledger until it holds ``deliveries``; the monotonic time it did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run.process.poll() is not None:
            raise RuntimeError(f"the engine ended early: {run.process.stderr.read()[-2000:]!r}"
                               if run.process.stderr else "the engine ended early")
        if run.sandbox.ledger_total() >= deliveries:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"the ledger did not reach {deliveries} in {timeout_s:g} s")


def _stop(run: _Run) -> dict[str, float]:
    """SIGTERM (as Ctrl-C), then the engine's report line: exit code, CPU, peak RSS."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.process.pid, signal.SIGTERM)
    return finish_engine(run.process)


def _busy(section: Section, sizes: PoolSizes, folder: Path) -> dict[str, float]:
    guarded_s = BUSY_RATE.period_s + default_guard_s(BUSY_RATE)
    configured = sizes.senders * BUSY_RATE.count / guarded_s
    rows = int(configured * sizes.duration_s * 1.2) + sizes.senders
    names = sender_names(sizes.senders)
    with sandbox_process("--latency", "300ms") as sandbox:
        run = _start(folder, "pool", rows, names, f"{BUSY_RATE.count}/{BUSY_RATE.period_s:g}s",
                     sandbox, sizes.concurrency)
        try:
            with DiskProbe(folder) as disk:
                first = _wait_for(run, 1, timeout_s=300)
                cpu_first, sandbox_first = process_cpu_s(run.process.pid), sandbox.cpu_s()
                queued_first = run_queue_wait_s(run.process.pid)
                time.sleep(max(0.0, first + sizes.duration_s - time.monotonic()))
                cpu_s = process_cpu_s(run.process.pid) - cpu_first
                queued_s = run_queue_wait_s(run.process.pid) - queued_first
                sandbox_cores = (sandbox.cpu_s() - sandbox_first) / (time.monotonic() - first)
                wall_s = time.monotonic() - first
        finally:
            report = _stop(run)
        ledger = sandbox.ledger()
    pace = pace_of(ledger, names, duration_s=sizes.duration_s, count=BUSY_RATE.count,
                   period_s=BUSY_RATE.period_s)
    ratio, cores, peak_mb = pace.achieved / configured, cpu_s / wall_s, report["peak_rss_mb"]
    label = (f"{sizes.senders:,} senders x 1/2s (with its guard: 1 per {guarded_s:g} s), 300 ms "
             f"latency, {sizes.duration_s:g} s, {cli_loop()}")
    section.add(Target(
        key="pool-pace", label=f"{label}: achieved / configured",
        figure=f"{ratio:.3f}x ({pace.achieved:.1f} of {configured:.1f} sends/s; "
               f"{pace.delivered} delivered, slowest sender {pace.slowest}; {pace.shape()}; "
               f"{disk.summary()})",
        goal=f">= {PACE_GOAL}", passed=ratio >= PACE_GOAL))
    section.add(Target(
        key="pool-windows", label="deliveries closing a 2 s window over a sender's 1 (ledger)",
        figure=str(pace.over), goal="0", passed=pace.over == 0))
    section.add(Target(
        key="pool-rss", label=f"{label}: engine process peak RSS", figure=f"{peak_mb:.1f} MB",
        goal=f"< {RSS_GOAL_MB:g} MB", passed=peak_mb < RSS_GOAL_MB))
    section.add(Target(
        key="pool-cpu", label=f"{label}: engine process CPU from the first delivery to the stop",
        figure=f"{cores:.2f} of one core ({cpu_s:.1f} s over {wall_s:.1f} s; the sandbox "
               f"process: {sandbox_cores:.2f}; the engine's main thread runnable but waiting "
               f"for a CPU: {queued_s / wall_s:.2f} of the time)",
        goal=f"< {CPU_GOAL:g}", passed=cores < CPU_GOAL))
    return {"pool_pace": ratio, "pool_over": float(pace.over), "pool_rss_mb": peak_mb,
            "pool_cores": cores}


def _waiting(section: Section, sizes: PoolSizes, folder: Path) -> dict[str, float]:
    names = sender_names(sizes.wait_senders)
    with sandbox_process() as sandbox:
        run = _start(folder, "waiting", 2 * sizes.wait_senders, names, WAIT_RATE, sandbox,
                     sizes.concurrency)
        try:
            started = time.monotonic()
            sent = _wait_for(run, sizes.wait_senders, timeout_s=300)
            time.sleep(1.0)  # the last outcomes' commits and handoff lines
            cpu_quiet = process_cpu_s(run.process.pid)
            quiet = time.monotonic()
            time.sleep(sizes.wait_s)
            cores = (process_cpu_s(run.process.pid) - cpu_quiet) / (time.monotonic() - quiet)
            extra = sandbox.ledger_total() - sizes.wait_senders
        finally:
            report = _stop(run)
    peak_mb = report["peak_rss_mb"]
    section.add(Target(
        key="pool-waiting",
        label=f"{sizes.wait_senders:,} senders x {WAIT_RATE}, each sent once, then waiting: "
              f"engine process CPU over {sizes.wait_s:g} s, peak RSS",
        figure=f"{cores:.3f} of one core; {peak_mb:.1f} MB; first sends of all senders in "
               f"{sent - started:.1f} s; sends while waiting: {extra}",
        goal="report (waiting should cost close to nothing)"))
    return {"wait_cores": cores, "wait_rss_mb": peak_mb}
