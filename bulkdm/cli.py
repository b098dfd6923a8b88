"""The command line: parse arguments, load settings, run one async command, map errors to codes.

Exit codes: 0 done; 1 a :class:`BulkdmError` (printed as ``Kind: message`` on stderr); 2 a usage
error (argparse). Each subcommand is a :class:`Command` in :data:`COMMANDS`: a name, its help, a
function that adds its arguments and an async handler that returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from bulkdm.errors import BulkdmError, CheckpointError, ConfigError
from bulkdm.settings import Settings, load_settings

if TYPE_CHECKING:
    from bulkdm.checkpoint import Checkpoint

__all__ = [
    "COMMANDS",
    "Command",
    "add_campaign_arguments",
    "build_parser",
    "checkpoint_path",
    "main",
    "settings_from_args",
]

HELP_CONFIG: Final = "settings file (default: NAME.toml beside the campaign file)"
HELP_CHECKPOINT: Final = "checkpoint file (default: NAME.bulkdm.sqlite beside the campaign file)"
HELP_DELIMITER: Final = 'CSV field separator: ",", ";" or "tab" (default: sniffed from the header)'


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    """One subcommand. ``handler`` gets the parsed arguments and returns the exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], Awaitable[int]]


def add_campaign_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every campaign command shares: the file, settings, checkpoint, overrides."""
    parser.add_argument("campaign", type=Path, help="campaign file (.jsonl or .csv)")
    parser.add_argument("--config", type=Path, metavar="FILE", help=HELP_CONFIG)
    parser.add_argument("--checkpoint", type=Path, metavar="PATH", help=HELP_CHECKPOINT)
    parser.add_argument("--delimiter", metavar="CHAR", help=HELP_DELIMITER)
    parser.add_argument("--name", help="campaign name (default: the campaign file's stem)")
    parser.add_argument("--provider", choices=("xquik", "getxapi"), help="the DM API to use")
    parser.add_argument("--base-url", metavar="URL", help="the provider's API base URL")
    parser.add_argument(
        "--require-consent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip rows without a consent value",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the TOML file, with the flags of :func:`add_campaign_arguments` over it."""
    overrides = {
        "campaign.name": args.name,
        "campaign.delimiter": args.delimiter,
        "campaign.require_consent": args.require_consent,
        "provider.name": args.provider,
        "provider.base_url": args.base_url,
    }
    return load_settings(args.campaign, config_path=args.config, overrides=overrides)


def checkpoint_path(args: argparse.Namespace) -> Path:
    """``--checkpoint``, or ``NAME.bulkdm.sqlite`` beside the campaign file."""
    if args.checkpoint is not None:
        return Path(args.checkpoint)
    campaign = Path(args.campaign)
    return campaign.with_name(f"{campaign.stem}.bulkdm.sqlite")


# -- plan -------------------------------------------------------------------------------------


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    add_campaign_arguments(parser)
    parser.add_argument("--errors", action="store_true", help="list every invalid row, not 20")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


async def _plan(args: argparse.Namespace) -> int:
    # imported here so `bulkdm --help` does not load SQLite and the planner
    from bulkdm.checkpoint import Checkpoint
    from bulkdm.planner import ensure_plan
    from bulkdm.report import format_report

    settings = settings_from_args(args)
    checkpoint = await Checkpoint.open(checkpoint_path(args), synchronous=settings.run.synchronous)
    try:
        report = await ensure_plan(
            args.campaign, settings, checkpoint, errors_limit=None if args.errors else 20
        )
    finally:
        await checkpoint.close()
    notes = await _limit_notes(settings)
    if args.json:
        print(orjson.dumps({**report.to_dict(), "account_limits": notes}).decode())
    else:
        print("\n".join([format_report(report), *(f"accounts: {n}" for n in notes)]))
    return 0


async def _limit_notes(settings: Settings) -> list[str]:
    """Where another campaign sets other limits for one of this campaign's accounts."""
    from bulkdm.ledger import ledger_spec, open_ledger, realm_for
    from bulkdm.ledger.view import limit_notes

    spec = ledger_spec(settings.accounts.ledger)
    if spec is None or (not spec.startswith("postgres")
                        and not await asyncio.to_thread(os.path.isfile, spec)):
        return []  # no ledger yet: no other campaign to disagree with
    ledger = await open_ledger(spec, now_s=time.time())
    try:
        return await limit_notes(
            ledger, realm=realm_for(settings.provider.base_url, sandbox=False),
            campaign=settings.campaign.name, now_s=time.time(),
            accounts={s.account: s.windows for s in settings.senders})
    finally:
        await ledger.close()


