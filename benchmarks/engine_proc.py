"""A ``bulkdm run`` in a process of its own, for the memory and resume measurements.

Usage: python benchmarks/engine_proc.py CAMPAIGN --config FILE --checkpoint PATH --out PATH

It wires the run exactly as the CLI's ``run`` command does (``load_settings`` then
``run_campaign``, on the loop ``bulkdm.loops`` chooses); SIGTERM or SIGINT sets the stop event,
as Ctrl-C does. On exit it prints one JSON line: exit code, wall and CPU seconds, peak RSS in MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import signal
import sys
import time
from pathlib import Path

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import API_KEY, API_KEY_ENV
from bulkdm.loops import loop_factory
from bulkdm.runner import RunOptions, run_campaign
from bulkdm.settings import load_settings


async def _main(args: argparse.Namespace) -> int:
    settings = load_settings(args.campaign, config_path=args.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    timeout = loop.call_later(args.timeout_s, stop.set)
    options = RunOptions(campaign=args.campaign, checkpoint=args.checkpoint, out=args.out,
                         progress="none")
    try:
        return int(await run_campaign(options, settings, stream=io.StringIO(), stop=stop,
                                      environ={API_KEY_ENV: API_KEY}))
    finally:
        timeout.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(_main(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(orjson.dumps({
        "exit_code": code,
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
