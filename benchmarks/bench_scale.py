"""Scale (issue 13 targets 2 and 5): planning a large campaign, flat memory while running, a fast resume.

* Planning: ``benchmarks/plan_bench.py`` (the real CLI plans a generated JSONL file in a
  subprocess, between two runs of the bare floor, ``benchmarks/plan_floor.py``), its figures
  read from its output: the plan's time as a ratio of the floor's, and its peak RSS.
* Run memory: ``benchmarks/engine_proc.py`` (``run_campaign`` in a process of its own) on a small
  and on a large planned campaign, each stopped (SIGTERM, as Ctrl-C) once the sandbox ledger shows
  the small campaign's size delivered; peak RSS is the child's own ``ru_maxrss``. The engine reads
  its work a page at a time, so the same number of sends should need the same memory whatever
  the plan's size.
* Resume: the large plan with all rows but the last 1,000 marked sent by a direct SQL update (and
  a handoff file and cursor that already cover them), then the time from starting the process to
  the sandbox's first delivery.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    PYTHON,
    REPO,
    Section,
    Target,
    bench_env,
    copy_checkpoint,
    finish_engine,
    plan_checkpoint,
    sandbox_process,
    sender_names,
    write_campaign,
    write_settings,
)

__all__ = ["ScaleSizes", "run_scale"]

PLAN_GOAL_RATIO = 2.5
PLAN_GOAL_MB = 150.0
RSS_GOAL_MB = 20.0
RESUME_GOAL_S = 2.0
SENDERS = 4
LEFT = 1_000


@dataclass(frozen=True, kw_only=True)
class ScaleSizes:
    plan_rows: int
    small_rows: int
    large_rows: int


def run_scale(section: Section, sizes: ScaleSizes, folder: Path) -> dict[str, float]:
    figures = _plan(section, sizes.plan_rows)
    small = _planned(folder, "small", sizes.small_rows)
    large = _planned(folder, "large", sizes.large_rows)
    small_mb = _run_rss(folder, small, stop_after=sizes.small_rows)
    large_mb = _run_rss(folder, large, stop_after=sizes.small_rows)
    figures["rss_small_mb"], figures["rss_large_mb"] = small_mb, large_mb
    section.add(Target(
        key="run-rss",
        label=f"run peak RSS, {sizes.small_rows:,} sends from a {sizes.small_rows:,}-row and "
              f"from a {sizes.large_rows:,}-row plan",
        figure=f"{small_mb:.1f} MB vs {large_mb:.1f} MB (+{large_mb - small_mb:.1f} MB)",
        goal=f"within {RSS_GOAL_MB:.0f} MB", passed=abs(large_mb - small_mb) <= RSS_GOAL_MB))
    first_s = _resume(folder, large, sizes.large_rows)
    figures["resume_s"] = first_s
    section.add(Target(
        key="resume",
        label=f"resume a {sizes.large_rows:,}-row plan with {sizes.large_rows - LEFT:,} done: "
              "process start to first delivery",
        figure=f"{first_s:.2f} s", goal=f"< {RESUME_GOAL_S:g} s", passed=first_s < RESUME_GOAL_S))
    return figures


def _plan(section: Section, rows: int) -> dict[str, float]:
    command = [PYTHON, str(REPO / "benchmarks" / "plan_bench.py"), "--rows", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900,
                          env=bench_env())
    wall = re.search(r"wall time\s+([\d.]+) s", done.stdout)
    floor = re.search(r"floor\s+([\d.]+) s", done.stdout)
    peak = re.search(r"peak RSS\s+([\d.]+) MB", done.stdout)
    if wall is None or floor is None or peak is None:
        raise RuntimeError(f"plan_bench.py failed ({done.returncode}): {done.stderr[-2000:]}")
    wall_s, floor_s, peak_mb = float(wall.group(1)), float(floor.group(1)), float(peak.group(1))
    ratio = wall_s / floor_s
    section.add(Target(
        key="plan-floor", label=f"bulkdm plan of {rows:,} rows / bare floor "
        "(plan_floor.py, same run)",
        figure=f"{ratio:.2f}x ({wall_s:.2f} s vs {floor_s:.2f} s)",
        goal=f"<= {PLAN_GOAL_RATIO:g}x", passed=ratio <= PLAN_GOAL_RATIO))
    section.add(Target(
        key="plan-rss", label=f"plan {rows:,} rows: peak RSS", figure=f"{peak_mb:.1f} MB",
        goal=f"< {PLAN_GOAL_MB:g} MB", passed=peak_mb < PLAN_GOAL_MB))
    return {"plan_s": wall_s, "plan_floor_s": floor_s, "plan_mb": peak_mb}


@dataclass(frozen=True, kw_only=True)
class _Planned:
    campaign: Path
    plan: Path


def _planned(folder: Path, name: str, rows: int) -> _Planned:
    campaign = folder / f"{name}.jsonl"
    write_campaign(campaign, rows)
    settings = folder / f"{name}.plan.toml"
    write_settings(settings, base_url="http://127.0.0.1:9/api/v1", senders=sender_names(SENDERS))
    plan = folder / f"{name}.plan.sqlite"
    plan_checkpoint(campaign, settings, plan)
    return _Planned(campaign=campaign, plan=plan)


def _start(folder: Path, planned: _Planned, base_url: str, tag: str) -> subprocess.Popen[bytes]:
    settings = folder / f"{tag}.toml"
    write_settings(settings, base_url=base_url, senders=sender_names(SENDERS))
    command = [PYTHON, str(REPO / "benchmarks" / "engine_proc.py"), str(planned.campaign),
               "--config", str(settings), "--checkpoint", str(folder / f"{tag}.sqlite"),
               "--out", str(folder / f"{tag}.handoff.jsonl"), "--timeout-s", "600"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=bench_env(), start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)


def _run_rss(folder: Path, planned: _Planned, *, stop_after: int) -> float:
    """Peak RSS (MB) of a run stopped once ``stop_after`` DMs are delivered."""
    copy_checkpoint(planned.plan, folder / "rss.sqlite")
    (folder / "rss.handoff.jsonl").unlink(missing_ok=True)
    with sandbox_process() as sandbox:
        process = _start(folder, planned, sandbox.xquik_url, "rss")
        try:
            deadline = time.monotonic() + 600
            while process.poll() is None and time.monotonic() < deadline:
                if sandbox.ledger_total() >= stop_after:
                    break
                time.sleep(0.05)
            _stop(process)
            report = finish_engine(process)
        finally:
            _stop(process)
    if report["exit_code"] not in (0, 4):
        raise RuntimeError(f"engine run exited with {report['exit_code']}")
    return report["peak_rss_mb"]


def _mark_done(checkpoint: Path, out: Path, done: int) -> None:
    """All rows but the last ``LEFT`` sent, the handoff file and its cursor covering them."""
    line = b'{"send_status":"sent"}\n'
    out.write_bytes(line * done)
    with contextlib.closing(sqlite3.connect(checkpoint)) as db, db:
        db.execute(
            "UPDATE rows SET state = 'sent', attempts = 1, message_id = 'm' || id, "
            "sent_at = '2026-11-23T00:00:00.000Z', finished_at = '2026-11-23T00:00:00.000Z', "
            "finish_seq = id WHERE id <= ?", (done,))
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [
            ("handoff.seq", str(done)), ("handoff.offset", str(len(line) * done)),
            ("handoff.path", str(out))])


def _resume(folder: Path, planned: _Planned, rows: int) -> float:
    """Seconds from starting the process to the first delivery of the resumed run."""
    checkpoint, out = folder / "resume.sqlite", folder / "resume.handoff.jsonl"
    copy_checkpoint(planned.plan, checkpoint)
    _mark_done(checkpoint, out, rows - LEFT)
    with sandbox_process() as sandbox:
        started = time.perf_counter()
        process = _start(folder, planned, sandbox.xquik_url, "resume")
        first_s = float("inf")
        try:
            deadline = started + 120
            while process.poll() is None and time.perf_counter() < deadline:
                if sandbox.ledger_total() > 0:
                    first_s = time.perf_counter() - started
                    break
                time.sleep(0.005)
            _stop(process)
            finish_engine(process)
        finally:
            _stop(process)
    return first_s
