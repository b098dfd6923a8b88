"""``bulkdm optouts``: list, add, remove and export the shared ledger's opt-outs."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from bulkdm.errors import ConfigError

if TYPE_CHECKING:  # imported when the command runs: `bulkdm --help` stays light
    from bulkdm.ledger import Ledger, Realm

__all__ = ["add_arguments", "optouts"]

_MANUAL: Final = "manual"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="PATH|URL",
                        help="the account ledger (default: $BULKDM_LEDGER, else "
                             "$XDG_STATE_HOME/bulkdm/ledger.sqlite)")
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

    spec = ledger_spec(args.ledger)
    if spec is None:
        raise ConfigError("the account ledger is off, and opt-outs live there; name one with "
                          "--ledger", source="environment", key="BULKDM_LEDGER")
    if (args.add or args.remove) and not (args.reason or "").strip():
        raise ConfigError("--add and --remove need --reason TEXT", source="command line",
                          key="optouts")
    realm = Realm.SANDBOX if args.sandbox else Realm.LIVE
    ledger = await open_ledger(spec, now_s=time.time())
    try:
        return await _optouts(ledger, realm, args)
    finally:
        await ledger.close()


async def _optouts(ledger: Ledger, realm: Realm, args: argparse.Namespace) -> int:
    from bulkdm.optouts import write_suppression

    now = time.time()
    if args.add:
        user_id, username = _who(args.add)
        await ledger.add_opt_out(realm, user_id=user_id, username=username,
                                 reason=args.reason.strip(), source=_MANUAL, now_s=now)
        print(f"opted out: {args.add.strip()} ({realm.value})")
        return 0
    if args.remove:
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
