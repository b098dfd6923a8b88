"""Target 2: every sender kept at its full allowed pace, and never over it.

N senders, each allowed ``5/1s``, against a sandbox answering after 200 ms. The sandbox enforces
no limit itself (so its ledger shows exactly what the engine sent); the run is stopped after the
duration through the stop event, as Ctrl-C would.

Achieved rate: deliveries in the ledger between ``t0 + 1 s`` and ``t0 + duration - 1 s``
divided by that span, with ``t0`` the first delivery. The first second and the stop's last
second are left out so neither the start nor the stop counts for or against the engine.
Windows over: for each sender, deliveries (as the sandbox timed them) that close any
``(t - 1 s, t]`` window holding more than 5.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    Section,
    Target,
    plan_checkpoint,
    run_on,
    sandbox_process,
    sender_names,
    windows_over,
    write_campaign,
    write_settings,
)
from benchmarks.engine_inproc import run_engine

__all__ = ["PaceSizes", "run_pace"]

RATE_GOAL = 0.97
PER_SENDER = 5
PERIOD_S = 1.0


@dataclass(frozen=True, kw_only=True)
class PaceSizes:
    senders: int
    duration_s: float
    concurrency: int


def run_pace(section: Section, sizes: PaceSizes, folder: Path) -> dict[str, float]:
    configured = sizes.senders * PER_SENDER / PERIOD_S
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
        result = run_on("asyncio", run_engine(campaign, settings, checkpoint, out,
                                              stop_after_s=sizes.duration_s))
        ledger = sandbox.ledger()
    if not ledger:
        raise RuntimeError(f"no delivery in the pace run:\n{result.summary[-1500:]}")
    times = sorted(float(d["at_s"]) for d in ledger)
    start_s, end_s = times[0] + 1.0, times[0] + sizes.duration_s - 1.0
    counted = bisect.bisect_left(times, end_s) - bisect.bisect_left(times, start_s)
    achieved = counted / (end_s - start_s)
    by_sender: defaultdict[str, list[float]] = defaultdict(list)
    for delivery in ledger:
        by_sender[str(delivery["sender"])].append(float(delivery["at_s"]))
    over = sum(windows_over(sorted(t), PER_SENDER, PERIOD_S) for t in by_sender.values())
    slowest = min(len(by_sender.get(n, [])) for n in names)
    ratio = achieved / configured
    section.add(Target(
        key="pace-rate",
        label=f"{sizes.senders} senders x {PER_SENDER}/1s, 200 ms latency, "
              f"{sizes.duration_s:g} s: achieved / configured",
        figure=f"{ratio:.3f}x ({achieved:.1f} of {configured:.0f} sends/s; "
               f"{len(ledger)} delivered, slowest sender {slowest})",
        goal=f">= {RATE_GOAL}", passed=ratio >= RATE_GOAL))
    section.add(Target(
        key="pace-windows",
        label="deliveries closing a 1 s window over a sender's limit (sandbox ledger)",
        figure=str(over), goal="0", passed=over == 0))
    return {"pace_ratio": ratio, "pace_over": float(over)}
