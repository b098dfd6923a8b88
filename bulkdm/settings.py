"""Campaign settings: frozen, keyword-only objects loaded from TOML, flags and the environment.

The loader (``load_settings``) lives at the bottom of this module. Secrets are never stored here:
only the *names* of the environment variables that hold them (see :mod:`bulkdm.secrets`).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final, TypeVar

import orjson

from bulkdm import keys
from bulkdm.errors import ConfigError
from bulkdm.naming import beside, campaign_stem
from bulkdm.optout import DEFAULT_OPT_OUT
from bulkdm.policies.breakers import RefusalBreaker, SameErrorBreaker
from bulkdm.policies.jitter import Jitter, parse_jitter
from bulkdm.policies.spend import SpendCap, parse_spend
from bulkdm.policies.warmup import DEFAULT_WARMUP, Warmup, parse_warmup
from bulkdm.policies.windows import SendWindow, parse_send_window
from bulkdm.ratelimit import DEFAULT_LEAST_GUARD_S
from bulkdm.rates import MAX_DURATION_S, Rate, parse_duration_s, parse_rate
from bulkdm.secrets import holds_password, usual_env_name
from bulkdm.template import TemplateProblem, compile_template

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_READ_RATES",
    "AccountsSettings",
    "CampaignSettings",
    "CostSettings",
    "DmNotAllowedPolicy",
    "ProviderName",
    "ProviderSettings",
    "RetrySettings",
    "RunSettings",
    "SenderSettings",
    "Settings",
    "load_settings",
    "settings_fingerprint",
    "settings_path",
    "token_env_of",
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

#: the API key's read budget by default: half of what each provider publishes (Xquik: 300 GET
#: per second; GetXAPI's blog: 900 reads per 15 minutes), because the leaky bucket that meters
#: reads lets up to twice its rate through in one period after an idle spell
#: (:mod:`bulkdm.providers.readbudget`)
DEFAULT_READ_RATES: Final = {
    ProviderName.XQUIK: (Rate(count=150, period_s=1.0),),
    ProviderName.GETXAPI: (Rate(count=450, period_s=900.0),),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class CampaignSettings:
    name: str
    template: str | None = None
    suppression: tuple[Path, ...] = ()
    require_consent: bool = False
    #: CSV only: the field separator; ``None`` sniffs it from the header line
    delimiter: str | None = None
    #: the checkpoint's campaign identity (set from the checkpoint, never from a file): see
    #: :func:`bulkdm.keys.key_scope`
    campaign_id: str | None = None
    #: when DMs may leave, for every sender without its own (``None``: any time)
    send_window: SendWindow | None = None
    #: the most the campaign may spend (``max_spend``, ``max_credits``), retries included
    spend_cap: SpendCap = field(default_factory=SpendCap)
    #: human pacing for every sender without its own (``None``: none)
    jitter: Jitter | None = None
    #: the warm-up of every sender without its own ``warmup`` (``None``: no ramp)
    warmup: Warmup | None = DEFAULT_WARMUP

    @property
    def key_scope(self) -> str:
        """What every idempotency key of this campaign is derived from."""
        return keys.key_scope(self.name, self.campaign_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderSettings:
    name: ProviderName = ProviderName.XQUIK
    base_url: str = DEFAULT_BASE_URLS[ProviderName.XQUIK]
    api_key_env: str = DEFAULT_API_KEY_ENV[ProviderName.XQUIK]
    #: the API key's write budget, shared by all senders (Xquik: 120 POST / 60 s)
    rates: tuple[Rate, ...] = (Rate(count=120, period_s=60.0),)
    #: the API key's read budget (user lookups, write-action polls, history reads); ``None`` is
    #: the provider's own default (:data:`DEFAULT_READ_RATES`), see :attr:`read_limits`
    read_rates: tuple[Rate, ...] | None = None
    request_timeout_s: float = 30.0
    poll_timeout_s: float = 120.0

    @property
    def read_limits(self) -> tuple[Rate, ...]:
        """``read_rates``, or the named provider's default read budget when none is set."""
        return DEFAULT_READ_RATES[self.name] if self.read_rates is None else self.read_rates


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderSettings:
    account: str
    rates: tuple[Rate, ...] = (Rate(count=15, period_s=900.0),)
    daily_cap: int | None = 500
    #: GetXAPI only: the variable holding this sender's X session token; the loader gives a
    #: GetXAPI sender without one ``X_AUTH_TOKEN_`` and its label in capitals, any character a
    #: variable's name cannot hold as ``_``
    auth_token_env: str | None = None
    #: this sender's own send window (parts it leaves out come from the campaign's)
    send_window: SendWindow | None = None
    #: how its daily cap ramps up from its first send in the account ledger (``None``: no
    #: ramp, ``warmup = false``); only a sender with a daily cap and the ledger on is ramped.
    #: On by default: an account new to the ledger starts slowly
    warmup: Warmup | None = DEFAULT_WARMUP
    #: its own human pacing (``None``: the campaign's; a share of 0 turns it off)
    jitter: Jitter | None = None

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
    #: GetXAPI: how long after a send with an unknown outcome its conversation is read. The
    #: provider may still deliver a request the client gave up on; reading too soon and finding
    #: nothing would send the DM twice (GetXAPI has no idempotency key to catch it)
    settle_after_s: float = 120.0
    #: how far the provider's clock may run behind ours: a conversation read for an unknown
    #: outcome takes only this sender's messages created after our first attempt left, less
    #: this allowance (an earlier DM with the same text is another campaign's, not ours)
    clock_skew_s: float = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class CostSettings:
    xquik_credit_usd: float = 0.00015
    xquik_dm_credits: int = 10
    xquik_media_credits: int = 10
    xquik_lookup_credits: int = 1
    getxapi_dm_usd: float = 0.002
    getxapi_lookup_usd: float = 0.001
    #: reading replies: Xquik bills each message a history page returns, GetXAPI each page
    xquik_history_credits: int = 1
    getxapi_page_usd: float = 0.001


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    concurrency: int = 64
    on_dm_not_allowed: DmNotAllowedPolicy = DmNotAllowedPolicy.FAIL
    #: SQLite ``synchronous``: FULL survives power loss, NORMAL only process crashes
    synchronous: str = "FULL"
    #: how long a stop waits for in-flight sends before it leaves them to the next resume
    stop_grace_s: float = 30.0
    progress_interval_s: float = 10.0
    #: the least time added to every rate window, for jitter between the moment bulkdm counts a
    #: send and the moment the provider does; a window of P seconds gets 2 % of P (up to 1 s)
    #: when that is more
    rate_guard_s: float = DEFAULT_LEAST_GUARD_S
    #: a sender whose next send is further away than this ends its part of the run ("paused");
    #: ``until_done`` waits however long it takes instead (``bulkdm run --until-done``)
    max_rest_wait_s: float = 3600.0
    until_done: bool = False
    #: with ``until_done``, a run the same-error breaker stopped on a passing error (a 5xx, a
    #: timeout, a refused or cut connection) starts again after this; twice as long after each
    #: further stop that sent nothing, up to 16 times this
    outage_wait_s: float = 60.0
    #: an account whose recent sends are refused too often rests (every campaign with it)
    refusal_breaker: RefusalBreaker = field(default_factory=RefusalBreaker)
    #: the run stops when one error is most of its last sends, or reads are refused as
    #: throttled for longer than ``max_read_throttle_s`` with none answered (``sample = 0``:
    #: never)
    same_error_breaker: SameErrorBreaker = field(default_factory=SameErrorBreaker)


