"""The planner's floor: the least a plan of a JSONL campaign can cost in Python on this machine.

Usage: python benchmarks/plan_floor.py CAMPAIGN.jsonl OUT.sqlite

One thread reads the file, parses each line with orjson, renders a one-placeholder template,
hashes an idempotency key (sha256) and inserts six columns into SQLite (WAL) with
``executemany`` in batches of 10,000, then commits once (``/work/shared/notes/limits.md`` §7).
No validation, no dedupe, no suppression: what bulkdm's planner adds is measured as a ratio of
this. Prints one JSON line: ``{"rows": N, "seconds": S, "peak_rss_mb": M}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import sqlite3
import sys
import time
from pathlib import Path

import orjson

BATCH = 10_000
TEMPLATE = "Hi {}, your plan is ready. Reply STOP to opt out."


def bare_plan(campaign: Path, database: Path) -> int:
    """Plan ``campaign`` into ``database`` the bare way; the number of rows inserted."""
    render = TEMPLATE.format
    sha256 = hashlib.sha256
    rows = 0
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, line INTEGER, recipient TEXT, "
                   "text TEXT, sender TEXT, idempotency_key TEXT)")
        db.execute("BEGIN")
        batch: list[tuple[int, str, str, str, str]] = []
        with campaign.open("rb") as stream:
            for line, raw in enumerate(stream, start=1):
                fields = orjson.loads(raw)
                recipient = str(fields["recipient_username"])
                text = render(fields["first_name"])
                key = sha256(f"bench\x1f{recipient}\x1fbench_one\x1f{text}".encode()).hexdigest()
                batch.append((line, recipient, text, "bench_one", key))
                if len(batch) == BATCH:
                    db.executemany("INSERT INTO rows (line, recipient, text, sender, "
                                   "idempotency_key) VALUES (?, ?, ?, ?, ?)", batch)
                    rows += len(batch)
                    batch = []
        if batch:
            db.executemany("INSERT INTO rows (line, recipient, text, sender, idempotency_key) "
                           "VALUES (?, ?, ?, ?, ?)", batch)
            rows += len(batch)
        db.execute("COMMIT")
    return rows


def main() -> int:
    campaign, database = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.perf_counter()
    rows = bare_plan(campaign, database)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(orjson.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
