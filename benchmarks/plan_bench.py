"""Plan a generated JSONL campaign with the real CLI and check time and memory against the goal.

Usage: python benchmarks/plan_bench.py [--rows 1000000] [--keep]

Goal (issue 2): 1,000,000 rows planned in under 15 s with a peak RSS under 150 MB. The file has
realistic rows (username, template variables, external id, consent); 1 in 1,000 rows is invalid
and 1 in 500 repeats a recipient, so the error and duplicate paths are exercised too.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

GOAL_S = 15.0
GOAL_RSS_MB = 150.0
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
    command = [sys.executable, "-m", "bulkdm", "plan", str(campaign), "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    # ru_maxrss of the largest child so far, in KiB on Linux: the only child is the plan
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    report = orjson.loads(result.stdout)
    print(f"rows: {report['rows']}")
    ok_time, ok_rss = wall_s < GOAL_S, peak_mb < GOAL_RSS_MB
    print(f"wall time {wall_s:.2f} s   goal < {GOAL_S:.0f} s    {'PASS' if ok_time else 'FAIL'}")
    print(f"peak RSS  {peak_mb:.1f} MB  goal < {GOAL_RSS_MB:.0f} MB  {'PASS' if ok_rss else 'FAIL'}")
    if not args.keep:
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
    return 0 if ok_time and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
