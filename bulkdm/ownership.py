"""The files a campaign lives on, and which of them an ``--out`` may name.

An output must not be one of the campaign's own files: written over the checkpoint it lost the
record of what was sent (planning again then messaged everyone again), over the campaign or
settings file the campaign's identity, and over the handoff or replies file the records a run
or a sync appends there (their writer kept writing into the replaced file, and the visible one
ended short). A replies file is rewritten whole when it no longer continues from its cursor, so
a checkpoint writes only a replies file it wrote before (recorded before the file is first
touched, as the handoff file's), or one that is empty or missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import HandoffCursor
from bulkdm.errors import CheckpointError, ConfigError, ForeignFileError
from bulkdm.naming import HANDOFF_SUFFIX, beside

if TYPE_CHECKING:
    from bulkdm.checkpoint import Checkpoint, PlanMeta
    from bulkdm.ledger import Ledger

__all__ = ["HANDOFF_FILE", "REPLIES_FILE", "claim_replies_file", "claim_the_campaign",
           "moved_here", "own_files", "refuse_a_copy", "refuse_own_files"]

#: what :func:`own_files` calls a handoff file
HANDOFF_FILE = "handoff file"
#: what :func:`own_files` calls a replies file (``replies`` passes it to keep its own)
REPLIES_FILE = "replies file"

#: ``bulkdm.replies.REPLIES_SUFFIX`` (not imported: that module loads the providers)
_REPLIES_SUFFIX = ".replies.jsonl"


async def own_files(checkpoint: Checkpoint, meta: PlanMeta | None) -> list[tuple[str, Path]]:
    """(what, path) of every file the campaign of ``checkpoint`` lives on or writes: the
    checkpoint and its SQLite side files, the campaign and settings files, every handoff and
    replies file it has written, and the default ones beside the campaign."""
    path = checkpoint.path
    own = [("checkpoint", path)]
    own += [(f"checkpoint's {part}", path.with_name(f"{path.name}-{part}"))
            for part in ("wal", "shm", "journal")]
    if meta is not None:
        campaign = Path(meta.campaign_path)
        own.append(("campaign file", campaign))
        if meta.settings_path:
            own.append(("settings file", Path(meta.settings_path)))
        own += [(HANDOFF_FILE, beside(campaign, HANDOFF_SUFFIX)),
                (REPLIES_FILE, beside(campaign, _REPLIES_SUFFIX))]
    for what, paths in (await checkpoint.owned_files()).items():
        own += [(what, Path(p)) for p in paths]
    return own


async def refuse_own_files(out: Path, checkpoint: Checkpoint, meta: PlanMeta | None, *,
                           instead: str, keep: str | None = None) -> None:
    """Raise if ``out`` is one of :func:`own_files` (but a ``keep`` one: a command's own kind).

    :raises ConfigError: naming ``out``, which file it is, and ``instead`` (what to do).
    """
    target = await asyncio.to_thread(out.resolve)
    for what, path in await own_files(checkpoint, meta):
        if what != keep and target == await asyncio.to_thread(path.resolve):
            raise ConfigError(f"{out} is the campaign's {what}; {instead}",
                              source="command line", key="--out")


async def claim_replies_file(checkpoint: Checkpoint, path: Path) -> Path:
    """Make ``path`` (made absolute, and returned) the checkpoint's replies file, unless it
    holds records this checkpoint did not write; a new file starts from the first reply.

    :raises ForeignFileError: ``path`` is not empty and this checkpoint never wrote it (another
        campaign's replies file, or any other file); it is left as it is.
    """
    # normalised as the run's paths are: one file is one string, whatever folder it ran from
    path = Path(await asyncio.to_thread(os.path.abspath, path))
    cursor = await checkpoint.replies_cursor()
    if await _same_file(cursor.path, path) or await checkpoint.wrote_replies(str(path)):
        # recorded for a checkpoint of before ownership was (the cursor's path was enough)
        await checkpoint.submit([cp.own_replies(str(path))])
        if cursor.path != str(path):  # written before, not the cursor's: written again whole
            await checkpoint.submit(cp.set_replies_cursor(
                HandoffCursor(seq=0, offset=0, path=str(path))))
        return path
    if await asyncio.to_thread(_size, path) and not await moved_here(checkpoint, path,
                                                                     kind=REPLIES_FILE):
        raise ForeignFileError(
            f"{path} holds records that {checkpoint.path} did not write (another campaign's "
            "replies file, or another file?); it was left as it is. Pass --out with a new file, "
            "or move that file away if it is this campaign's")
    # recorded before the file is touched: after a crash it is still known to be this one's
    await checkpoint.submit([cp.own_replies(str(path)), *cp.set_replies_cursor(
        HandoffCursor(seq=0, offset=0, path=str(path)))])
    return path


async def refuse_a_copy(checkpoint: Checkpoint) -> None:
    """Record that the checkpoint runs from where it is, unless it is a copy of one still where
    it last ran (the campaign's folder copied, not moved): both would send the rows left.

    :raises CheckpointError: naming both, and what to do.
    """
    here = await asyncio.to_thread(checkpoint.path.resolve)
    ran_at = await checkpoint.ran_at()
    if ran_at is not None and Path(ran_at) != here:
        meta = await checkpoint.plan_meta()
        identity = meta.campaign_id if meta is not None else ""
        if identity and await asyncio.to_thread(cp.campaign_identity, Path(ran_at)) == identity:
            raise CheckpointError(
                f"{checkpoint.path} is a copy of the campaign at {ran_at}, which is still there: "
                "two copies of one campaign would each send the rows left. Run it in one "
                "place (move a campaign's folder, do not copy it); to send the file again as "
                "a new campaign, plan it into a new checkpoint (--checkpoint)")
    await checkpoint.submit([cp.set_ran_at(str(here))])


async def claim_the_campaign(checkpoint: Checkpoint, ledger: Ledger, *, now_s: float) -> None:
    """Take the campaign's token in the account ledger, unless another checkpoint of the
    campaign (a copy of this one) took it since this one last did: the ledger keeps the token
    of the checkpoint that ran last, and each run passes it on. A copy whose original was
    renamed or synced elsewhere is refused so (the local check, :func:`refuse_a_copy`, finds
    no original). The new token is in the checkpoint before the ledger: a kill between the
    two leaves the ledger's, which the checkpoint still accepts.

    :raises CheckpointError: a copy ran since, or started at the same moment.
    """
    meta = await checkpoint.plan_meta()
    if meta is None or not meta.campaign_id:
        return
    # by its file's name too: a retry campaign keeps the identity (its keys) in a checkpoint
    # of its own name, while a copy keeps the name
    lineage = f"{meta.campaign_id}/{checkpoint.path.name}"
    current = await ledger.run_token(lineage)
    if current is not None and current not in await checkpoint.run_tokens():
        raise CheckpointError(
            f"{checkpoint.path} is a copy of campaign {meta.campaign} that another copy has "
            f"run since (the account ledger {ledger.location} says so): two copies of one "
            "campaign would each send the rows left. Run the copy that ran last (move a "
            "campaign's folder, do not copy it); to send the file again as a new campaign, "
            "plan it into a new checkpoint (--checkpoint)")
    token = secrets.token_hex(8)
    await checkpoint.submit(cp.set_run_tokens(token=token, before=current))
    await checkpoint.flush()
    if not await ledger.pass_run(lineage, from_token=current, to_token=token, now_s=now_s):
        raise CheckpointError(
            f"{checkpoint.path}: another copy of campaign {meta.campaign} started at the same "
            "moment; run one copy of a campaign at a time")


async def moved_here(checkpoint: Checkpoint, path: Path, *, kind: str) -> bool:
    """Whether ``path``, a file this checkpoint did not write there, is one it wrote in another
    folder (the campaign's folder was moved or copied since): it wrote a ``kind`` file of that
    name, and the first record in ``path`` that tells its writer is this checkpoint's (a send's
    idempotency key, which the campaign's identity makes its own; a reply's message id)."""
    if path.name not in {Path(p).name for p in (await checkpoint.owned_files())[kind]}:
        return False
    field = "idempotency_key" if kind == HANDOFF_FILE else "message_id"
    value = await asyncio.to_thread(_first_value, path, field)
    if value is None:
        return False
    if kind == HANDOFF_FILE:
        return await checkpoint.issued_key(value)
    return await checkpoint.recorded_reply(value)


def _first_value(path: Path, field: str) -> str | None:
    """The first string ``field`` of the JSON lines of ``path`` (the rows skipped or invalid
    at the plan, which come first in a handoff file, have no idempotency key)."""
    try:
        with path.open("rb") as lines:
            for line in lines:
                with contextlib.suppress(orjson.JSONDecodeError):
                    record = orjson.loads(line)
                    if isinstance(record, dict) and isinstance(record.get(field), str):
                        return str(record[field])
    except OSError:
        return None
    return None


async def _same_file(recorded: str | None, path: Path) -> bool:
    if recorded is None:
        return False
    # a cursor written before paths were made absolute may hold a relative one
    return recorded == str(path) or await asyncio.to_thread(
        lambda: Path(recorded).resolve() == path.resolve())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
