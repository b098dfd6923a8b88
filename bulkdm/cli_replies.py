"""``bulkdm replies CAMPAIGN|CHECKPOINT``: read the answers to a campaign's DMs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bulkdm.errors import CheckpointError
from bulkdm.naming import beside, checkpoint_of
from bulkdm.settings import Settings, load_settings

if TYPE_CHECKING:  # imported when the command runs: `bulkdm --help` stays light
    from bulkdm.checkpoint import Checkpoint, PlanMeta
    from bulkdm.replies import SyncReport

__all__ = ["add_arguments", "replies"]

#: ``runner.ExitCode.STOPPED``: nothing could be read, and the same command goes on later
_EXIT_STOPPED = 4
#: ``runner.ExitCode.STOPPED_BY_POLICY``: the spend cap stopped the reads
_EXIT_POLICY = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="CAMPAIGN|CHECKPOINT",
                        help="a campaign file (its checkpoint is NAME.bulkdm.sqlite) or a checkpoint")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="settings file (default: the one the campaign was planned with, "
                             "by its name beside the campaign)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="the replies file (default: NAME.replies.jsonl beside the campaign)")
    parser.add_argument("--dry-run", action="store_true",
                        help="read nothing: say how many conversations a sync reads and its cost")
    parser.add_argument("--due", action="store_true",
                        help="read only the conversations a run's sync would read now (a quiet "
                             "one is read again after a quarter of its DM's age, at least "
                             "[replies] sync_every, at most a day); default: every one")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


async def replies(args: argparse.Namespace) -> int:
    from bulkdm.checkpoint import Checkpoint

    path = checkpoint_of(args.target)
    if not await asyncio.to_thread(path.is_file):
        raise CheckpointError(f"{path}: no checkpoint here; plan or run the campaign first")
    checkpoint = await Checkpoint.open(path)
    try:
        meta = await checkpoint.plan_meta()
        if meta is None:
            raise CheckpointError(f"{path} holds no plan yet; run `bulkdm plan` first")
        campaign = await asyncio.to_thread(_campaign_here, args.target, path, meta)
        settings = await asyncio.to_thread(_settings, campaign, meta, args.config)
        if args.dry_run:
            return await _dry_run(checkpoint, settings, args.json)
        return await _sync(checkpoint, settings, meta, args, campaign)
    finally:
        await checkpoint.close()


def _campaign_here(target: Path, checkpoint: Path, meta: PlanMeta) -> Path:
    """The campaign file where the command finds it: the target itself, or the plan's file by
    name beside the checkpoint (a campaign folder moved or copied since), else where the plan
    was made."""
    if target != checkpoint:
        return target
    here = checkpoint.with_name(Path(meta.campaign_path).name)
    return here if here.is_file() else Path(meta.campaign_path)


def _settings(campaign: Path, meta: PlanMeta, config: Path | None) -> Settings:
    """``--config``, else the plan's settings file by name beside ``campaign`` (a folder moved
    or copied: its own, not the old folder's), else the plan's own."""
    if config is None and meta.settings_path:
        recorded = Path(meta.settings_path)
        here = campaign.with_name(recorded.name)
        config = here if here.is_file() else recorded
    return load_settings(campaign, config_path=config)


async def _dry_run(checkpoint: Checkpoint, settings: Settings, as_json: bool) -> int:
    from bulkdm.report import estimate_reads

    conversations, senders = 0, set[str | None]()
    after_id = 0
    while rows := await checkpoint.sent_rows(after_id=after_id, limit=2000):
        after_id = rows[-1].id
        conversations += len(rows)
        senders.update(r.sender for r in rows)
    estimate = estimate_reads(settings, conversations=conversations, senders=len(senders))
    print(orjson.dumps(estimate.to_dict()).decode() if as_json else estimate.text())
    return 0


async def _sync(checkpoint: Checkpoint, settings: Settings, meta: PlanMeta,
                args: argparse.Namespace, campaign: Path) -> int:
    from bulkdm.optouts import campaign_realm, open_store
    from bulkdm.ownership import REPLIES_FILE, claim_replies_file, refuse_own_files
    from bulkdm.replies import (
        REPLIES_SUFFIX,
        CappedReads,
        replies_lock,
        sync_replies,
        write_replies_file,
    )
    from bulkdm.runlock import RunLock
    from bulkdm.runner import campaign_provider

    out = args.out or beside(campaign, REPLIES_SUFFIX)
    await refuse_own_files(out, checkpoint, meta, keep=REPLIES_FILE,
                           instead="write replies to another file")
    capped = settings.campaign.spend_cap.set
    # with a spend cap, the reads count with what the campaign's runs spent, and no run
    # spends meanwhile (each would count against the cap without seeing the other's spending:
    # a run's own syncs read within it): the run's lock is held, or the command is refused
    with RunLock(checkpoint.path) if capped else contextlib.nullcontext(), \
            replies_lock(checkpoint.path):
        budget = CappedReads(settings, await checkpoint.spend_counts()) if capped else None
        # before anything is read: a file that is not this campaign's is refused at no cost
        out = await claim_replies_file(checkpoint, out)
        ledger = await open_store(settings)
        try:
            async with campaign_provider(settings) as (used, provider, auths, _key):
                report = await sync_replies(checkpoint, used, provider, auths, ledger=ledger,
                                            realm=campaign_realm(used), now_s=time.time,
                                            budget=budget, due_only=args.due)
        finally:
            if ledger is not None:
                await ledger.close()
        added = await write_replies_file(checkpoint, out, campaign=meta.campaign)
    return _said(report, settings, args, out, added, None if budget is None else budget.note)


def _said(report: SyncReport, settings: Settings, args: argparse.Namespace, out: Path,
          added: int, capped: str | None) -> int:
    """Print what the sync read and recorded; its exit code."""
    credits, usd = report.cost(settings)
    result = {"conversations": report.conversations, "pages": report.pages,
              "results": report.results, "new_replies": report.new_replies,
              "new_opt_outs": report.opt_outs, "unread": report.unread, "credits": credits,
              "usd": usd, "replies_file": str(out), "written": added, "spend_cap": capped,
              "not_due": report.not_due}
    # every conversation left unread (the provider unreachable, a long throttle): a script
    # must not take the sync for done; 4 is the CLI's "stopped, the same command goes on"
    read_nothing = bool(report.unread) and report.pages == 0 and capped is None
    if args.json:
        print(orjson.dumps(result).decode())
    elif read_nothing:
        print("could not read any conversation (" + ", ".join(
            f"{code} {n}" for code, n in sorted(report.unread.items())) + "): nothing was "
            "recorded; run the same command again later")
    else:
        cost = f"{credits} credits (${usd:.4f})" if credits is not None else f"${usd:.4f}"
        which = f"{report.conversations} conversations due ({report.not_due} not due yet)" \
            if args.due else f"all {report.conversations} conversations"
        print(f"read {which} ({report.pages} pages, {cost}): "
              f"{report.new_replies} new replies, {report.opt_outs} new opt-outs; "
              f"{added} written to {out}")
        unread = {k: v for k, v in report.unread.items() if k != "spend_cap"}
        if unread:
            print("not read (run again later): " + ", ".join(
                f"{code} {n}" for code, n in sorted(unread.items())), file=sys.stderr)
    if capped is not None:
        # as a run stopped by its spend cap: the same command reads nothing more until it is raised
        print(f"stopped: {capped}; raise the cap to read the rest", file=sys.stderr)
        return _EXIT_POLICY
    return _EXIT_STOPPED if read_nothing else 0
