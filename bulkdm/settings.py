"""Campaign settings: frozen, keyword-only objects loaded from TOML, flags and the environment.

The loader (``load_settings``) lives at the bottom of this module. Secrets are never stored here:
only the *names* of the environment variables that hold them (see :mod:`bulkdm.secrets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from bulkdm.rates import Rate

__all__ = [
    "DEFAULT_BASE_URLS",
    "CampaignSettings",
    "CostSettings",
    "DmNotAllowedPolicy",
    "ProviderName",
    "ProviderSettings",
    "RetrySettings",
    "RunSettings",
    "SenderSettings",
    "Settings",
]


class ProviderName(StrEnum):
    XQUIK = "xquik"
    GETXAPI = "getxapi"


class DmNotAllowedPolicy(StrEnum):
    FAIL = "fail"
    NEXT_SENDER = "next_sender"


DEFAULT_BASE_URLS: Final = {
    ProviderName.XQUIK: "https://xquik.com/api/v1",
    ProviderName.GETXAPI: "https://api.getxapi.com",
}
DEFAULT_API_KEY_ENV: Final = {
    ProviderName.XQUIK: "XQUIK_API_KEY",
    ProviderName.GETXAPI: "GETXAPI_API_KEY",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class CampaignSettings:
    name: str
    template: str | None = None
    suppression: tuple[Path, ...] = ()
    require_consent: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderSettings:
    name: ProviderName = ProviderName.XQUIK
    base_url: str = DEFAULT_BASE_URLS[ProviderName.XQUIK]
    api_key_env: str = DEFAULT_API_KEY_ENV[ProviderName.XQUIK]
    #: the API key's write budget, shared by all senders (Xquik: 120 POST / 60 s)
    rates: tuple[Rate, ...] = (Rate(count=120, period_s=60.0),)
    #: the API key's read budget (user lookups, history)
    read_rates: tuple[Rate, ...] = (Rate(count=300, period_s=1.0),)
    request_timeout_s: float = 30.0
    poll_timeout_s: float = 120.0


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderSettings:
    account: str
    rates: tuple[Rate, ...] = (Rate(count=15, period_s=900.0),)
    daily_cap: int | None = 500
    #: GetXAPI only: the variable holding this sender's X session token
    auth_token_env: str | None = None

    @property
    def windows(self) -> tuple[Rate, ...]:
        """Every window this sender must keep: its rates plus the daily cap."""
        cap = () if self.daily_cap is None else (Rate(count=self.daily_cap, period_s=86400.0),)
        return self.rates + cap


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrySettings:
    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0


@dataclass(frozen=True, kw_only=True, slots=True)
class CostSettings:
    xquik_credit_usd: float = 0.00015
    xquik_dm_credits: int = 10
    xquik_media_credits: int = 10
    xquik_lookup_credits: int = 1
    getxapi_dm_usd: float = 0.002
    getxapi_lookup_usd: float = 0.001


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    concurrency: int = 64
    on_dm_not_allowed: DmNotAllowedPolicy = DmNotAllowedPolicy.FAIL
    #: SQLite ``synchronous``: FULL survives power loss, NORMAL only process crashes
    synchronous: str = "FULL"
    #: how long a stop waits for in-flight sends before it leaves them to the next resume
    stop_grace_s: float = 30.0
    progress_interval_s: float = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything a command needs, except secrets (read later, from the environment)."""

    campaign: CampaignSettings
    provider: ProviderSettings = field(default_factory=ProviderSettings)
    senders: tuple[SenderSettings, ...] = ()
    retry: RetrySettings = field(default_factory=RetrySettings)
    costs: CostSettings = field(default_factory=CostSettings)
    run: RunSettings = field(default_factory=RunSettings)
    #: the TOML file these came from, if any
    source: Path | None = None

    def sender(self, account: str) -> SenderSettings | None:
        return next((s for s in self.senders if s.account == account), None)
