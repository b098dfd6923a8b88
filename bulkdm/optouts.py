"""The opt-out store as commands use it: the shared account ledger's opt-outs of a campaign's
realm, read at plan time, edited by hand, and written as a suppression file.

Opt-outs live in the account ledger (:mod:`bulkdm.ledger`), so every campaign and every host
that shares the ledger sees them; with the ledger ``off`` there is no opt-out store.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bulkdm.handoff import write_atomic
from bulkdm.ledger import Ledger, OptOut, Realm, ledger_spec, open_ledger, realm_for
from bulkdm.settings import Settings
from bulkdm.timestamps import iso_utc

__all__ = [
    "OptedOut", "campaign_realm", "ledger_opt_outs", "open_store", "suppression_text",
    "write_suppression",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class OptedOut:
    """Every standing opt-out of a realm: user ids and lower-case usernames."""

    user_ids: frozenset[str] = frozenset()
    usernames: frozenset[str] = frozenset()


def campaign_realm(settings: Settings, *, sandbox: bool = False) -> Realm:
    """The realm a campaign's opt-outs live in: the sandbox's for a loopback base URL."""
    return realm_for(settings.provider.base_url, sandbox=sandbox)


async def open_store(settings: Settings,
                     environ: Mapping[str, str] | None = None) -> Ledger | None:
    """The campaign's ledger (``None`` when it is off).

    :raises LedgerError: it cannot be opened.
    """
    spec = ledger_spec(settings.accounts.ledger, environ)
    return None if spec is None else await open_ledger(spec, now_s=time.time())


async def ledger_opt_outs(settings: Settings, *, sandbox: bool = False) -> OptedOut:
    """The opt-outs a plan of ``settings`` skips (none when the ledger is off)."""
    ledger = await open_store(settings)
    if ledger is None:
        return OptedOut()
    try:
        listed = await ledger.opt_outs(campaign_realm(settings, sandbox=sandbox))
    finally:
        await ledger.close()
    return OptedOut(user_ids=frozenset(o.user_id for o in listed if o.user_id),
                    usernames=frozenset(o.username for o in listed if o.username))


def suppression_text(opt_outs: list[OptOut]) -> str:
    """A suppression file (``[campaign] suppression``): one user id or ``@username`` a line,
    with where and when each opt-out came from as a comment."""
    lines = ["# bulkdm opt-outs: one user id or @username a line (bulkdm optouts --export)"]
    for o in opt_outs:
        why = f"  # {iso_utc(o.at_s)} {o.source}: {o.reason}".replace("\n", " ")
        lines += [f"{o.user_id}{why}"] if o.user_id else []
        lines += [f"@{o.username}{why}"] if o.username else []
    return "\n".join(lines) + "\n"


def write_suppression(path: Path, opt_outs: list[OptOut]) -> int:
    """Write :func:`suppression_text` to ``path``; how many opt-outs it holds."""
    write_atomic(path, [suppression_text(opt_outs).encode()])
    return len(opt_outs)
