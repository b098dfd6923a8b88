"""``bulkdm sandbox`` and ``python -m bulkdm.sandbox``: flags into a :class:`SandboxConfig`, serve.

Both commands take the same options from :func:`add_arguments`. This module imports aiohttp only
when it serves, so ``bulkdm --help`` (which lists the sandbox's options) stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from typing import Final

from bulkdm.loops import loop_factory
from bulkdm.rates import Rate, parse_duration_s, parse_rate
from bulkdm.sandbox.config import Faults, SandboxConfig

__all__ = ["add_arguments", "build_config", "main", "parse_args", "serve", "serve_args"]

_DESCRIPTION = "Serve a local Xquik + GetXAPI stand-in that records every delivered DM."


def _milliseconds(text: str) -> float:
    try:
        return parse_duration_s(text, default_unit="ms") * 1000
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rate(text: str) -> Rate:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from exc
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of ``python -m bulkdm.sandbox`` (exits 2 on a bad one, as argparse does)."""
    parser = argparse.ArgumentParser(prog="python -m bulkdm.sandbox", description=_DESCRIPTION)
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's options to ``parser``; :func:`build_config` reads them back."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=8787, help="port to bind; 0 picks a free one (default 8787)")
    add("--latency", type=_milliseconds, default=0.0, help="added to each answer, e.g. 50ms")
    add("--jitter", type=_milliseconds, default=0.0, help="latency varies by +/- this, e.g. 10ms")
    add("--arrival-jitter", type=_milliseconds, default=0.0,
        help="each request waits 0 to this long before it is handled and stamped, e.g. 50ms")
    add("--fail-rate", type=_probability, default=0.0, help="share of sends answered 5xx")
    add("--rate-limit-rate", type=_probability, default=0.0, help="share of sends answered 429")
    add("--drop-rate", type=_probability, default=0.0, help="share of delivered sends cut off")
    add("--accept-rate", type=_probability, default=0.0, help="share of Xquik sends answered 202")
    add("--late-rate", type=_probability, default=0.0,
        help="share of GetXAPI sends delivered --late after they arrive, never answered")
    add("--late", type=_milliseconds, default=0.0, help="how late, e.g. 5s")
    add("--read-throttle-rate", type=_probability, default=0.0,
        help="share of reads (lookups, polls, histories) answered 429, Retry-After 1s")
    add("--seed", type=int, default=0, help="seed of the fault dice")
    add("--legacy", action="store_true", help="Xquik answers the legacy {messageId, success}")
    add("--key-rate", type=_rate, action="append", default=[], help="per API key, e.g. 120/60s")
    add("--sender-rate", type=_rate, action="append", default=[], help="per sender, e.g. 15/15m")
    add("--read-rate", type=_rate, action="append", default=[], help="reads per key, e.g. 300/1s")
    add("--credits", type=int, default=None, help="Xquik credit balance (default unlimited)")
    add("--api-key", action="append", default=None, help="accept only these API keys")
    add("--reply-after", type=_milliseconds, default=200.0,
        help="reply_*, stopper_* and polite_* recipients answer this long after a DM (200ms)")
    add("--history-page-size", type=int, default=20,
        help="messages per history page, both providers (default 20)")


def build_config(args: argparse.Namespace) -> SandboxConfig:
    faults = Faults(
        latency_ms=args.latency,
        jitter_ms=args.jitter,
        arrival_jitter_ms=args.arrival_jitter,
        fail_rate=args.fail_rate,
        rate_limit_rate=args.rate_limit_rate,
        accept_rate=args.accept_rate,
        drop_rate=args.drop_rate,
        late_rate=args.late_rate,
        late_ms=args.late,
        read_throttle_rate=args.read_throttle_rate,
        seed=args.seed,
    )
    return SandboxConfig(
        faults=faults,
        legacy=args.legacy,
        key_rates=tuple(args.key_rate),
        sender_rates=tuple(args.sender_rate),
        read_rates=tuple(args.read_rate),
        credits=args.credits,
        valid_api_keys=None if args.api_key is None else frozenset(args.api_key),
        reply_after_ms=args.reply_after,
        history_page_size=max(1, args.history_page_size),
    )


async def serve_args(args: argparse.Namespace) -> int:
    """Serve the sandbox the flags describe; 0 after a clean stop, 1 if the port cannot be bound."""
    try:
        await serve(build_config(args), args.host, args.port)
    except OSError as exc:
        print(f"OSError: cannot serve on {args.host}:{args.port}: {exc}",  # noqa: T201
              file=sys.stderr, flush=True)
        return 1
    return 0


async def serve(config: SandboxConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, printing the URLs once listening."""
    from bulkdm.sandbox.app import Sandbox  # aiohttp: only once there is something to serve

    # The ledger only grows, and a collection walks every object tracked since the last
    # freeze: frozen once at the start (with a young generation of 200,000), a young collection
    # paused the server for about 100 ms once it held tens of thousands of deliveries, and
    # arrivals stamped that late showed rate windows the client never broke (benchmarks/
    # README.md, fifth pass). What exists is frozen out of the collector every tenth of a
    # second instead, so each collection walks only what came since. The sandbox builds no
    # reference cycles worth collecting; one that lives past a freeze stays.
    gc.freeze()
    loop = asyncio.get_running_loop()
    freezer = loop.create_task(_freeze_every(_FREEZE_EVERY_S))
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    sandbox = Sandbox(config)
    await sandbox.start(host=host, port=port)
    try:
        print(f"sandbox  {sandbox.root_url}", flush=True)  # noqa: T201
        print(f"xquik    {sandbox.xquik_url}", flush=True)  # noqa: T201
        print(f"getxapi  {sandbox.getxapi_url}", flush=True)  # noqa: T201
        await stopping.wait()
    finally:
        freezer.cancel()
        await sandbox.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print(f"stopped; {len(sandbox.ledger)} DMs delivered", flush=True)  # noqa: T201


#: how often the objects tracked so far leave the collector's walks (see ``serve``)
_FREEZE_EVERY_S: Final = 0.1


async def _freeze_every(seconds: float) -> None:
    while True:  # until cancelled when the server stops
        await asyncio.sleep(seconds)
        gc.freeze()


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox from flags; returns 0 after a clean stop, 1 if the port cannot be bound."""
    args = parse_args(argv)
    # uvloop (when installed) roughly doubles the requests one process answers: the sandbox
    # takes it whatever BULKDM_LOOP tells the engine, so a benchmark compares engines alone
    with asyncio.Runner(loop_factory=loop_factory({})) as runner:
        return runner.run(serve_args(args))
