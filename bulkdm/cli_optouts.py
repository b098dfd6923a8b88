"""``bulkdm optouts``: list, add, remove and export the shared ledger's opt-outs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from bulkdm.errors import ConfigError

if TYPE_CHECKING:  # imported when the command runs: `bulkdm --help` stays light
    from bulkdm.ledger import Ledger, Realm
    from bulkdm.settings import Settings

__all__ = ["add_arguments", "optouts"]

_MANUAL: Final = "manual"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign", nargs="?", type=Path, metavar="CAMPAIGN",
                        help="a campaign file: its settings' [accounts] ledger, and the sandbox's "
                             "opt-outs for a loopback base_url")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="settings file whose ledger and realm to use (default: NAME.toml "
                             "beside CAMPAIGN)")
    parser.add_argument("--ledger", metavar="PATH|URL",
                        help="the account ledger (default: the campaign's [accounts] ledger, "
                             "else $BULKDM_LEDGER, else $XDG_STATE_HOME/bulkdm/ledger.sqlite)")
    parser.add_argument("--sandbox", action="store_true",
                        help="the sandbox's opt-outs (runs against a loopback URL)")
    edit = parser.add_mutually_exclusive_group()
    edit.add_argument("--add", metavar="HANDLE_OR_ID", help="record an opt-out by hand")
    edit.add_argument("--remove", metavar="HANDLE_OR_ID",
                      help="lift an opt-out (by the user id or the username it was recorded with)")
    edit.add_argument("--export", type=Path, metavar="FILE",
                      help="write every opt-out as a suppression file ([campaign] suppression)")
    parser.add_argument("--reason", help="why (required with --add and --remove)")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def _who(raw: str) -> tuple[str | None, str | None]:
    from bulkdm.recipients import canonical_id, canonical_username

    text = raw.strip()
    if text.isdigit():
        user_id = canonical_id(text)
        if user_id is not None:
            return user_id, None
    username = canonical_username(text)
    if username is None:
        raise ConfigError(f"{raw!r} is neither an X username nor a user id",
                          source="command line", key="optouts")
    return None, username.lower()


async def optouts(args: argparse.Namespace) -> int:
    from bulkdm.ledger import Realm, ledger_spec, open_ledger
    from bulkdm.optouts import campaign_realm

    # `is not None`: an empty handle (a shell variable left unset) is refused by _who, not
    # taken for no --add at all, which listed the opt-outs and exited 0
    editing = args.add is not None or args.remove is not None
    if editing and not (args.reason or "").strip():
        raise ConfigError("--add and --remove need --reason TEXT", source="command line",
                          key="optouts")
    settings = _campaign_settings(args.campaign, args.config)
    spec = ledger_spec(args.ledger or (settings.accounts.ledger if settings else None))
    if spec is None:
        raise _ledger_off(settings if args.ledger is None else None)
    realm = (Realm.SANDBOX if args.sandbox else
             campaign_realm(settings) if settings is not None else Realm.LIVE)
    ledger = await open_ledger(spec, now_s=time.time())
    try:
        return await _optouts(ledger, realm, args)
    finally:
        await ledger.close()


def _campaign_settings(campaign: Path | None, config: Path | None) -> Settings | None:
    """The settings of the campaign named (``None`` without one): where its opt-outs live."""
    from bulkdm.errors import CampaignFileError
    from bulkdm.settings import load_settings

    if campaign is None and config is None:
        return None
    if campaign is not None and not campaign.is_file():
        raise CampaignFileError(campaign, "is a directory" if campaign.is_dir() else "no such file")
    # without a campaign, the settings file stands in for it (only its own keys are read)
    settings = load_settings(campaign or config or Path(), config_path=config)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return settings


def _ledger_off(settings: Settings | None) -> ConfigError:
    if settings is not None and settings.accounts.ledger is not None:
        return ConfigError("is off, and opt-outs live in the ledger; use optouts --export and "
                           "[campaign] suppression instead, or name a ledger with --ledger",
                           source=settings.source, key="accounts.ledger")
    return ConfigError("the account ledger is off, and opt-outs live there; name one with "
                       "--ledger", source="environment", key="BULKDM_LEDGER")


async def _optouts(ledger: Ledger, realm: Realm, args: argparse.Namespace) -> int:
    from bulkdm.optouts import write_suppression

    now = time.time()
    if args.add is not None:
        user_id, username = _who(args.add)
        await ledger.add_opt_out(realm, user_id=user_id, username=username,
                                 reason=args.reason.strip(), source=_MANUAL, now_s=now)
        print(f"opted out: {args.add.strip()} ({realm.value})")
        return 0
    if args.remove is not None:
        user_id, username = _who(args.remove)
        lifted = await ledger.remove_opt_out(realm, user_id=user_id, username=username,
                                             reason=args.reason.strip(), now_s=now)
        print(f"lifted {lifted} opt-out entr{'y' if lifted == 1 else 'ies'} for "
              f"{args.remove.strip()}" if lifted else f"{args.remove.strip()} had not opted out")
        return 0 if lifted else 1
    listed = await ledger.opt_outs(realm)
    if args.export is not None:
        count = await asyncio.to_thread(write_suppression, args.export, listed)
        print(f"wrote {count} opt-outs to {args.export}")
        return 0
    if args.json:
        print(orjson.dumps({"ledger": ledger.location, "realm": realm.value, "opt_outs": [
            {"user_id": o.user_id, "username": o.username, "reason": o.reason,
             "source": o.source, "at_s": o.at_s} for o in listed]}).decode())
        return 0
    print(f"{len(listed)} opt-outs in {ledger.location} ({realm.value})")
    for o in listed:
        who = " ".join([*([o.user_id] if o.user_id else []),
                        *([f"@{o.username}"] if o.username else [])])
        print(f"  {who}  {o.source}: {o.reason}")
    return 0
