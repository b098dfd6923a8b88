"""The command line: parse arguments, load settings, run one async command, map errors to codes.

Exit codes: 0 done; 1 a :class:`BulkdmError` (printed as ``error: message`` on stderr); 2 a
usage error (argparse); ``plan`` exits 3 when no row is valid; 4 stopped, here by a
:class:`StorageError` (a file that cannot be written), said in one line on stderr. Each subcommand
is a :class:`Command` in :data:`COMMANDS`: a name, its help, a
function that adds its arguments and an async handler that returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from bulkdm import cli_optouts, cli_replies
from bulkdm.errors import BulkdmError, CheckpointError, ConfigError, StorageError
from bulkdm.loops import loop_factory
from bulkdm.naming import CHECKPOINT_SUFFIX, HANDOFF_SUFFIX, beside, checkpoint_of
from bulkdm.rates import Rate
from bulkdm.sandbox import cli as sandbox_cli
from bulkdm.settings import COMMAND_LINE, Settings, load_settings

if TYPE_CHECKING:
    from bulkdm.checkpoint import Checkpoint
    from bulkdm.export import CsvOptions, ExportFormat

__all__ = [
    "COMMANDS",
    "Command",
    "add_campaign_arguments",
    "build_parser",
    "checkpoint_path",
    "main",
    "resume_command",
    "settings_from_args",
]

HELP_CONFIG: Final = "settings file (default: NAME.toml beside the campaign file)"
HELP_CHECKPOINT: Final = "checkpoint file (default: NAME.bulkdm.sqlite beside the campaign file)"
#: ``runner.ExitCode.STOPPED`` (not imported: ``bulkdm --help`` stays light)
_EXIT_STOPPED: Final = 4
#: what a shell reports for a program its reader left (128 + SIGPIPE)
_EXIT_BROKEN_PIPE: Final = 141
_EXPORT_ELSEWHERE: Final = "export to another file"
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
        "--amend", action="store_true",
        help="apply an edited campaign file or settings to this checkpoint's campaign: unsent "
             "rows follow the file, sent rows stay sent and are never sent again",
    )
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
    if not Path(args.campaign).is_file():
        # before the settings: their error would hide that the campaign itself is missing
        from bulkdm.errors import CampaignFileError

        missing = "is a directory" if Path(args.campaign).is_dir() else "no such file"
        raise CampaignFileError(args.campaign, missing)
    settings = load_settings(args.campaign, config_path=args.config, overrides=overrides)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return settings


def checkpoint_path(args: argparse.Namespace) -> Path:
    """``--checkpoint``, or ``NAME.bulkdm.sqlite`` beside the campaign file."""
    if args.checkpoint is not None:
        return Path(args.checkpoint)
    return beside(Path(args.campaign), CHECKPOINT_SUFFIX)


# -- plan -------------------------------------------------------------------------------------


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    add_campaign_arguments(parser)
    parser.add_argument("--errors", action="store_true", help="list every invalid row, not 20")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


async def _plan(args: argparse.Namespace) -> int:
    # imported here so `bulkdm --help` does not load SQLite and the planner
    from bulkdm.checkpoint import Checkpoint, respell_senders
    from bulkdm.ownership import refuse_a_copy
    from bulkdm.planner import ensure_plan, planned_settings
    from bulkdm.report import format_report, with_account_waits
    from bulkdm.runlock import RunLock

    settings = settings_from_args(args)
    path = checkpoint_path(args)
    # an amend rewrites rows, so no run may hold the checkpoint meanwhile
    with RunLock(path) if args.amend else contextlib.nullcontext():
        checkpoint = await Checkpoint.open(path, synchronous=settings.run.synchronous)
        try:
            report = await ensure_plan(args.campaign, settings, checkpoint, amend=args.amend,
                                       errors_limit=None if args.errors else 20)
            # where it was planned: a copy of the folder made before its first run is one
            await refuse_a_copy(checkpoint)
            if args.amend:  # the settings may spell an account in another case now
                await checkpoint.submit(respell_senders(s.account for s in settings.senders))
            # with the plan's identity: the ledger tells this campaign from one of its name
            view = await _pool_view(await planned_settings(settings, checkpoint))
            notes = view.notes
            if view.waits:  # the duration counts what each account can still send, by the
                # ledger, every campaign's windows, and where each is on its warm-up ramp
                report = await with_account_waits(report, checkpoint, settings, view.waits,
                                                  view.first_sends, rates=view.rates)
        finally:
            await checkpoint.close()
    if args.json:
        # a script reading invalid_rows knows whether it has them all (without --errors: 20)
        cut = len(report.invalid_rows) < report.rows.invalid
        print(orjson.dumps({**report.to_dict(), "invalid_rows_cut": cut,
                            "account_limits": notes}).decode())
    else:
        print("\n".join([format_report(report), *(f"accounts: {n}" for n in notes)]))
    # nothing to send (every row invalid, or none at all): a script must not go on to `run`
    return 0 if report.rows.valid else 3


@dataclass(frozen=True, kw_only=True, slots=True)
class _PoolView:
    """What the ledger tells a plan: where another campaign sets other limits for one of this
    campaign's accounts (``notes``), how long each account waits before it may send (every
    campaign's sends, its rest), each account's first send (where its warm-up ramp counts
    from), and each account's windows under a day as every campaign set them."""

    notes: list[str] = field(default_factory=list)
    waits: dict[str, float] = field(default_factory=dict)
    first_sends: dict[str, float] = field(default_factory=dict)
    rates: dict[str, tuple[Rate, ...]] = field(default_factory=dict)


