"""The benchmark suite: the engine's own cost, pace, latency hiding, scale, a pool of senders.

Usage (from the repository root):

    .venv/bin/python benchmarks/run.py             # the full suite (about 15 minutes)
    .venv/bin/python benchmarks/run.py --smoke     # small sizes, about a minute (CI)
    .venv/bin/python benchmarks/run.py --only overhead,pace,scale,pool,ledger

Every figure is a ratio against a baseline measured in the same run, or an absolute figure
with its goal; each target line ends in PASS or FAIL. Exit codes: 0 every target passed (or
``--smoke``, which checks that the suite works, not the figures); 1 a target failed; 2 a
benchmark crashed. Only 127.0.0.1 is used; every sandbox is a child process killed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_ledger import LedgerSizes, run_ledger
from benchmarks.bench_overhead import OverheadSizes, run_overhead
from benchmarks.bench_pace import PaceSizes, run_pace
from benchmarks.bench_pool import PoolSizes, run_pool
from benchmarks.bench_scale import ScaleSizes, run_scale
from benchmarks.common import Section, settle_disk

FULL = {
    "overhead": OverheadSizes(rows=50_000, senders=16, concurrency=64, reps=2,
                              latency_rows=20_000, one_sender_rows=10_000, ledger_pairs=3),
    "pace": PaceSizes(senders=50, duration_s=60.0, concurrency=64, jitter_rows=1_000),
    "scale": ScaleSizes(plan_rows=1_000_000, small_rows=10_000, large_rows=1_000_000),
    "pool": PoolSizes(senders=2_000, duration_s=60.0, concurrency=512, wait_senders=10_000,
                      wait_s=30.0),
    "ledger": LedgerSizes(rows=50_000, senders=16, shared_senders=20, shared_duration_s=60.0),
}
SMOKE = {
    "overhead": OverheadSizes(rows=2_000, senders=4, concurrency=64, reps=1,
                              latency_rows=1_000, one_sender_rows=500),
    "pace": PaceSizes(senders=5, duration_s=5.0, concurrency=64, jitter_rows=300),
    "scale": ScaleSizes(plan_rows=20_000, small_rows=1_000, large_rows=20_000),
    "pool": PoolSizes(senders=200, duration_s=6.0, concurrency=512, wait_senders=200,
                      wait_s=3.0),
    "ledger": LedgerSizes(rows=2_000, senders=4, shared_senders=20, shared_duration_s=3.0),
}
BENCHMARKS: dict[str, Callable[[Section, object, Path], dict[str, float]]] = {
    "overhead": run_overhead,  # type: ignore[dict-item]
    "pace": run_pace,  # type: ignore[dict-item]
    "scale": run_scale,  # type: ignore[dict-item]
    "pool": run_pool,  # type: ignore[dict-item]
    "ledger": run_ledger,  # type: ignore[dict-item]
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="small sizes (under a minute); exit 0 unless a benchmark crashes")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    sizes = SMOKE if args.smoke else FULL
    print(f"bulkdm benchmarks ({'smoke' if args.smoke else 'full'}) "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}; Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="bulkdm-benchmarks-"))
    sections: list[Section] = []
    crashed: list[str] = []
    started = time.perf_counter()
    try:
        for name in chosen:
            section = Section(name=name)
            sections.append(section)
            print(f"\n== {name}", flush=True)
            work = folder / name
            work.mkdir()
            section.note(settle_disk(folder))
            began = time.perf_counter()
            try:
                BENCHMARKS[name](section, sizes[name], work)
            except Exception:  # noqa: BLE001  # a crash is reported; the others still run
                traceback.print_exc()
                crashed.append(name)
                print(f"[CRASH] {name}", flush=True)
            print(f"       ({name}: {time.perf_counter() - began:.0f} s)", flush=True)
            if not args.keep:  # its files' unwritten pages go with them, not into the next
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return _summary(sections, crashed, smoke=args.smoke, elapsed_s=time.perf_counter() - started)


def _summary(sections: list[Section], crashed: list[str], *, smoke: bool, elapsed_s: float) -> int:
    targets = [t for s in sections for t in s.targets]
    failed = [t.key for t in targets if t.passed is False]
    passed = sum(1 for t in targets if t.passed)
    print(f"\n== summary ({elapsed_s:.0f} s)")
    for target in targets:
        print(target.line())
    # worded apart from a test runner's "N passed, N failed": CI reads that line as test results
    print(f"targets met: {passed}; not met: {len(failed)}"
          + (f" ({', '.join(failed)})" if failed else "")
          + (f", crashed: {', '.join(crashed)}" if crashed else ""))
    if crashed:
        return 2
    if smoke:
        print("smoke run: the figures are not judged (sizes too small); the suite works")
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