PLAN: Final = Command(
    name="plan",
    help="check the campaign and write the plan into the checkpoint; nothing is sent",
    add_arguments=_plan_arguments,
    handler=_plan,
)

# -- run --------------------------------------------------------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    add_campaign_arguments(parser)
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="handoff JSONL file (default: NAME.handoff.jsonl beside the campaign)")
    parser.add_argument("--sandbox", action="store_true",
                        help="send to a local sandbox started for this run (nothing reaches X)")
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="requests in flight at once (default: [run] concurrency, 64)")
    parser.add_argument("--progress", choices=("auto", "live", "plain", "none"), default="auto",
                        help="live table on a terminal, a line every few seconds otherwise")


async def _run(args: argparse.Namespace) -> int:
    from bulkdm.runner import RunOptions, run_campaign

    settings = settings_from_args(args)
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1", source="command line")
        settings = replace(settings, run=replace(settings.run, concurrency=args.concurrency))
    options = RunOptions(
        campaign=args.campaign, checkpoint=_absolute(checkpoint_path(args)),
        out=_absolute(args.out or _beside(args.campaign, ".handoff.jsonl")),
        sandbox=args.sandbox, progress=None if args.progress == "auto" else args.progress,
        delimiter=args.delimiter,
    )
    stop = asyncio.Event()
    _stop_on_signals(stop)
    return await run_campaign(options, settings, stream=sys.stdout, stop=stop)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if stop.is_set():
            # a second Ctrl-C leaves at once; the next run settles what was in flight
            print("\nstopped at once; run the same command to settle and resume", file=sys.stderr)
            os._exit(130)
        print("\nstopping: in-flight sends finish first (Ctrl-C again to quit at once)",
              file=sys.stderr)
        stop.set()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    loop.add_signal_handler(signal.SIGTERM, stop.set)


RUN: Final = Command(
    name="run",
    help="plan if needed, then send; the same command resumes after any interruption",
    add_arguments=_run_arguments,
    handler=_run,
)


# -- status and export ----------------------------------------------------------------------------


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="CAMPAIGN|CHECKPOINT",
                        help="a campaign file (its checkpoint is NAME.bulkdm.sqlite) or a checkpoint")


def _checkpoint_of(target: Path) -> Path:
    if target.name.endswith((".sqlite", ".db")):
        return target
    return _beside(target, ".bulkdm.sqlite")


async def _open_existing(target: Path) -> Checkpoint:
    from bulkdm.checkpoint import Checkpoint

    path = _checkpoint_of(target)
    if not await asyncio.to_thread(path.is_file):
        raise CheckpointError(f"{path}: no checkpoint here; plan or run the campaign first")
    return await Checkpoint.open(path)


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the status as one JSON object")


async def _status(args: argparse.Namespace) -> int:
    import orjson

    from bulkdm.status import read_status, status_text

    checkpoint = await _open_existing(args.target)
    try:
        status = await read_status(checkpoint)
    finally:
        await checkpoint.close()
    print(orjson.dumps(status.to_dict()).decode() if args.json else status_text(status))
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    _target_arguments(parser)
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="output file (default: NAME.export.jsonl or .csv beside the campaign)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                        help="JSONL handoff records, or CSV for CRM import (formula cells neutralised)")
    parser.add_argument("--status", action="append", metavar="STATE",
                        choices=("sent", "failed", "skipped", "invalid", "pending", "unknown"),
                        help="only rows in this state (repeat for several; default: finished rows)")
    parser.add_argument("--as-campaign", action="store_true",
                        help="write the rows as a new campaign file, e.g. failed rows to retry")