@dataclass(frozen=True, kw_only=True, slots=True)
class AccountsSettings:
    #: the account ledger shared by campaigns: a SQLite path, a ``postgresql://`` URL (its
    #: password from ``PGPASSWORD``, never this file) or ``off``; ``None``: ``BULKDM_LEDGER``
    #: or the default file (see :mod:`bulkdm.ledger`)
    ledger: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RepliesSettings:
    #: the opt-out rules (whole words or phrases, case-insensitive); see :mod:`bulkdm.optout`
    opt_out: tuple[str, ...] = DEFAULT_OPT_OUT
    #: ``bulkdm run`` reads replies this often while it waits (0: only ``bulkdm replies``)
    sync_every_s: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything a command needs, except secrets (read later, from the environment)."""

    campaign: CampaignSettings
    provider: ProviderSettings = field(default_factory=ProviderSettings)
    senders: tuple[SenderSettings, ...] = ()
    retry: RetrySettings = field(default_factory=RetrySettings)
    costs: CostSettings = field(default_factory=CostSettings)
    run: RunSettings = field(default_factory=RunSettings)
    accounts: AccountsSettings = field(default_factory=AccountsSettings)
    replies: RepliesSettings = field(default_factory=RepliesSettings)
    #: the TOML file these came from, if any
    source: Path | None = None
    #: values that are allowed but probably wrong (printed by the commands, never fatal)
    warnings: tuple[str, ...] = ()
    #: the senders by folded handle: :meth:`sender` is asked per send, and a pool has thousands
    _by_account: dict[str, SenderSettings] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_account: dict[str, SenderSettings] = {}
        for sender in self.senders:  # the first of a name wins, as a scan in order would
            by_account.setdefault(sender.account.casefold(), sender)
        object.__setattr__(self, "_by_account", by_account)

    def send_window_of(self, account: str) -> SendWindow | None:
        """When ``account`` may send: its own window, else the campaign's (``None``: any time)."""
        sender = self.sender(account)
        own = sender.send_window if sender is not None else None
        return own or self.campaign.send_window

    def jitter_of(self, account: str) -> Jitter | None:
        """How ``account``'s sends are spread: its own jitter, else the campaign's (``None``:
        none, also when a share of 0 turns it off)."""
        return self.sender_jitter(self.sender(account))

    def sender_jitter(self, sender: SenderSettings | None) -> Jitter | None:
        """:meth:`jitter_of` for a sender already found (no search: pools are large)."""
        own = sender.jitter if sender is not None else None
        jitter = own or self.campaign.jitter
        return jitter if jitter is not None and jitter.share > 0 else None

    def sender(self, account: str) -> SenderSettings | None:
        """The sender named ``account``, in any case: X handles are case-insensitive."""
        return self._by_account.get(account.removeprefix("@").casefold())


