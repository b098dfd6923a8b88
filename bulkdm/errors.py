"""The exceptions bulkdm raises, grouped by what the caller can do about them.

An expected result (a DM sent, a recipient refused, a sender throttled, an outcome unknown) is a
value, never an exception: see :mod:`bulkdm.outcomes`. An exception means the command cannot go on.

    BulkdmError                   base; the CLI prints "Kind: message" and exits with code 1
      ConfigError                 stop before sending; names the file and the key (or variable)
      CampaignFileError           the campaign file itself cannot be opened (a bad row is a value)
      CheckpointError             the checkpoint cannot be used
        CheckpointLockedError       another runner holds it
        CheckpointMismatchError     the campaign or settings changed since the plan was made
      LedgerError                 the account ledger (shared budgets) cannot be used
      ProviderError               raised by providers only when no outcome fits
        AuthenticationError         the API credentials are refused for every call
        ProtocolError               a response breaks the documented contract
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AuthenticationError",
    "BulkdmError",
    "CampaignFileError",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointMismatchError",
    "ConfigError",
    "LedgerError",
    "ProtocolError",
    "ProviderError",
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


class LedgerError(BulkdmError):
    """Raised when the account ledger cannot be opened or written; sending stops (an account's
    budget cannot be kept without it)."""


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