async def _pool_view(settings: Settings) -> _PoolView:
    from bulkdm.ledger import account_subject, campaign_key, ledger_spec, open_ledger, realm_for
    from bulkdm.ledger.view import account_waits, limit_notes, stricter_rates

    spec = ledger_spec(settings.accounts.ledger)
    if spec is None or (not spec.startswith("postgres")
                        and not await asyncio.to_thread(os.path.isfile, spec)):
        return _PoolView()  # no ledger yet: no other campaign to disagree with, nothing used
    ledger = await open_ledger(spec, now_s=time.time())
    realm = realm_for(settings.provider.base_url, sandbox=False)
    accounts = {s.account: s.windows for s in settings.senders}
    try:
        notes = await limit_notes(
            ledger, realm=realm, now_s=time.time(), accounts=accounts,
            campaign=campaign_key(settings.campaign.name, settings.campaign.campaign_id))
        firsts = {a: await ledger.first_send(account_subject(realm, a)) for a in accounts}
        return _PoolView(
            notes=notes, first_sends={a: t for a, t in firsts.items() if t is not None},
            waits=await account_waits(ledger, realm=realm, accounts=accounts, now_s=time.time()),
            rates=await stricter_rates(ledger, realm=realm, accounts=accounts,
                                       now_s=time.time()))
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
    parser.add_argument("--until-done", action="store_true",
                        help="wait through daily caps, rests and send windows until every row "
                             "is finished, instead of pausing (Ctrl-C stops at any moment)")


async def _run(args: argparse.Namespace) -> int:
    from bulkdm.runner import RunOptions, run_campaign

    settings = settings_from_args(args)
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1", source="command line")
        settings = replace(settings, run=replace(settings.run, concurrency=args.concurrency))
    if args.until_done:
        settings = replace(settings, run=replace(settings.run, until_done=True))
    options = RunOptions(
        campaign=args.campaign, checkpoint=_absolute(checkpoint_path(args)),
        out=_absolute(args.out or beside(args.campaign, HANDOFF_SUFFIX)),
        sandbox=args.sandbox, progress=None if args.progress == "auto" else args.progress,
        delimiter=args.delimiter, resume_command=resume_command(args), amend=args.amend,
    )
    stop = asyncio.Event()
    _stop_on_signals(stop)
    return await run_campaign(options, settings, stream=sys.stdout, stop=stop)


#: ``run`` flags that act once and are left out of the command that resumes
_ONE_SHOT: Final = frozenset({"help", "amend"})


def resume_command(args: argparse.Namespace) -> str:
    """The ``run`` command that continues this one, shell-quoted: every flag given, with paths
    made absolute, and the checkpoint and handoff file named, so it works from any folder."""
    parser = argparse.ArgumentParser(add_help=False)
    _run_arguments(parser)
    given = {**vars(args), "checkpoint": checkpoint_path(args),
             "out": args.out or beside(args.campaign, HANDOFF_SUFFIX)}
    words = ["bulkdm", "run"]
    for action in parser._actions:
        value = given.get(action.dest)
        if action.dest in _ONE_SHOT or value is None or value == action.default:
            continue
        text = _absolute(value) if isinstance(value, Path) else value
        if not action.option_strings:
            words.append(str(text))
        elif isinstance(action, argparse.BooleanOptionalAction):
            words.append(action.option_strings[0 if value else 1])
        elif action.nargs == 0:  # store_true
            words.append(action.option_strings[0])
        else:
            words += [action.option_strings[0], str(text)]
    return shlex.join(words)


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


