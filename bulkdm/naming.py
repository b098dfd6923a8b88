"""One naming rule for the files a campaign gets by default, used by every command.

``NAME`` is the campaign file's name without its last suffix (``c.retry.jsonl`` is
``c.retry``), and a checkpoint's name without ``.bulkdm.sqlite``. Every default file is
``NAME`` plus a suffix, beside the file it is named after: the settings ``NAME.toml``, the
checkpoint ``NAME.bulkdm.sqlite``, the handoff file ``NAME.handoff.jsonl``, the exports
``NAME.export.jsonl``/``.csv`` and a retry campaign ``NAME.retry.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["CHECKPOINT_SUFFIX", "HANDOFF_SUFFIX", "beside", "campaign_stem", "checkpoint_of"]

CHECKPOINT_SUFFIX: Final = ".bulkdm.sqlite"
HANDOFF_SUFFIX: Final = ".handoff.jsonl"


def campaign_stem(path: Path) -> str:
    """``NAME`` of a campaign file or of a default checkpoint (see the module's docstring)."""
    if path.name.endswith(CHECKPOINT_SUFFIX) and path.name != CHECKPOINT_SUFFIX:
        return path.name.removesuffix(CHECKPOINT_SUFFIX)
    return path.stem


def beside(path: Path, suffix: str) -> Path:
    """``NAME`` + ``suffix``, in the folder of ``path``."""
    return path.with_name(campaign_stem(path) + suffix)


def checkpoint_of(target: Path) -> Path:
    """The checkpoint of a ``status``/``export`` target: a checkpoint itself, or a campaign's."""
    if target.name.endswith((".sqlite", ".db")):
        return target
    return beside(target, CHECKPOINT_SUFFIX)
