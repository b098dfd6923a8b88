"""Target 2: every sender kept at its full allowed pace, and never over it.

N senders, each allowed ``5/1s``, against a sandbox answering after 200 ms. The sandbox enforces
no limit itself (so its ledger shows exactly what the engine sent); the run is stopped after the
duration through the stop event, as Ctrl-C would.

Achieved rate: deliveries in the ledger between ``t0 + 1 s`` and ``t0 + duration - 1 s``
divided by that span, with ``t0`` the first delivery. The first second and the stop's last
second are left out so neither the start nor the stop counts for or against the engine.
Windows over: for each sender, deliveries (as the sandbox timed them) that close any
``(t - 1 s, t]`` window holding more than 5.

The configured pace counts the rate guard (``[run] rate_guard``, 100 ms by default): a sender
allowed 5 per second keeps 5 in any 1.1 s, so the goal is a share of 5 per 1.1 s.

Receiver jitter: three senders at ``40/1s`` (with a looser ``400/1s`` beside it, so each
sender's 40 leave in a burst and every window fills from its start), ``synchronous = NORMAL``
(a send leaves as soon as its slot is granted), against a sandbox that waits 0-50 ms before it
handles, and stamps, each request (``--arrival-jitter 50ms``); the run goes to the end. Windows
over: deliveries that close a 1 s window of a sender holding more than 40.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    DiskProbe,
    Section,
    Target,
    pace_of,
    plan_checkpoint,
    run_on,
    sandbox_process,
    sender_names,
    windows_over,
    write_campaign,
    write_settings,
)
from benchmarks.engine_inproc import run_engine
from bulkdm.ratelimit import default_guard_s
from bulkdm.rates import Rate

__all__ = ["PaceSizes", "run_pace"]

RATE_GOAL = 0.97
PER_SENDER = 5
PERIOD_S = 1.0


JITTER_SENDERS = 3
JITTER_RATE = Rate(count=40, period_s=1.0)
JITTER_MS = 50


@dataclass(frozen=True, kw_only=True)
class PaceSizes:
    senders: int
    duration_s: float
    concurrency: int
    #: rows of the receiver-jitter run (three senders at 40/1s)
    jitter_rows: int


def run_pace(section: Section, sizes: PaceSizes, folder: Path) -> dict[str, float]:
    figures = _full_pace(section, sizes, folder)
    figures["jitter_over"] = float(_jitter_windows(section, sizes, folder))
    return figures


def _full_pace(section: Section, sizes: PaceSizes, folder: Path) -> dict[str, float]:
    guarded_s = PERIOD_S + default_guard_s(Rate(count=PER_SENDER, period_s=PERIOD_S))
    configured = sizes.senders * PER_SENDER / guarded_s
    rows = int(configured * sizes.duration_s * 1.2) + 100
    campaign = folder / "pace.jsonl"
    write_campaign(campaign, rows)
    names = sender_names(sizes.senders)
    checkpoint = folder / "pace.sqlite"
    out = folder / "pace.handoff.jsonl"
    with sandbox_process("--latency", "200ms") as sandbox:
        settings = folder / "pace.toml"
        write_settings(settings, base_url=sandbox.xquik_url, senders=names,
                       sender_rate=f"{PER_SENDER}/{PERIOD_S:g}s", concurrency=sizes.concurrency)
        plan_checkpoint(campaign, settings, checkpoint)
        with DiskProbe(folder) as disk:
            result = run_on("asyncio", run_engine(campaign, settings, checkpoint, out,
                                                  stop_after_s=sizes.duration_s))
        ledger = sandbox.ledger()
    if not ledger:
        raise RuntimeError(f"no delivery in the pace run:\n{result.summary[-1500:]}")
    pace = pace_of(ledger, names, duration_s=sizes.duration_s, count=PER_SENDER,
                   period_s=PERIOD_S)
    achieved, over, slowest = pace.achieved, pace.over, pace.slowest
    ratio = achieved / configured
    section.add(Target(
        key="pace-rate",
        label=f"{sizes.senders} senders x {PER_SENDER}/1s (with its guard: {PER_SENDER} per "
              f"{guarded_s:g} s), 200 ms latency, {sizes.duration_s:g} s: achieved / configured",
        figure=f"{ratio:.3f}x ({achieved:.1f} of {configured:.1f} sends/s; "
               f"{len(ledger)} delivered, slowest sender {slowest}; {pace.shape()}; "
               f"{disk.summary()})",
        goal=f">= {RATE_GOAL}", passed=ratio >= RATE_GOAL))
    section.add(Target(
        key="pace-windows",
        label="deliveries closing a 1 s window over a sender's limit (sandbox ledger)",
        figure=str(over), goal="0", passed=over == 0))
    return {"pace_ratio": ratio, "pace_over": float(over)}


def _jitter_windows(section: Section, sizes: PaceSizes, folder: Path) -> int:
    campaign = folder / "jitter.jsonl"
    write_campaign(campaign, sizes.jitter_rows)
    names = sender_names(JITTER_SENDERS)
    checkpoint = folder / "jitter.sqlite"
    with sandbox_process("--arrival-jitter", f"{JITTER_MS}ms") as sandbox:
        settings = folder / "jitter.toml"
        write_settings(settings, base_url=sandbox.xquik_url, senders=names,
                       sender_rate=["40/1s", "400/1s"], concurrency=32, synchronous="NORMAL")
        plan_checkpoint(campaign, settings, checkpoint)
        result = run_on("asyncio", run_engine(campaign, settings, checkpoint,
                                              folder / "jitter.handoff.jsonl"))
        ledger = sandbox.ledger()
    if len(ledger) != sizes.jitter_rows:
        raise RuntimeError(f"the jitter run delivered {len(ledger)} of {sizes.jitter_rows}:\n"
                           f"{result.summary[-1500:]}")
    by_sender: defaultdict[str, list[float]] = defaultdict(list)
    for delivery in ledger:
        by_sender[str(delivery["sender"])].append(float(delivery["at_s"]))
    over = sum(windows_over(sorted(t), JITTER_RATE.count, JITTER_RATE.period_s)
               for t in by_sender.values())
    section.add(Target(
        key="pace-jitter-windows",
        label=f"{JITTER_SENDERS} senders x 40/1s, {sizes.jitter_rows} sends, sandbox stamps "
              f"{JITTER_MS} ms jittered: deliveries closing a 1 s window over 40 (default guard)",
        figure=f"{over} ({result.wall_s:.1f} s)", goal="0", passed=over == 0))
    return over
