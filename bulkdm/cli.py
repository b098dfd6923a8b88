"""The command line: parse arguments, load settings, run one async command, map errors to codes.

Exit codes: 0 done; 1 a :class:`BulkdmError` (printed as ``Kind: message`` on stderr); 2 a usage
error (argparse). Each subcommand is a :class:`Command` in :data:`COMMANDS`: a name, its help, a
function that adds its arguments and an async handler that returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Final

from bulkdm.errors import BulkdmError
from bulkdm.settings import Settings, load_settings

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
    print(report.to_json() if args.json else format_report(report))
    return 0


PLAN: Final = Command(
    name="plan",
    help="check the campaign and write the plan into the checkpoint; nothing is sent",
    add_arguments=_plan_arguments,
    handler=_plan,
)

#: every subcommand, in the order ``--help`` lists them; add more here
COMMANDS: Final[tuple[Command, ...]] = (PLAN,)


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