async def _export(args: argparse.Namespace) -> int:
    from bulkdm.export import ExportFormat, export_rows

    fmt = ExportFormat.CAMPAIGN if args.as_campaign else ExportFormat(args.format)
    suffix = {ExportFormat.CAMPAIGN: ".retry.jsonl", ExportFormat.CSV: ".export.csv"}.get(
        fmt, ".export.jsonl")
    stem = args.target.name.split(".")[0]
    out = args.out or args.target.with_name(stem + suffix)
    checkpoint = await _open_existing(args.target)
    try:
        count = await export_rows(checkpoint, out, fmt=fmt, states=args.status or ())
    except ValueError as exc:
        raise ConfigError(str(exc), source="command line", key="--as-campaign") from exc
    finally:
        await checkpoint.close()
    print(f"wrote {count} rows to {out}")
    return 0


STATUS: Final = Command(name="status", help="show a checkpoint: counts, senders, failures, what is left",
                        add_arguments=_status_arguments, handler=_status)
EXPORT: Final = Command(name="export", help="rebuild handoff records (JSONL or CSV) from a checkpoint",
                        add_arguments=_export_arguments, handler=_export)


# -- accounts -------------------------------------------------------------------------------------


def _accounts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="PATH|URL",
                        help="the account ledger (default: $BULKDM_LEDGER, else "
                             "$XDG_STATE_HOME/bulkdm/ledger.sqlite)")
    parser.add_argument("--sandbox", action="store_true",
                        help="the sandbox's accounts (runs against --sandbox or a loopback URL)")
    parser.add_argument("--json", action="store_true", help="print the pool as one JSON object")


async def _accounts(args: argparse.Namespace) -> int:
    from bulkdm.ledger import Realm, ledger_spec, open_ledger
    from bulkdm.ledger.view import pool_text, read_pool

    spec = ledger_spec(args.ledger)
    if spec is None:
        raise ConfigError("the account ledger is off; name one with --ledger",
                          source="environment", key="BULKDM_LEDGER")
    realm = Realm.SANDBOX if args.sandbox else Realm.LIVE
    ledger = await open_ledger(spec, now_s=time.time())
    try:
        views = await read_pool(ledger, realm=realm, now_s=time.time())
    finally:
        await ledger.close()
    if args.json:
        print(orjson.dumps({"ledger": ledger.location, "realm": realm.value,
                            "accounts": [v.to_dict() for v in views]}).decode())
    else:
        print(pool_text(views, location=ledger.location, realm=realm))
    return 0


ACCOUNTS: Final = Command(
    name="accounts",
    help="show the account pool: each account's sends per window, rests, health, campaigns",
    add_arguments=_accounts_arguments, handler=_accounts)


# -- sandbox --------------------------------------------------------------------------------------


def _sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="sandbox options: --port 8787 --latency 50ms --fail-rate 0.01 "
                             "--drop-rate 0.01 ... (bulkdm sandbox -- --help lists them all)")


async def _sandbox(args: argparse.Namespace) -> int:
    from bulkdm.sandbox.cli import build_config, parse_args, serve

    options = parse_args([o for o in args.options if o != "--"])
    await serve(build_config(options), options.host, options.port)
    return 0


SANDBOX: Final = Command(name="sandbox", help="serve the local Xquik + GetXAPI sandbox",
                         add_arguments=_sandbox_arguments, handler=_sandbox)


def _beside(campaign: Path, suffix: str) -> Path:
    return campaign.with_name(campaign.name.split(".")[0] + suffix)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


#: every subcommand, in the order ``--help`` lists them; add more here
COMMANDS: Final[tuple[Command, ...]] = (PLAN, RUN, STATUS, EXPORT, ACCOUNTS, SANDBOX)


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The parser with one subparser per command; the handler is stored as ``args.handler``."""
    parser = argparse.ArgumentParser(
        prog="bulkdm", description="Resumable, rate-safe bulk X direct messages."
    )
    parser.add_argument("--version", action="version", version=f"bulkdm {version('bulkdm')}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[Command] = COMMANDS) -> int:
    """Run one command and return its exit code (the console script exits with it)."""
    try:
        args = build_parser(commands).parse_args(argv)
    except SystemExit as exit_:  # argparse: usage error (2) or --help/--version (0)
        return exit_.code if isinstance(exit_.code, int) else 2
    handler: Callable[[argparse.Namespace], Awaitable[int]] = args.handler
    try:
        return asyncio.run(_call(handler, args))
    except BulkdmError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr)
        return 130


async def _call(
    handler: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    return await handler(args)
