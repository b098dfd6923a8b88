"""The campaigns planned on this machine: a name seen again under a new identity is reported.

One JSON line per new campaign identity in ``$XDG_STATE_HOME/bulkdm/campaigns.jsonl``
(``~/.local/state`` without the variable). It only feeds a warning: a file that cannot be read
or written costs the warning, never the plan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import orjson

__all__ = ["CampaignEntry", "earlier_campaigns", "record_campaign", "registry_path"]

_FILE: Final = "campaigns.jsonl"


@dataclass(frozen=True, kw_only=True, slots=True)
class CampaignEntry:
    name: str
    campaign_id: str
    checkpoint: str
    planned_at: str


def registry_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(state) / "bulkdm" / _FILE


def earlier_campaigns(name: str, path: Path) -> list[CampaignEntry]:
    """The campaigns recorded under ``name``, oldest first ([] when there is no registry)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            entry = CampaignEntry(**orjson.loads(line))
        except (orjson.JSONDecodeError, TypeError):
            continue  # a line cut by a crash, or written by another version
        if entry.name == name:
            found.append(entry)
    return found


def record_campaign(entry: CampaignEntry, path: Path) -> str | None:
    """Append ``entry``; returns why it could not be recorded, or ``None``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as stream:
            stream.write(orjson.dumps(asdict(entry), option=orjson.OPT_APPEND_NEWLINE))
    except OSError as exc:
        return f"could not record the campaign in {path}: {exc.strerror}"
    return None