# -- the loader ---------------------------------------------------------------------------------

_T = TypeVar("_T")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IN_ENV_NAME: Final = re.compile(r"[^A-Z0-9_]")
#: the most a price or a spending cap may be: more is a slip, and a price times a campaign's
#: sends stays a finite number
_MAX_AMOUNT: Final = 1e12
#: the only control characters a message may hold: it may span lines, as a row's text may
_SPACING: Final = str.maketrans("", "", "\n\t")
_SECTIONS: Final = ("campaign", "provider", "senders", "retry", "costs", "run", "accounts",
                     "replies")
_DELIMITER_NAMES: Final = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}
#: the ledgers named by a URL (see :func:`bulkdm.ledger.ledger_spec`), not a SQLite file
_LEDGER_URLS: Final = ("postgresql://", "postgres://")
#: where a value came from when a flag set it
COMMAND_LINE: Final = "command line"


class _Table:
    """One TOML table being read: typed getters that name the key on error, then :meth:`done`."""

    def __init__(self, data: object, prefix: str, where: Callable[[str], str]) -> None:
        self.prefix = prefix
        self._where = where
        if not isinstance(data, dict):
            raise self.error("", "must be a table")
        self._data: dict[str, object] = dict(data)
        #: every key a reader asked for: the known keys, for "did you mean"
        self._asked: list[str] = []

    def error(self, key: str, message: str) -> ConfigError:
        full = f"{self.prefix}.{key}" if key else self.prefix
        return ConfigError(message, source=self._where(full), key=full)

    def take(self, key: str, kind: type[_T] | tuple[type, ...], default: _T, what: str) -> _T:
        self._asked.append(key)
        value = self._data.pop(key, default)
        # a TOML boolean is an int to Python; never accept one for a number
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.error(key, f"must be {what}, not {value!r}")
        if isinstance(value, int) and float in (kind if isinstance(kind, tuple) else (kind,)):
            # where a float goes, an integer is read as one; a huge one as infinity, which every
            # reader's bound refuses (float() would raise OverflowError instead)
            return _as_float(value)  # type: ignore[return-value]  # float is one of kind
        return value  # type: ignore[return-value]  # checked just above

    def text(self, key: str, default: str) -> str:
        value = self.take(key, str, default, "a string").strip()
        if not value or not value.isprintable():
            raise self.error(key, "must be a non-empty string of printable characters")
        return value

    def message(self, key: str) -> str:
        # a message may span lines and hold what isprintable() refuses but DMs carry (a no-break
        # space, an emoji's zero-width joiner): only control characters other than a line break
        # or a tab are refused. Stripped as a row's text is
        value = self.take(key, str, "", "a string").strip()
        if not value or any(unicodedata.category(c) == "Cc" for c in value.translate(_SPACING)):
            raise self.error(key, "must be non-empty text without control characters other "
                                  "than new lines (\\n) and tabs")
        return value

    def has(self, key: str) -> bool:
        self._asked.append(key)
        return key in self._data

    def optional_text(self, key: str) -> str | None:
        return self.text(key, "-") if self.has(key) else None

    def integer(self, key: str, default: int, *, minimum: int, maximum: int = 2**31) -> int:
        value = self.take(key, int, default, "an integer")
        if not minimum <= value <= maximum:
            raise self.error(key, f"must be between {minimum} and {maximum}, not {value}")
        return value

    def number(self, key: str, default: float) -> float:
        return self.amount(key, self.take(key, (int, float), default, "a number"))

    def amount(self, key: str, value: float) -> float:
        # every price and cap: from 0 to _MAX_AMOUNT, so never NaN or infinite
        if value < 0:
            raise self.error(key, f"must not be negative, not {value}")
        if not value <= _MAX_AMOUNT:  # NaN too: it fails every comparison
            raise self.error(key, f"must be a number from 0 to {_MAX_AMOUNT:g}, not {value}")
        return value + 0.0  # -0.0 is 0

    def duration_s(self, key: str, default_s: float, *, positive: bool = False) -> float:
        # from 0 to a year (parse_duration_s); positive where a 0 would mean no time at all to
        # answer, to poll or between two progress lines
        value = self.take(key, (str, int, float), default_s, 'a duration such as "30s"')
        try:
            seconds = parse_duration_s(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from exc
        if positive and seconds == 0:
            raise self.error(key, f"must be more than 0, not {value!r}")
        return seconds

    def rates(self, key: str, default: tuple[Rate, ...]) -> tuple[Rate, ...]:
        if not self.has(key):
            return default
        texts = self.texts(key, 'a rate such as "15/15m" or a list of them')
        if not texts:
            raise self.error(key, "needs at least one rate")
        try:
            return tuple(parse_rate(text) for text in texts)
        except ValueError as exc:
            raise self.error(key, str(exc)) from exc

    def texts(self, key: str, what: str) -> tuple[str, ...]:
        self._asked.append(key)
        value = self._data.pop(key, [])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise self.error(key, f"must be {what}")
        return tuple(items)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.take(key, str, default, "a string")
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def env_name(self, key: str, default: str | None) -> str | None:
        value = self.optional_text(key) if default is None else self.text(key, default)
        if value is not None and not _ENV_NAME.fullmatch(value):
            # never echoed: what is not a variable's name is most likely the secret itself
            raise self.error(key, "must name an environment variable (letters, digits, _), "
                                  "not hold the secret itself")
        return value

    def done(self) -> None:
        """Every key must have been read: anything left is unknown (a typo, most likely)."""
        if self._data:
            key = min(self._data)
            known = tuple(dict.fromkeys(self._asked))
            raise self.error(key, "unknown key; " + _did_you_mean(key, known))


def settings_path(campaign_path: Path, config_path: Path | None = None) -> Path | None:
    """``config_path`` if given (it must exist), else ``NAME.toml`` beside the campaign if any."""
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError("the settings file does not exist", source=config_path)
        return config_path
    default = beside(campaign_path, ".toml")
    return default if default.is_file() else None


def load_settings(
    campaign_path: Path,
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read the settings for ``campaign_path``: the TOML file, then ``overrides`` over it.

    ``overrides`` maps dotted keys (``"provider.base_url"``) to values, as flags give them;
    ``None`` values are ignored. Secrets are not read here.

    :raises ConfigError: naming the file (or the command line) and the key at fault.
    """
    source = settings_path(campaign_path, config_path)
    if source is None:  # every campaign needs [[senders]], which only a file can give
        raise _no_settings(campaign_path)
    data = _read_toml(source)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    _apply_overrides(data, given)

    def where(key: str) -> str:
        if key in given:
            return COMMAND_LINE
        return str(source)

    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError("unknown section; " + _did_you_mean(unknown[0], _SECTIONS),
                          source=where(unknown[0]), key=unknown[0])
    base_dir = (source or campaign_path).parent
    campaign = _campaign(_Table(data.get("campaign", {}), "campaign", where), campaign_path,
                         base_dir)
    provider = _provider(_Table(data.get("provider", {}), "provider", where))
    return Settings(
        campaign=campaign,
        provider=provider,
        senders=_senders(data.get("senders", []), provider.name, where, campaign),
        retry=_retry(_Table(data.get("retry", {}), "retry", where)),
        costs=_costs(_Table(data.get("costs", {}), "costs", where)),
        run=_run(_Table(data.get("run", {}), "run", where)),
        accounts=_accounts(_Table(data.get("accounts", {}), "accounts", where),
                           Path() if where("accounts.ledger") == COMMAND_LINE else base_dir),
        replies=_replies(_Table(data.get("replies", {}), "replies", where)),
        source=source,
        warnings=_warnings(data, source),
    )


def _no_settings(campaign_path: Path) -> ConfigError:
    beside = campaign_path.with_suffix(".toml")
    guess = _settings_guess(campaign_path)
    hint = f"pass --config {guess}" if guess is not None else "pass --config FILE"
    return ConfigError(
        f"no settings file: {beside.name} does not exist beside it; {hint}, or write "
        f"{beside.name} (README: Settings)",
        source=campaign_path,
    )


def _settings_guess(campaign_path: Path) -> Path | None:
    """The settings a derived file most likely goes with: ``customers.toml`` for
    ``customers.retry.jsonl``; else the only ``.toml`` file in the folder."""
    first = campaign_path.with_name(campaign_path.name.split(".")[0] + ".toml")
    if first.is_file():
        return first
    try:
        found = sorted(campaign_path.parent.glob("*.toml"))
    except OSError:
        return None
    return found[0] if len(found) == 1 else None


#: X allows about this many DMs a day per account; more risks the account
X_DAILY_DMS: Final = 500


def _did_you_mean(key: str, known: Sequence[str]) -> str:
    name = key.rpartition(".")[2]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        # of the close ones, the one that starts most like it: "retries" is "retry", not "replies"
        best = max(close, key=lambda c: len(os.path.commonprefix([c, name])))
        return f"did you mean {best!r}?"
    return f"known keys: {', '.join(known)}"


def _warnings(data: Mapping[str, object], source: Path | None) -> tuple[str, ...]:
    listed = data.get("senders")
    senders = [e if isinstance(e, dict) else {} for e in listed] if isinstance(listed, list) \
        else []
    return (*_cap_warnings(senders, source), *_env_warnings(data, senders, source))


def _cap_warnings(senders: list[dict[str, object]], source: Path | None) -> list[str]:
    found = []
    for number, entry in enumerate(senders, start=1):
        cap = entry.get("daily_cap")
        if isinstance(cap, int) and cap > X_DAILY_DMS:
            found.append(
                f"{source}, key 'senders[{number}].daily_cap': {cap} is over the about "
                f"{X_DAILY_DMS} DMs a day X allows an account; it may be restricted"
            )
    return found


def _env_warnings(data: Mapping[str, object], senders: list[dict[str, object]],
                  source: Path | None) -> list[str]:
    # a valid name with lower-case letters is more likely a pasted secret than a variable:
    # said here, where the file and key are known, and never echoed
    provider = data.get("provider")
    named = [("provider.api_key_env",
              provider.get("api_key_env") if isinstance(provider, dict) else None)]
    named += [(f"senders[{number}].auth_token_env", entry.get("auth_token_env"))
              for number, entry in enumerate(senders, start=1)]
    return [f"{source}, key {key!r}: has lower-case letters, unlike an environment variable's "
            "usual name (not shown: it may be a secret); it must name the variable that holds "
            "the secret, never hold the secret itself"
            for key, value in named
            if isinstance(value, str) and not usual_env_name(value.strip())]


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read the settings file: {exc.strerror}", source=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8; save the settings file as UTF-8", source=path) from exc


def _apply_overrides(data: dict[str, object], overrides: Mapping[str, object]) -> None:
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or section == "senders" or not key:
            raise ConfigError(
                "cannot be set from the command line", source=COMMAND_LINE, key=dotted
            )
        table = data.get(section, {})
        data[section] = {**table, key: value} if isinstance(table, dict) else table


def _campaign(table: _Table, campaign_path: Path, base_dir: Path) -> CampaignSettings:
    name = table.text("name", campaign_stem(campaign_path))
    template = table.message("template") if table.has("template") else None
    if template is not None:
        compiled = compile_template(template)
        if isinstance(compiled, TemplateProblem):
            raise table.error("template", compiled.message)
    suppression = tuple(
        base_dir / entry for entry in table.texts("suppression", "a file name or a list of them")
    )
    for path in suppression:
        if not path.is_file():
            raise table.error("suppression", f"the suppression file {path} does not exist")
    settings = CampaignSettings(
        name=name,
        template=template,
        suppression=suppression,
        require_consent=table.take("require_consent", bool, False, "true or false"),
        delimiter=_delimiter(table),
        send_window=_send_window(table, None),
        spend_cap=_spend_cap(table),
        jitter=_jitter(table, None),
        warmup=_warmup(table, DEFAULT_WARMUP),
    )
    table.done()
    return settings


def _spend_cap(table: _Table) -> SpendCap:
    usd = None
    if table.has("max_spend"):
        value = table.take("max_spend", (str, int, float), 0, 'an amount such as "25 USD"')
        try:
            spend = parse_spend(value)
        except ValueError as exc:
            raise table.error("max_spend", str(exc)) from exc
        usd = table.amount("max_spend", spend)
    credits = table.number("max_credits", 0.0) if table.has("max_credits") else None
    return SpendCap(usd=usd, credits=credits)


def _delimiter(table: _Table) -> str | None:
    value = table.take("delimiter", (str, type(None)), None, 'a character such as ";" or "tab"')
    if value is None:
        return None
    value = _DELIMITER_NAMES.get(value.lower(), value)
    if len(value) != 1 or value in "\"\r\n" or value.isalnum():
        raise table.error("delimiter", f'{value!r} cannot separate fields; use ",", ";" or "tab"')
    return value


def _provider(table: _Table) -> ProviderSettings:
    name = ProviderName(table.choice("name", "xquik", tuple(ProviderName)))
    base_url = table.text("base_url", DEFAULT_BASE_URLS[name]).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise table.error("base_url", f"{base_url!r} must start with http:// or https://")
    defaults = ProviderSettings()
    settings = ProviderSettings(
        name=name,
        base_url=base_url,
        api_key_env=table.env_name("api_key_env", DEFAULT_API_KEY_ENV[name]) or "",
        rates=table.rates("rate", defaults.rates),
        read_rates=table.rates("read_rate", ()) if table.has("read_rate") else None,
        request_timeout_s=table.duration_s("request_timeout", defaults.request_timeout_s,
                                           positive=True),
        poll_timeout_s=table.duration_s("poll_timeout", defaults.poll_timeout_s, positive=True),
    )
    table.done()
    return settings


_WINDOW_KEYS: Final = ("send_hours", "send_days", "timezone")


def _send_window(table: _Table, base: SendWindow | None) -> SendWindow | None:
    """The window a table's ``send_hours``, ``send_days`` and ``timezone`` give; the parts it
    leaves out are ``base``'s (the campaign's), or the whole day, every day, UTC."""
    hours, days, zone = (table.optional_text(key) for key in _WINDOW_KEYS)
    if hours is None and days is None and zone is None:
        return base
    try:
        window = parse_send_window(hours, days, zone)
    except ValueError as exc:
        key = next((k for k in _WINDOW_KEYS[:2] if k in str(exc)), "timezone")
        raise table.error(key, str(exc)) from exc
    if base is None:
        return window
    return replace(window,
                   start_min=base.start_min if hours is None else window.start_min,
                   end_min=base.end_min if hours is None else window.end_min,
                   days=base.days if days is None else window.days,
                   zone=base.zone if zone is None else window.zone)


def _senders(
    data: object, provider: ProviderName, where: Callable[[str], str],
    campaign: CampaignSettings | None = None,
) -> tuple[SenderSettings, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(
            "add at least one [[senders]] table with the account to send from",
            source=where("senders"),
            key="senders",
        )
    senders: list[SenderSettings] = []
    seen: set[str] = set()  # a set: a pool of 10,000 senders compared pairwise took seconds
    for number, entry in enumerate(data, start=1):
        sender = _sender(_Table(entry, f"senders[{number}]", where), provider, campaign)
        if sender.account.casefold() in seen:
            raise ConfigError(
                f"the account {sender.account!r} is listed twice",
                source=where(f"senders[{number}].account"),
                key=f"senders[{number}].account",
            )
        senders.append(sender)
        seen.add(sender.account.casefold())
    _check_tokens(senders, where)
    return tuple(senders)


def _check_tokens(senders: Sequence[SenderSettings], where: Callable[[str], str]) -> None:
    # one X session token is one X account: two senders on it would each keep the account's
    # budget, so together send twice what it allows
    first: dict[str, int] = {}
    for number, sender in enumerate(senders, start=1):
        if sender.auth_token_env is None:
            continue
        other = first.setdefault(sender.auth_token_env, number)
        if other != number:
            key = f"senders[{number}].auth_token_env"
            raise ConfigError(f"names the same token variable as senders[{other}] (given or "
                              "derived from the label); give each sender its own",
                              source=where(key), key=key)


def _sender(
    table: _Table, provider: ProviderName, campaign: CampaignSettings | None = None
) -> SenderSettings:
    if not table.has("account"):
        raise table.error("account", "is required: the account this sender acts as")
    defaults = SenderSettings(account="-")
    settings = SenderSettings(
        account=table.text("account", "-").removeprefix("@"),
        rates=table.rates("rate", defaults.rates),
        daily_cap=table.integer("daily_cap", defaults.daily_cap or 500, minimum=1),
        auth_token_env=table.env_name("auth_token_env", None),
        send_window=_own_window(table, campaign.send_window if campaign else None),
        warmup=_warmup(table, campaign.warmup if campaign else DEFAULT_WARMUP),
        jitter=_jitter(table, None),
    )
    if settings.auth_token_env is not None and provider is not ProviderName.GETXAPI:
        raise table.error("auth_token_env", "is for GetXAPI senders only; remove it")
    table.done()
    if provider is ProviderName.GETXAPI and settings.auth_token_env is None:
        return replace(settings, auth_token_env=token_env_of(settings.account))
    return settings


def token_env_of(label: str) -> str:
    """The variable a GetXAPI sender's X session token is read from when its settings name none."""
    # a label is free text ("help-desk team"): every character a variable's name cannot hold
    # becomes _, so the name the error suggests can be exported (X_AUTH_TOKEN_HELP_DESK_TEAM)
    return "X_AUTH_TOKEN_" + _NOT_IN_ENV_NAME.sub("_", label.upper())


def _warmup(table: _Table, default: Warmup | None) -> Warmup | None:
    """``warmup``: a ramp, ``true`` (the default ramp) or ``false`` (none); ``default`` when
    the table leaves it out (the campaign's, else ``14d from 20%``)."""
    if not table.has("warmup"):
        return default
    what = 'true, false or a ramp like "14d from 20%"'
    value: str | bool = table.take("warmup", bool, True, what) \
        if isinstance(table._data.get("warmup"), bool) else table.take("warmup", str, "", what)
    try:
        ramp = parse_warmup(value)
    except ValueError as exc:
        raise table.error("warmup", str(exc)) from exc
    if ramp is not None and ramp.days * 86400.0 > MAX_DURATION_S:
        raise table.error("warmup", f"{value!r}: a ramp is at most 365 days")
    return ramp


def _jitter(table: _Table, default: Jitter | None) -> Jitter | None:
    if not table.has("jitter"):
        return default
    value = table.take("jitter", (str, int, float), "", 'a share such as "30%"')
    try:
        return parse_jitter(value)
    except ValueError as exc:
        raise table.error("jitter", str(exc)) from exc


def _own_window(table: _Table, campaign_window: SendWindow | None) -> SendWindow | None:
    window = _send_window(table, campaign_window)
    return None if window is campaign_window else window


def _retry(table: _Table) -> RetrySettings:
    defaults = RetrySettings()
    settings = RetrySettings(
        max_attempts=table.integer("max_attempts", defaults.max_attempts, minimum=1, maximum=100),
        base_delay_s=table.duration_s("base_delay", defaults.base_delay_s),
        max_delay_s=table.duration_s("max_delay", defaults.max_delay_s),
        settle_after_s=table.duration_s("settle_after", defaults.settle_after_s),
        clock_skew_s=table.duration_s("clock_skew", defaults.clock_skew_s),
    )
    if settings.max_delay_s < settings.base_delay_s:
        raise table.error("max_delay", "must not be shorter than base_delay")
    table.done()
    return settings


def _costs(table: _Table) -> CostSettings:
    defaults = CostSettings()
    settings = CostSettings(
        xquik_credit_usd=table.number("credit_price", defaults.xquik_credit_usd),
        xquik_dm_credits=table.integer("dm_credits", defaults.xquik_dm_credits, minimum=0),
        xquik_media_credits=table.integer("media_credits", defaults.xquik_media_credits, minimum=0),
        xquik_lookup_credits=table.integer(
            "lookup_credits", defaults.xquik_lookup_credits, minimum=0
        ),
        getxapi_dm_usd=table.number("getxapi_dm_price", defaults.getxapi_dm_usd),
        getxapi_lookup_usd=table.number("getxapi_lookup_price", defaults.getxapi_lookup_usd),
        xquik_history_credits=table.integer(
            "history_credits", defaults.xquik_history_credits, minimum=0),
        getxapi_page_usd=table.number("getxapi_page_price", defaults.getxapi_page_usd),
    )
    table.done()
    return settings


def _run(table: _Table) -> RunSettings:
    defaults = RunSettings()
    policies = tuple(DmNotAllowedPolicy)
    policy = table.choice("on_dm_not_allowed", defaults.on_dm_not_allowed, policies)
    synchronous = table.take("synchronous", str, defaults.synchronous, '"FULL" or "NORMAL"')
    if synchronous.upper() not in ("FULL", "NORMAL"):
        raise table.error("synchronous", f'must be "FULL" or "NORMAL", not {synchronous!r}')
    settings = RunSettings(
        concurrency=table.integer("concurrency", defaults.concurrency, minimum=1, maximum=10_000),
        on_dm_not_allowed=DmNotAllowedPolicy(policy),
        synchronous=synchronous.upper(),
        stop_grace_s=table.duration_s("stop_grace", defaults.stop_grace_s),
        progress_interval_s=table.duration_s("progress_interval", defaults.progress_interval_s,
                                             positive=True),
        rate_guard_s=table.duration_s("rate_guard", defaults.rate_guard_s),
        max_rest_wait_s=table.duration_s("max_rest_wait", defaults.max_rest_wait_s),
        until_done=table.take("until_done", bool, defaults.until_done, "true or false"),
        outage_wait_s=table.duration_s("outage_wait", defaults.outage_wait_s, positive=True),
        refusal_breaker=RefusalBreaker(
            sample=table.integer("refusal_sample", defaults.refusal_breaker.sample, minimum=1),
            threshold=_share(table, "refusal_threshold", defaults.refusal_breaker.threshold),
            cooldown_s=table.duration_s("refusal_cooldown", defaults.refusal_breaker.cooldown_s)),
        same_error_breaker=SameErrorBreaker(
            sample=table.integer("same_error_sample", defaults.same_error_breaker.sample,
                                 minimum=0),
            max_read_throttle_s=table.duration_s(
                "max_read_throttle", defaults.same_error_breaker.max_read_throttle_s,
                positive=True)),
    )
    table.done()
    return settings


def _share(table: _Table, key: str, default: float) -> float:
    """``"30%"`` (or ``0.3``) as a fraction between 0 and 1."""
    value = table.take(key, (str, int, float), default, 'a share such as "30%"')
    try:
        share = float(value[:-1]) / 100 if isinstance(value, str) and value.endswith("%") \
            else float(value)
    except ValueError as exc:
        raise table.error(key, f'{value!r} is not a share such as "30%"') from exc
    if not 0 <= share <= 1:
        raise table.error(key, f"{value!r} must be between 0% and 100%")
    return share


def _accounts(table: _Table, base_dir: Path) -> AccountsSettings:
    ledger = table.optional_text("ledger")
    if ledger is not None and ledger.startswith(_LEDGER_URLS) and holds_password(ledger):
        raise table.error("ledger", "holds a password; secrets come from the environment: "
                                    "set PGPASSWORD, or the whole URL in BULKDM_LEDGER")
    table.done()
    return AccountsSettings(ledger=None if ledger is None else _ledger_place(ledger, base_dir))


def _ledger_place(ledger: str, base_dir: Path) -> str:
    # a relative SQLite path is the settings file's, as a suppression file is: every folder a
    # campaign runs from must share one ledger, or its windows and caps are not shared
    if ledger.lower() == "off" or ledger.startswith(_LEDGER_URLS):
        return ledger
    return str(base_dir / Path(ledger).expanduser())


def _replies(table: _Table) -> RepliesSettings:
    rules = (table.texts("opt_out", "a list of words or phrases") if table.has("opt_out")
             else DEFAULT_OPT_OUT)
    settings = RepliesSettings(opt_out=rules,
                               sync_every_s=table.duration_s("sync_every", 0.0))
    table.done()
    return settings


def _as_float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:  # past a float's range: as far as a float goes
        return math.inf if number > 0 else -math.inf


def settings_fingerprint(settings: Settings) -> str:
    """SHA-256 of the settings that shape the plan, suppression file *contents* included.

    Rates, caps, costs, retries and run options are left out on purpose: they change how fast a
    campaign goes, not which rows it sends or what they say, so they may change between resumes.

    :raises ConfigError: a suppression file cannot be read.
    """
    campaign = settings.campaign
    material = {
        "campaign": campaign.name,
        "template": campaign.template,
        "require_consent": campaign.require_consent,
        "delimiter": campaign.delimiter,
        "suppression": [_file_digest(path) for path in campaign.suppression],
        "provider": settings.provider.name.value,
        "senders": [sender.account for sender in settings.senders],
    }
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        raise ConfigError(message, key="campaign.suppression") from exc
