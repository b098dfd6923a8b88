"""Plan a generated JSONL campaign with the real CLI, next to the planner's floor, in one run.

Usage: python benchmarks/plan_bench.py [--rows 1000000] [--keep]

Goal (issue 13, target 2): planning 1,000,000 rows takes at most 2.5x the floor measured in the
same run (``benchmarks/plan_floor.py``: read, orjson, render, sha256, ``executemany``, one
commit), with a peak RSS under 150 MB. The floor runs before and after the plan and its mean is
the baseline, so a drift of the machine's speed during the run weighs on both sides. The file
has realistic rows (username, template variables, external id, consent); 1 in 1,000 rows is
invalid and 1 in 500 repeats a recipient, so the error and duplicate paths are exercised too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

GOAL_RATIO = 2.5
GOAL_RSS_MB = 150.0
FLOOR = Path(__file__).resolve().parent / "plan_floor.py"
SETTINGS = """
[campaign]
name = "bench"
template = "Hi {first_name}, your {plan} plan is ready. Reply STOP to opt out."
[provider]
base_url = "http://127.0.0.1:8787/api/v1"
[[senders]]
account = "bench_one"
[[senders]]
account = "bench_two"
"""


def write_campaign(path: Path, rows: int) -> None:
    with path.open("wb") as out:
        for n in range(rows):
            row: dict[str, object] = {
                "recipient_username": f"user_{n % (rows - rows // 500 or 1)}",
                "first_name": f"Name{n}",
                "plan": "Pro" if n % 3 else "Basic",
                "external_id": f"crm-{n}",
                "consent": "opted_in:2026-10-01",
            }
            if n % 1000 == 999:
                row["recipient_username"] = "not valid!"
            out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))


def timed(command: list[str], folder: Path) -> tuple[float, float, str, float]:
    """Run ``command``; its wall seconds, its own peak RSS (MB), its stdout and its CPU
    seconds (user + system, all its threads)."""
    out, err = folder / "child.out", folder / "child.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the largest child's)
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[1:3]} failed ({process.returncode}): "
                           f"{err.read_text()[-2000:]}")
    return wall_s, usage.ru_maxrss / 1024, out.read_text(), usage.ru_utime + usage.ru_stime


def floor_s(campaign: Path, folder: Path) -> tuple[float, float]:
    """The floor's own time (from its first read to its commit) and its process's CPU."""
    database = folder / "floor.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    _, _, stdout, cpu_s = timed([sys.executable, str(FLOOR), str(campaign), str(database)],
                                folder)
    seconds: float = orjson.loads(stdout)["seconds"]
    return seconds, cpu_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bulkdm-bench-"))
    campaign = folder / "bench.jsonl"
    write_campaign(campaign, args.rows)
    (folder / "bench.toml").write_text(SETTINGS)
    size_mb = campaign.stat().st_size / 1e6
    print(f"campaign: {args.rows:,} rows, {size_mb:.0f} MB in {folder}")
    before_s, before_cpu_s = floor_s(campaign, folder)
    command = [sys.executable, "-m", "bulkdm", "plan", str(campaign), "--json"]
    wall_s, peak_mb, stdout, cpu_s = timed(command, folder)
    after_s, after_cpu_s = floor_s(campaign, folder)
    report = orjson.loads(stdout)
    print(f"rows: {report['rows']}")
    base_s = (before_s + after_s) / 2
    ratio = wall_s / base_s
    ok_ratio, ok_rss = ratio <= GOAL_RATIO, peak_mb < GOAL_RSS_MB
    print(f"floor     {base_s:.2f} s  (before {before_s:.2f} s, after {after_s:.2f} s)")
    print(f"wall time {wall_s:.2f} s")
    print(f"ratio     {ratio:.2f}x  goal <= {GOAL_RATIO:g}x  {'PASS' if ok_ratio else 'FAIL'}")
    # informative: CPU seconds of each process (start-up included), steadier than wall time
    # on a shared machine, where the load can change between the floor's two runs
    base_cpu_s = (before_cpu_s + after_cpu_s) / 2
    print(f"cpu       plan {cpu_s:.2f} s / floor process {base_cpu_s:.2f} s = "
          f"{cpu_s / base_cpu_s:.2f}x (info)")
    print(f"peak RSS  {peak_mb:.1f} MB  goal < {GOAL_RSS_MB:.0f} MB  {'PASS' if ok_rss else 'FAIL'}")
    if not args.keep:
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
    return 0 if ok_ratio and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