async def _open_existing(target: Path) -> Checkpoint:
    from bulkdm.checkpoint import Checkpoint

    path = checkpoint_of(target)
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
                        help="output file, or - for stdout (default: NAME.export.jsonl, .csv or "
                             ".xlsx beside the campaign; NAME.retry.jsonl with --as-campaign)")
    parser.add_argument("--format", choices=("jsonl", "csv", "xlsx"),
                        help="jsonl: handoff records for programs; csv: exact cells for a CRM "
                             "import; xlsx: a workbook for people (default: from --out's "
                             "extension, else jsonl)")
    parser.add_argument("--status", action="extend", nargs="+", metavar="STATE",
                        # every state `status` shows: `sending` rows are there after a kill -9
                        choices=("sent", "failed", "skipped", "invalid", "pending", "sending",
                                 "unknown"),
                        help="only rows in these states (default: every finished row)")
    parser.add_argument("--records", choices=("rows", "replies"), default="rows",
                        help="rows: one handoff record per row (default); replies: one "
                             "dm_reply record per answer read by `bulkdm replies`")
    parser.add_argument("--as-campaign", action="store_true",
                        help="write the rows as a new campaign file (JSONL or CSV) to retry or "
                             "fix them; invalid rows keep every field they were read with")
    parser.add_argument("--delimiter", metavar="CHAR",
                        help='CSV field separator: ",", ";" (German-locale Excel), "tab" or "|" '
                             '(default: ",", or tab for an --out ending .tsv)')
    parser.add_argument("--bom", action="store_true",
                        help="CSV: start with a UTF-8 BOM (Excel needs it for non-Latin text)")
    parser.add_argument("--formula-safe", action="store_true",
                        help="CSV for a spreadsheet: prefix ' to cells starting = + - @ (the "
                             "cell then differs from what was sent; do not use for a CRM)")


async def _export(args: argparse.Namespace) -> int:
    from bulkdm.export import ExportFormat, export_rows, format_of
    from bulkdm.ownership import refuse_own_files

    to_stdout = args.out is not None and str(args.out) == "-"
    fmt = ExportFormat(args.format) if args.format else (
        None if to_stdout else format_of(args.out)) or ExportFormat.JSONL
    csv = _csv_options(args, fmt)
    suffix = ".retry" if args.as_campaign else ".export"
    out = args.out or beside(args.target, f"{suffix}.{fmt.value}")
    if args.records == "replies":
        return await _export_replies(args, fmt, csv, to_stdout)
    checkpoint = await _open_existing(args.target)
    try:
        meta = await checkpoint.plan_meta()
        if not to_stdout:
            await refuse_own_files(out, checkpoint, meta, instead=_EXPORT_ELSEWHERE)
        exported = await export_rows(
            checkpoint, sys.stdout.buffer if to_stdout else out, fmt=fmt,
            states=args.status or (), as_campaign=args.as_campaign, csv=csv)
    except ValueError as exc:
        raise ConfigError(str(exc), source=COMMAND_LINE, key="--as-campaign") from exc
    finally:
        await checkpoint.close()
    where = "stdout" if to_stdout else str(out)
    print(f"wrote {exported.count} rows to {where}", file=sys.stderr if to_stdout else sys.stdout)
    if exported.unsettled:
        print(f"left out {exported.unsettled} failed row(s) with reason outcome_unknown: they may "
              "have been delivered. Look at each conversation before sending to them again "
              f"(`bulkdm export {_shown(args.target)} --status failed` lists them)",
              file=sys.stderr if to_stdout else sys.stdout)
    if exported.duplicates:
        print(f"left out {exported.duplicates} skipped duplicate(s): an earlier line has the same "
              "recipient, who gets that line's message", file=sys.stderr if to_stdout else sys.stdout)
    if exported.opted_out:
        print(f"left out {exported.opted_out} opted-out recipient(s): they asked not to be "
              "messaged again", file=sys.stderr if to_stdout else sys.stdout)
    if args.as_campaign and not to_stdout and exported.count:
        config = meta.settings_path if meta is not None else ""
        hint = f" --config {_shown(Path(config))}" if config else " --config SETTINGS.toml"
        print(f"run them with: bulkdm run {_shown(out)}{hint}")
    return 0


