"""The exceptions bulkdm raises, grouped by what the caller can do about them.

An expected result (a DM sent, a recipient refused, a sender throttled, an outcome unknown) is a
value, never an exception: see :mod:`bulkdm.outcomes`. An exception means the command cannot go on.

    BulkdmError                   base; the CLI prints "Kind: message" and exits with code 1
      ConfigError                 stop before sending; names the file and the key (or variable)
      CampaignFileError           the campaign file itself cannot be opened (a bad row is a value)
      StorageError                a file the run writes cannot be written (disk full, read-only);
                                  names the file; ``run`` stops as on Ctrl-C and exits with code 4
      CheckpointError             the checkpoint cannot be used
        CheckpointLockedError       another runner holds it
        CheckpointMismatchError     the campaign or settings changed since the plan was made
        ForeignFileError            an output file holds records this checkpoint did not write
      LedgerError                 the account ledger (shared budgets) cannot be used; mid-run,
                                  ``run`` stops as on Ctrl-C and exits with code 4
        LedgerUnreachableError      it does not answer (down, hung, cut off)
      ProviderError               raised by providers only when no outcome fits
        AuthenticationError         the API credentials are refused for every call
        ProtocolError               a response breaks the documented contract
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "AuthenticationError",
    "BulkdmError",
    "CampaignFileError",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointMismatchError",
    "ConfigError",
    "ForeignFileError",
    "LedgerError",
    "LedgerUnreachableError",
    "ProtocolError",
    "ProviderError",
    "StorageError",
]


class BulkdmError(Exception):
    """Base of every error bulkdm raises on purpose."""


class ConfigError(BulkdmError):
    """Raised when settings are missing or wrong; names the file and key, or the variable."""

    def __init__(self, message: str, *, source: Path | str | None = None, key: str | None = None):
        self.source = str(source) if source is not None else None
        self.key = key
        where = ", ".join(p for p in (self.source, f"key {key!r}" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class CampaignFileError(BulkdmError):
    """Raised when the campaign file as a whole cannot be read (missing, a directory, unknown type)."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StorageError(BulkdmError):
    """Raised when a file bulkdm writes (the checkpoint, the handoff file) cannot be written: the
    disk is full, or the file or its file system is read-only. ``path`` names the file and
    ``reason`` says what is wrong. Nothing written before is lost: the run stops as on Ctrl-C and
    the same command resumes once the file can be written again."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write {path}: {reason}")

    @classmethod
    def from_os_error(cls, path: Path | str, exc: OSError) -> StorageError:
        """The error for a failed write of ``path``, its reason in words from ``exc.errno``."""
        reason = _OS_REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        return cls(path, reason)

    @classmethod
    def diagnosed(cls, path: Path | str, files: Sequence[Path], fallback: str) -> StorageError:
        """The error for ``path`` when the failed write's errno is not known (SQLite reports a
        full disk, a read-only file and a file size limit alike as an I/O error): the reason is
        read from the file system that holds ``files``, else ``fallback``."""
        return cls(path, _diagnose(files) or fallback)


_OS_REASONS: Final = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large (the file system's or the process's file size limit)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied (the file or its folder is read-only)",
    errno.EPERM: "operation not permitted (the file is read-only or immutable)",
    errno.EIO: "an I/O error",
}


#: less free space than this is a full disk for a writer of pages and lines
_FULL_BELOW_BYTES: Final = 1 << 20


def _diagnose(files: Sequence[Path]) -> str | None:
    try:
        fs = os.statvfs(files[0].parent)
        existing = [f for f in files if f.exists()]
        sizes = [f.stat().st_size for f in existing]
    except OSError:
        return None
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may use the reserve
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if fs.f_flag & os.ST_RDONLY:
        return _OS_REASONS[errno.EROFS]
    if any(not os.access(f, os.W_OK) for f in existing):
        return "the file is read-only (or immutable)"
    if free * fs.f_frsize < _FULL_BELOW_BYTES:
        return _OS_REASONS[errno.ENOSPC]
    if limit != resource.RLIM_INFINITY and any(s + _FULL_BELOW_BYTES > limit for s in sizes):
        return _OS_REASONS[errno.EFBIG]
    return None


class CheckpointError(BulkdmError):
    """Raised when the checkpoint file cannot be opened, migrated or trusted."""


class CheckpointLockedError(CheckpointError):
    """Raised when another process holds the checkpoint's runner lock."""

    def __init__(self, path: Path | str, holder: str):
        self.path = str(path)
        self.holder = holder
        super().__init__(f"{path} is in use by another run ({holder}); wait for it or stop it")


class CheckpointMismatchError(CheckpointError):
    """Raised when the campaign file or settings changed after sends began."""


class ForeignFileError(CheckpointError):
    """Raised when a file the checkpoint would rewrite holds records it did not write; the file
    is left as it is."""


class LedgerError(BulkdmError):
    """Raised when the account ledger cannot be opened or written; sending stops (an account's
    budget cannot be kept without it)."""


class LedgerUnreachableError(LedgerError):
    """Raised when the account ledger does not answer: its server is down, hung or cut off
    (nothing was written by the call that failed, or its transaction was rolled back)."""


class ProviderError(BulkdmError):
    """Raised by a provider client only when the run cannot continue and no outcome fits."""


class AuthenticationError(ProviderError):
    """Raised when the provider refuses the API key itself."""


class ProtocolError(ProviderError):
    """Raised when a provider answers outside its documented contract; keeps a short raw body."""

    def __init__(self, message: str, *, status: int | None = None, body: str = ""):
        self.status = status
        self.body = body[:500]
        super().__init__(f"{message} (HTTP {status}): {self.body}" if status else message)
