"""The account pool's ledger: one budget per X account and API key, shared by every campaign,
process and host. SQLite by default; PostgreSQL (``bulkdm[postgres]``) for several hosts.

Where it is, first match wins:

1. ``[accounts] ledger`` in the campaign's settings file;
2. the ``BULKDM_LEDGER`` environment variable;
3. ``$XDG_STATE_HOME/bulkdm/ledger.sqlite`` (``~/.local/state/bulkdm/ledger.sqlite``).

A ``postgresql://`` URL selects PostgreSQL, any other value a SQLite file, ``off`` no ledger
(each campaign keeps its own budgets, as before the pool).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bulkdm.errors import ConfigError
from bulkdm.ledger.base import (
    LEASE_S,
    OPTED_OUT_MESSAGE,
    CampaignLimits,
    Grant,
    Health,
    Ledger,
    OptOut,
    Realm,
    Rest,
    account_subject,
    campaign_key,
    campaign_name,
    effective_rates,
    key_subject,
    opt_out_entries,
    opted_out_entry,
)
from bulkdm.ledger.pool import AccountPool, Refusal, Ticket

__all__ = [
    "ENV_VAR",
    "LEASE_S",
    "OPTED_OUT_MESSAGE",
    "AccountPool",
    "CampaignLimits",
    "Grant",
    "Health",
    "Ledger",
    "OptOut",
    "Realm",
    "Refusal",
    "Rest",
    "Ticket",
    "account_subject",
    "campaign_key",
    "campaign_name",
    "default_ledger_path",
    "effective_rates",
    "key_subject",
    "ledger_spec",
    "open_ledger",
    "opt_out_entries",
    "opted_out_entry",
    "realm_for",
]

ENV_VAR: Final = "BULKDM_LEDGER"
_OFF: Final = "off"
_POSTGRES: Final = ("postgresql://", "postgres://")


def default_ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/bulkdm/ledger.sqlite``, or ``~/.local/state/bulkdm/ledger.sqlite``."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or ""
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "bulkdm" / "ledger.sqlite"


def ledger_spec(configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Where the ledger is (a path or a PostgreSQL URL), or ``None`` when it is off."""
    env = os.environ if environ is None else environ
    spec = (configured or env.get(ENV_VAR) or "").strip()
    if not spec:
        return str(default_ledger_path(env))
    return None if spec.lower() == _OFF else spec


async def open_ledger(spec: str, *, now_s: float, upgrade: bool = False) -> Ledger:
    """The ledger ``spec`` names (see :func:`ledger_spec`). A ledger of an earlier bulkdm is
    upgraded only with ``upgrade`` (a run's, which reserves: that bulkdm's runs on it then stop
    at their next reservation); other commands read it as it is.

    :raises ConfigError: a PostgreSQL URL without the ``postgres`` extra installed.
    :raises LedgerError: the ledger cannot be opened.
    """
    if spec.startswith(_POSTGRES):
        try:
            from bulkdm.ledger.postgres import PostgresLedger
        except ImportError as exc:
            raise ConfigError("a PostgreSQL ledger needs asyncpg: pip install 'bulkdm[postgres]'",
                              key="accounts.ledger") from exc
        return await PostgresLedger.open(spec, now_s=now_s, upgrade=upgrade)
    from bulkdm.ledger.sqlite import SqliteLedger

    return await SqliteLedger.open(_sqlite_path(spec), now_s=now_s, upgrade=upgrade)


def _sqlite_path(spec: str) -> Path:
    return Path(spec).expanduser()


def realm_for(base_url: str, *, sandbox: bool) -> Realm:
    """The sandbox realm for ``--sandbox`` and loopback base URLs (the sandbox, a test server),
    else the live one: a sandbox run never charges a real account's budget."""
    if sandbox:
        return Realm.SANDBOX
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return Realm.SANDBOX
    try:
        return Realm.SANDBOX if ipaddress.ip_address(host).is_loopback else Realm.LIVE
    except ValueError:
        return Realm.LIVE