async def _export_replies(args: argparse.Namespace, fmt: ExportFormat, csv: CsvOptions,
                          to_stdout: bool) -> int:
    from bulkdm.export import export_replies
    from bulkdm.ownership import refuse_own_files

    if args.as_campaign or args.status:
        raise ConfigError("is for --records rows", source=COMMAND_LINE,
                          key="--as-campaign" if args.as_campaign else "--status")
    out = args.out or beside(args.target, f".replies-export.{fmt.value}")
    checkpoint = await _open_existing(args.target)
    try:
        if not to_stdout:
            await refuse_own_files(out, checkpoint, await checkpoint.plan_meta(),
                                   instead=_EXPORT_ELSEWHERE)
        count = await export_replies(checkpoint, sys.stdout.buffer if to_stdout else out,
                                     fmt=fmt, csv=csv)
    except ValueError as exc:
        raise ConfigError(str(exc), source=COMMAND_LINE, key="--format") from exc
    finally:
        await checkpoint.close()
    where = "stdout" if to_stdout else str(out)
    print(f"wrote {count} replies to {where}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _csv_options(args: argparse.Namespace, fmt: ExportFormat) -> CsvOptions:
    """The CSV flags, checked: they are refused for another format rather than ignored."""
    from bulkdm.export import CsvOptions, ExportFormat
    from bulkdm.handoff import CSV_DELIMITERS

    given = [flag for flag, value in (("--delimiter", args.delimiter), ("--bom", args.bom),
                                      ("--formula-safe", args.formula_safe)) if value]
    if fmt is not ExportFormat.CSV and given:
        raise ConfigError(f"is for CSV exports, not {fmt.value}", source=COMMAND_LINE,
                          key=given[0])
    if args.formula_safe and args.as_campaign:
        raise ConfigError("cannot go with --as-campaign: a retry file's texts are what gets "
                          "sent, so a ' put before a cell would be sent too. Export the retry "
                          "file without it", source=COMMAND_LINE, key="--formula-safe")
    # a .tsv file is tab-separated unless told otherwise
    tsv = args.out is not None and Path(args.out).suffix.lower() == ".tsv"
    name = args.delimiter or ("tab" if tsv else ",")
    delimiter = CSV_DELIMITERS.get(name.lower())
    if delimiter is None:
        raise ConfigError(f"{name!r} cannot separate fields; use one of "
                          f"{', '.join(CSV_DELIMITERS)}", source=COMMAND_LINE, key="--delimiter")
    return CsvOptions(delimiter=delimiter, bom=args.bom, formula_safe=args.formula_safe)


def _shown(path: Path) -> str:
    """A path as a person would type it here: relative to the current directory when inside it."""
    relative = os.path.relpath(os.path.abspath(path))
    return relative if not relative.startswith("..") else str(os.path.abspath(path))


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


REPLIES: Final = Command(
    name="replies",
    help="read the answers to a campaign's DMs: each recorded once, STOP shared as an opt-out",
    add_arguments=cli_replies.add_arguments, handler=cli_replies.replies)


OPTOUTS: Final = Command(
    name="optouts",
    help="the shared opt-outs: list, --add/--remove HANDLE_OR_ID --reason, --export FILE",
    add_arguments=cli_optouts.add_arguments, handler=cli_optouts.optouts)


# -- sandbox --------------------------------------------------------------------------------------


SANDBOX: Final = Command(name="sandbox", help="serve the local Xquik + GetXAPI sandbox",
                         add_arguments=sandbox_cli.add_arguments, handler=sandbox_cli.serve_args)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


#: every subcommand, in the order ``--help`` lists them; add more here
COMMANDS: Final[tuple[Command, ...]] = (PLAN, RUN, STATUS, EXPORT, REPLIES, ACCOUNTS, OPTOUTS,
                                        SANDBOX)


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
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            code = runner.run(_call(handler, args))
        sys.stdout.flush()  # here, where a reader gone is caught, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader left (`bulkdm status ... | head -3`): no traceback for what it did not want
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _EXIT_BROKEN_PIPE
    except StorageError as exc:
        print(f"bulkdm: stopped: {exc}. Nothing is lost: once the file can be written (free "
              "space, or make it writable), run the same command to resume.", file=sys.stderr)
        return _EXIT_STOPPED
    except BulkdmError as exc:
        # what went wrong and where, as a person reads it; the class name is no help there
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr)
        return 130


async def _call(
    handler: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    return await handler(args)
