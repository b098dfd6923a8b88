from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from bulkdm.errors import ConfigError
from bulkdm.ledger import ledger_spec
from bulkdm.rates import Rate
from bulkdm.secrets import read_secret
from bulkdm.settings import (
    CampaignSettings,
    CostSettings,
    DmNotAllowedPolicy,
    ProviderName,
    ProviderSettings,
    RetrySettings,
    RunSettings,
    SenderSettings,
    Settings,
    load_settings,
    settings_fingerprint,
)

ISSUE_EXAMPLE = """
[campaign]
name = "welcome-2026-11"          # default: the campaign file's stem
template = "Hi {first_name}, ..." # for rows without text
suppression = ["do-not-contact.txt"]  # files of usernames or ids never messaged
require_consent = false
[provider]
name = "xquik"                    # xquik | getxapi
base_url = "http://127.0.0.1:8787/api/v1"
api_key_env = "XQUIK_API_KEY"
rate = "120/60s"
[[senders]]
account = "myxaccount"
rate = "15/15m"
daily_cap = 500
# auth_token_env = "X_AUTH_TOKEN_MYX"   # GetXAPI only
"""

MINIMAL = '[[senders]]\naccount = "me"\n'


@pytest.fixture
def campaign(tmp_path: Path) -> Path:
    path = tmp_path / "welcome.jsonl"
    path.write_text("")
    (tmp_path / "do-not-contact.txt").write_text("@spam\n")
    return path


def beside(campaign: Path, text: str) -> Path:
    path = campaign.with_suffix(".toml")
    path.write_text(text)
    return path


def test_the_example_from_the_issue_loads(campaign: Path) -> None:
    source = beside(campaign, ISSUE_EXAMPLE)
    assert load_settings(campaign) == Settings(
        campaign=CampaignSettings(
            name="welcome-2026-11",
            template="Hi {first_name}, ...",
            suppression=(campaign.parent / "do-not-contact.txt",),
        ),
        provider=ProviderSettings(
            base_url="http://127.0.0.1:8787/api/v1", rates=(Rate(count=120, period_s=60.0),)
        ),
        senders=(SenderSettings(account="myxaccount", rates=(Rate(count=15, period_s=900.0),)),),
        source=source,
    )


def test_every_section_and_key(campaign: Path) -> None:
    beside(
        campaign,
        """
[campaign]
delimiter = "tab"
require_consent = true
[provider]
name = "getxapi"
rate = ["100/60s", "5000/1d"]
read_rate = "50/1s"
request_timeout = "10s"
poll_timeout = 90
[[senders]]
account = "@one"
rate = ["15/15m", "100/1h"]
daily_cap = 300
auth_token_env = "X_AUTH_TOKEN_ONE"
[[senders]]
account = "two"
[retry]
max_attempts = 3
base_delay = "500ms"
max_delay = "2m"
settle_after = "5m"
clock_skew = "2s"
[costs]
credit_price = 0.0002
dm_credits = 12
media_credits = 11
lookup_credits = 2
getxapi_dm_price = 0.003
getxapi_lookup_price = 0.0015
[run]
concurrency = 8
on_dm_not_allowed = "next_sender"
synchronous = "normal"
stop_grace = "1m"
progress_interval = "5s"
""",
    )
    settings = load_settings(campaign)
    assert settings.campaign == CampaignSettings(
        name="welcome", delimiter="\t", require_consent=True
    )
    assert settings.provider == ProviderSettings(
        name=ProviderName.GETXAPI,
        base_url="https://api.getxapi.com",
        api_key_env="GETXAPI_API_KEY",
        rates=(Rate(count=100, period_s=60.0), Rate(count=5000, period_s=86400.0)),
        read_rates=(Rate(count=50, period_s=1.0),),
        request_timeout_s=10.0,
        poll_timeout_s=90.0,
    )
    assert settings.senders == (
        SenderSettings(
            account="one",
            rates=(Rate(count=15, period_s=900.0), Rate(count=100, period_s=3600.0)),
            daily_cap=300,
            auth_token_env="X_AUTH_TOKEN_ONE",
        ),
        # a GetXAPI sender without its own variable reads X_AUTH_TOKEN_ and its label
        SenderSettings(account="two", auth_token_env="X_AUTH_TOKEN_TWO"),
    )
    assert settings.retry == RetrySettings(max_attempts=3, base_delay_s=0.5, max_delay_s=120.0,
                                           settle_after_s=300.0, clock_skew_s=2.0)
    assert settings.costs == CostSettings(
        xquik_credit_usd=0.0002,
        xquik_dm_credits=12,
        xquik_media_credits=11,
        xquik_lookup_credits=2,
        getxapi_dm_usd=0.003,
        getxapi_lookup_usd=0.0015,
    )
    assert settings.run == RunSettings(
        concurrency=8,
        on_dm_not_allowed=DmNotAllowedPolicy.NEXT_SENDER,
        synchronous="NORMAL",
        stop_grace_s=60.0,
        progress_interval_s=5.0,
    )


def test_config_flag_wins_over_the_file_beside_the_campaign(campaign: Path, tmp_path: Path) -> None:
    beside(campaign, '[campaign]\nname = "beside"\n' + MINIMAL)
    other = tmp_path / "elsewhere" / "other.toml"
    other.parent.mkdir()
    other.write_text('[campaign]\nname = "other"\n' + MINIMAL)
    settings = load_settings(campaign, config_path=other)
    assert (settings.campaign.name, settings.source) == ("other", other)


def test_a_missing_config_file_is_an_error(campaign: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_settings(campaign, config_path=tmp_path / "nope.toml")
    assert caught.value.source == str(tmp_path / "nope.toml")


def test_without_any_settings_file_the_error_says_which_to_write_or_pass(campaign: Path) -> None:
    with pytest.raises(ConfigError, match="no settings file: welcome.toml does not exist") as caught:
        load_settings(campaign)
    assert "pass --config FILE" in str(caught.value)
    assert caught.value.source == str(campaign)


def test_a_derived_campaign_without_settings_is_told_which_to_pass(tmp_path: Path) -> None:
    (tmp_path / "customers.toml").write_text('[[senders]]\naccount = "a"\n', encoding="utf-8")
    (tmp_path / "other.toml").write_text("", encoding="utf-8")
    retry = tmp_path / "customers.retry.jsonl"
    retry.write_text("{}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"pass --config {tmp_path / 'customers.toml'}"):
        load_settings(retry)


def test_suppression_paths_are_relative_to_the_settings_file(
    campaign: Path, tmp_path: Path
) -> None:
    config = tmp_path / "conf" / "s.toml"
    config.parent.mkdir()
    (config.parent / "dnc.txt").write_text("someone\n")
    config.write_text('[campaign]\nsuppression = "dnc.txt"\n' + MINIMAL)
    assert load_settings(campaign, config_path=config).campaign.suppression == (
        config.parent / "dnc.txt",
    )


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('[campaign]\nnmae = "x"\n', "campaign.nmae", "unknown key"),
        ('[campain]\nname = "x"\n', "campain", "unknown section"),
        ('[provider]\nname = "twitter"\n', "provider.name", "must be one of xquik, getxapi"),
        ('[provider]\nrate = "120 per minute"\n', "provider.rate", "not a rate"),
        ('[provider]\nrate = "0/60s"\n', "provider.rate", "must both be positive"),
        ('[provider]\nbase_url = "ftp://x"\n', "provider.base_url", "http://"),
        ('[provider]\napi_key_env = "MY KEY"\n', "provider.api_key_env",
         "must name an environment variable"),
        ('[retry]\nbase_delay = "soon"\n', "retry.base_delay", "not a duration"),
        ("[retry]\nmax_attempts = true\n", "retry.max_attempts", "must be an integer"),
        ('[retry]\nbase_delay = "1m"\nmax_delay = "1s"\n', "retry.max_delay", "shorter"),
        ("[run]\nconcurrency = 0\n", "run.concurrency", "between 1 and"),
        ('[run]\nsynchronous = "OFF"\n', "run.synchronous", "FULL"),
        ('[run]\non_dm_not_allowed = "retry"\n', "run.on_dm_not_allowed", "next_sender"),
        ('[campaign]\ntemplate = "Hi {a.b}"\n', "campaign.template", "is not allowed"),
        ('[campaign]\nsuppression = ["gone.txt"]\n', "campaign.suppression", "does not exist"),
        ('[campaign]\ndelimiter = "ab"\n', "campaign.delimiter", "cannot separate"),
        ('[campaign]\nrequire_consent = "yes"\n', "campaign.require_consent", "true or false"),
        ("[costs]\ncredit_price = -1\n", "costs.credit_price", "negative"),
        ('[campaign]\nsend_hours = "9-18"\n', "campaign.send_hours", "HH:MM-HH:MM"),
        ('[campaign]\nsend_days = "weekdays"\n', "campaign.send_days", "mon..sun"),
        ('[campaign]\ntimezone = "Berlin"\n', "campaign.timezone", "unknown time zone"),
        ('[run]\nmax_rest_wait = "soon"\n', "run.max_rest_wait", "not a duration"),
        ('[run]\nrefusal_threshold = "lots"\n', "run.refusal_threshold", "not a share"),
        ('[campaign]\nmax_spend = "lots"\n', "campaign.max_spend", "25 USD"),
        ("[campaign]\nmax_credits = -5\n", "campaign.max_credits", "negative"),
        ('[run]\nrefusal_threshold = "130%"\n', "run.refusal_threshold", "between 0% and 100%"),
    ],
)
def test_bad_values_name_the_key_and_the_file(
    campaign: Path, text: str, key: str, message: str
) -> None:
    refused_naming_key_and_file(campaign, text, key, message)


def refused_naming_key_and_file(campaign: Path, text: str, key: str, message: str) -> None:
    source = beside(campaign, text + MINIMAL)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(campaign)
    assert (caught.value.source, caught.value.key) == (str(source), key)
    assert str(caught.value).startswith(f"{source}, key {key!r}: ")


@pytest.mark.parametrize(
    ("senders", "key", "message"),
    [
        ('[[senders]]\nrate = "1/1s"\n', "senders[1].account", "is required"),
        ('[[senders]]\naccount = "a"\n[[senders]]\naccount = "a"\n', "senders[2].account", "twice"),
        ('[[senders]]\naccount = "a"\ndaily_cap = 0\n', "senders[1].daily_cap", "between 1"),
        (
            '[[senders]]\naccount = "a"\nauth_token_env = "T"\n',
            "senders[1].auth_token_env",
            "GetXAPI",
        ),
        ('[[senders]]\naccount = "a"\nlimit = 3\n', "senders[1].limit", "unknown key"),
        ('senders = "a"\n', "senders", "at least one"),
    ],
)
def test_bad_senders_name_the_entry(campaign: Path, senders: str, key: str, message: str) -> None:
    beside(campaign, senders)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(campaign)
    assert caught.value.key == key


def test_a_file_that_is_not_toml_is_named(campaign: Path) -> None:
    source = beside(campaign, "[campaign\nname = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(campaign)
    assert caught.value.source == str(source)


def test_flags_override_the_file_and_their_errors_say_so(campaign: Path) -> None:
    beside(campaign, '[campaign]\nname = "from-file"\n' + MINIMAL)
    overrides = {"campaign.name": "from-flag", "provider.base_url": None, "run.concurrency": 3}
    settings = load_settings(campaign, overrides=overrides)
    assert (settings.campaign.name, settings.run.concurrency) == ("from-flag", 3)
    assert settings.provider.base_url == "https://xquik.com/api/v1"  # None means "not given"
    with pytest.raises(ConfigError, match="command line") as caught:
        load_settings(campaign, overrides={"provider.base_url": "nope"})
    assert caught.value.key == "provider.base_url"


def test_the_provider_choice_changes_the_defaults(campaign: Path) -> None:
    beside(campaign, '[provider]\nname = "getxapi"\n' + MINIMAL)
    provider = load_settings(campaign).provider
    assert (provider.base_url, provider.api_key_env) == (
        "https://api.getxapi.com",
        "GETXAPI_API_KEY",
    )


def test_the_fingerprint_follows_what_shapes_the_plan(campaign: Path) -> None:
    dnc = campaign.parent / "do-not-contact.txt"
    beside(campaign, ISSUE_EXAMPLE)
    first = settings_fingerprint(load_settings(campaign))
    assert settings_fingerprint(load_settings(campaign)) == first
    # pace and run options may change between resumes without replanning
    beside(
        campaign,
        ISSUE_EXAMPLE.replace('rate = "15/15m"', 'rate = "5/15m"') + "[run]\nconcurrency = 2\n",
    )
    assert settings_fingerprint(load_settings(campaign)) == first
    beside(campaign, ISSUE_EXAMPLE.replace("Hi {first_name}", "Hello {first_name}"))
    assert settings_fingerprint(load_settings(campaign)) != first
    beside(campaign, ISSUE_EXAMPLE)
    dnc.write_text("@spam\n@more\n")
    assert settings_fingerprint(load_settings(campaign)) != first


def test_a_senders_own_window_takes_the_parts_it_leaves_out_from_the_campaign(
    campaign: Path,
) -> None:
    beside(campaign, '[campaign]\nsend_hours = "09:00-18:00"\nsend_days = "mon-fri"\n'
                     'timezone = "Europe/Berlin"\n\n[[senders]]\naccount = "a"\n'
                     'send_hours = "10:00-12:00"\n\n[[senders]]\naccount = "b"\n')
    settings = load_settings(campaign)
    own, shared = settings.send_window_of("a"), settings.send_window_of("b")
    assert own is not None and own.describe() == "10:00-12:00 mon,tue,wed,thu,fri Europe/Berlin"
    assert shared is not None and shared.describe() == "09:00-18:00 mon,tue,wed,thu,fri Europe/Berlin"


def test_warmup_is_a_ramp_true_or_false(campaign: Path) -> None:
    beside(campaign, '[[senders]]\naccount = "a"\nwarmup = "7d from 50%"\n\n'
                     '[[senders]]\naccount = "b"\nwarmup = true\n\n[[senders]]\naccount = "c"\n'
                     '\n[[senders]]\naccount = "d"\nwarmup = false\n')
    settings = load_settings(campaign)
    ramps = [s.warmup.describe() if s.warmup else None for s in settings.senders]
    # on by default (an account new to the ledger ramps); false opts an established one out
    assert ramps == ["7d from 50%", "14d from 20%", "14d from 20%", None]


def test_the_campaigns_warmup_is_every_senders_default(campaign: Path) -> None:
    beside(campaign, '[campaign]\nwarmup = false\n\n[[senders]]\naccount = "a"\n\n'
                     '[[senders]]\naccount = "b"\nwarmup = "7d from 50%"\n')
    settings = load_settings(campaign)
    assert settings.campaign.warmup is None
    assert [s.warmup.describe() if s.warmup else None for s in settings.senders] == \
        [None, "7d from 50%"]
    beside(campaign, '[[senders]]\naccount = "a"\nwarmup = "slowly"\n')
    with pytest.raises(ConfigError, match="14d from 20%") as caught:
        load_settings(campaign)
    assert caught.value.key == "senders[1].warmup"


def test_max_spend_reads_dollars_in_any_usual_form(campaign: Path) -> None:
    for text in ('"25 USD"', '"$25"', '"25"', "25", "25.0"):
        beside(campaign, f"[campaign]\nmax_spend = {text}\n\n" + MINIMAL)
        assert load_settings(campaign).campaign.spend_cap.usd == 25.0


def test_a_sender_is_found_by_its_handle_in_any_case_also_after_a_replace() -> None:
    # looked up per send (send windows, warm-up): a dict built with the settings, not a scan
    senders = tuple(SenderSettings(account=f"Acct{n}", daily_cap=None) for n in range(3))
    settings = Settings(campaign=CampaignSettings(name="c"), senders=senders)
    assert settings.sender("@acct1") is senders[1]
    assert settings.sender("ACCT2") is senders[2]
    assert settings.sender("acct3") is None
    fewer = dataclasses.replace(settings, senders=senders[:1])
    assert fewer.sender("acct1") is None and fewer.sender("acct0") is senders[0]
    assert fewer == Settings(campaign=CampaignSettings(name="c"), senders=senders[:1])


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("myledger.sqlite", "{conf}/myledger.sqlite"),
        ("state/pool.sqlite", "{conf}/state/pool.sqlite"),
        ("~/pool.sqlite", "{home}/pool.sqlite"),
        ("/srv/bulkdm/ledger.sqlite", "/srv/bulkdm/ledger.sqlite"),
        ("postgresql://bulkdm@db.internal:5432/pool", "postgresql://bulkdm@db.internal:5432/pool"),
        ("postgres://bulkdm@db.internal/pool", "postgres://bulkdm@db.internal/pool"),
        ("off", "off"),
        ("OFF", "OFF"),
    ],
)
def test_a_relative_ledger_path_is_relative_to_the_settings_file(
    campaign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, expected: str
) -> None:
    config = tmp_path / "conf" / "s.toml"
    config.parent.mkdir()
    config.write_text(f'[accounts]\nledger = "{written}"\n' + MINIMAL)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the folder a command runs from must not matter
    ledger = load_settings(campaign, config_path=config).accounts.ledger
    assert ledger == expected.format(conf=config.parent, home=tmp_path / "home")
    assert (ledger_spec(ledger, {}) is None) == (written.lower() == "off")


def test_a_relative_ledger_path_holds_when_the_settings_path_is_relative(
    campaign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "s.toml").write_text('[accounts]\nledger = "l.sqlite"\n' + MINIMAL)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ledger = load_settings(campaign, config_path=Path("../conf/s.toml")).accounts.ledger
    assert ledger is not None and Path(ledger).resolve() == tmp_path / "conf" / "l.sqlite"


HUGE = "9" * 400  # a TOML integer past a float's range


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[run]\nrate_guard = inf\n", "run.rate_guard", "over a year"),
        ("[run]\nrate_guard = nan\n", "run.rate_guard", "not a duration"),
        ('[provider]\nrate = "99999999999999999999/1s"\n', "provider.rate", "at most 2147483647"),
        ('[provider]\nrate = "5/-1s"\n', "provider.rate", "must both be positive"),
        ('[[senders]]\naccount = "b"\nrate = "1/400d"\n', "senders[1].rate", "at most a year"),
        ("[campaign]\nmax_spend = nan\n", "campaign.max_spend", r"from 0 to 1e\+12, not nan"),
        ("[campaign]\nmax_spend = inf\n", "campaign.max_spend", r"from 0 to 1e\+12, not inf"),
        (f'[campaign]\nmax_spend = "{HUGE} USD"\n', "campaign.max_spend", "not inf"),
        ("[campaign]\nmax_credits = nan\n", "campaign.max_credits", "not nan"),
        ("[costs]\ncredit_price = nan\n", "costs.credit_price", "not nan"),
        ("[costs]\ncredit_price = inf\n", "costs.credit_price", "not inf"),
        (f"[costs]\ngetxapi_dm_price = {HUGE}\n", "costs.getxapi_dm_price", "not inf"),
        ("[provider]\nrequest_timeout = 0\n", "provider.request_timeout", "more than 0"),
        ("[provider]\nrequest_timeout = nan\n", "provider.request_timeout", "not a duration"),
        ("[provider]\npoll_timeout = -0.0\n", "provider.poll_timeout", "more than 0"),
        ("[run]\nprogress_interval = 0\n", "run.progress_interval", "more than 0"),
        ('[run]\nprogress_interval = "0ms"\n', "run.progress_interval", "more than 0"),
        ('[run]\noutage_wait = "0s"\n', "run.outage_wait", "more than 0"),
        ("[run]\noutage_wait = 1e300\n", "run.outage_wait", "over a year"),
        ('[run]\nmax_read_throttle = "0s"\n', "run.max_read_throttle", "more than 0"),
        ('[retry]\nsettle_after = "99999999999999999999999d"\n', "retry.settle_after",
         "over a year"),
        (f"[retry]\nbase_delay = {HUGE}\n", "retry.base_delay", "over a year"),
        ("[run]\nmax_rest_wait = 1e300\n", "run.max_rest_wait", "over a year"),
        ('[run]\nstop_grace = "-1s"\n', "run.stop_grace", "negative"),
        ("[run]\nrefusal_cooldown = -inf\n", "run.refusal_cooldown", "negative"),
        ("[replies]\nsync_every = inf\n", "replies.sync_every", "over a year"),
        (f"[campaign]\njitter = {HUGE}\n", "campaign.jitter", "between 0% and 100%"),
        ('[campaign]\nwarmup = "99999999999999999999d from 20%"\n', "campaign.warmup",
         "at most 365 days"),
    ],
)
def test_non_finite_and_absurd_numbers_name_the_key_and_the_file(
    campaign: Path, text: str, key: str, message: str
) -> None:
    # each was accepted (and later crashed a run, or said a NaN budget was kept) or raised a
    # Python error: now a ConfigError that names the file and the key
    refused_naming_key_and_file(campaign, text, key, message)


def test_zero_and_a_year_are_accepted_where_they_make_sense(campaign: Path) -> None:
    beside(campaign, '[run]\nstop_grace = 0\nrate_guard = "0s"\nmax_rest_wait = "365d"\n'
                     "[retry]\nbase_delay = 0\nsettle_after = -0.0\n[costs]\ncredit_price = 0\n"
                     '[provider]\nrate = "2147483647/365d"\n' + MINIMAL)
    settings = load_settings(campaign)
    assert (settings.run.stop_grace_s, settings.run.rate_guard_s) == (0.0, 0.0)
    assert settings.run.max_rest_wait_s == 365 * 86400.0
    assert settings.retry.base_delay_s == 0.0 and settings.costs.xquik_credit_usd == 0.0
    assert math.copysign(1.0, settings.retry.settle_after_s) == 1.0  # -0.0 is read as 0
    assert settings.provider.rates == (Rate(count=2**31 - 1, period_s=365 * 86400.0),)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[provider]\napi_key_env = "xq-SECRET/PASTED=="\n', "provider.api_key_env"),
        # a hex token (an X session token is 40 hex digits) that starts with a digit
        ('[provider]\napi_key_env = "9f86d081884c7d659a2feaa0c55ad015"\n', "provider.api_key_env"),
        ('[provider]\nname = "getxapi"\n[[senders]]\naccount = "b"\nauth_token_env = "Tok en:4f9a"\n',
         "senders[1].auth_token_env"),
    ],
)
def test_a_secret_where_a_variable_name_goes_is_refused_and_never_echoed(
    campaign: Path, text: str, key: str
) -> None:
    source = beside(campaign, text + MINIMAL)
    with pytest.raises(ConfigError, match="must name an environment variable") as caught:
        load_settings(campaign)
    assert (caught.value.source, caught.value.key) == (str(source), key)
    pasted = text.split('_env = "')[1].split('"')[0]
    assert pasted not in str(caught.value)


def test_a_variable_name_with_lower_case_letters_is_warned_about_and_never_echoed(
    campaign: Path,
) -> None:
    # a valid name, but an Xquik key pasted in its place looks just like this one
    source = beside(campaign, '[provider]\nname = "getxapi"\napi_key_env = "xq_SECRETPASTED123"\n'
                              '[[senders]]\naccount = "a"\nauth_token_env = "Tok_a"\n'
                              '[[senders]]\naccount = "b"\nauth_token_env = "TOK_B"\n')
    settings = load_settings(campaign)
    assert settings.provider.api_key_env == "xq_SECRETPASTED123"  # allowed: it may be a name
    assert [w.split(": ")[0] for w in settings.warnings] == [
        f"{source}, key 'provider.api_key_env'", f"{source}, key 'senders[1].auth_token_env'"]
    assert not any("SECRETPASTED" in w or "Tok_a" in w for w in settings.warnings)


@pytest.mark.parametrize(
    ("label", "variable"),
    [
        ("helpdesk", "X_AUTH_TOKEN_HELPDESK"),
        ("help-desk team", "X_AUTH_TOKEN_HELP_DESK_TEAM"),
        ("josé.b", "X_AUTH_TOKEN_JOS__B"),
        ("2nd_line", "X_AUTH_TOKEN_2ND_LINE"),
    ],
)
def test_a_getxapi_sender_without_a_variable_reads_one_that_can_be_exported(
    campaign: Path, label: str, variable: str
) -> None:
    beside(campaign, f'[provider]\nname = "getxapi"\n[[senders]]\naccount = "{label}"\n')
    (sender,) = load_settings(campaign).senders
    assert sender.auth_token_env == variable
    assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", variable)


def test_two_getxapi_senders_cannot_read_one_token_variable(campaign: Path) -> None:
    # "help-desk" and "help_desk" both derive X_AUTH_TOKEN_HELP_DESK: one X session for two
    # senders would let each spend the account's whole budget
    source = beside(campaign, '[provider]\nname = "getxapi"\n[[senders]]\naccount = "help-desk"\n'
                              '[[senders]]\naccount = "help_desk"\n')
    with pytest.raises(ConfigError, match=r"same token variable as senders\[1\]") as caught:
        load_settings(campaign)
    assert (caught.value.source, caught.value.key) == (str(source), "senders[2].auth_token_env")
    beside(campaign, '[provider]\nname = "getxapi"\n[[senders]]\naccount = "help-desk"\n'
                     '[[senders]]\naccount = "help_desk"\nauth_token_env = "X_AUTH_TOKEN_HD2"\n')
    assert len(load_settings(campaign).senders) == 2


def test_an_unset_variable_is_named_only_when_it_looks_like_one() -> None:
    with pytest.raises(ConfigError, match="export XQUIK_API_KEY=") as caught:
        read_secret("XQUIK_API_KEY", purpose="provider API key", environ={})
    assert caught.value.key == "XQUIK_API_KEY"
    with pytest.raises(ConfigError, match="holds the provider API key is not set") as caught:
        read_secret("xq_SECRETPASTED123", purpose="provider API key", environ={})
    assert "SECRETPASTED" not in str(caught.value) and caught.value.key is None
    # from a settings file: the error names the file and the key that names the variable
    with pytest.raises(ConfigError, match="export X_AUTH_TOKEN_AMY=") as caught:
        read_secret("X_AUTH_TOKEN_AMY", purpose="X session token of amy", environ={},
                    source="/srv/c.toml", key="senders[1].auth_token_env")
    assert str(caught.value).startswith("/srv/c.toml, key 'senders[1].auth_token_env': ")
    # set, it is read whatever its name
    found = read_secret("xq_lower", purpose="provider API key", environ={"xq_lower": " k "})
    assert found.reveal() == "k"


@pytest.mark.parametrize(
    ("toml", "template"),
    [
        ('"Hi {first_name}\\nline two"', "Hi {first_name}\nline two"),
        ('"Hi {first_name},\\tthanks"', "Hi {first_name},\tthanks"),
        # the closing line break of a """ string is trimmed, as a row's text is; the rest stays
        ('"""\nHi {first_name},\n\n  line three\n"""', "Hi {first_name},\n\n  line three"),
        # what isprintable() refuses but DMs carry: a no-break space, an emoji's joiner
        ('"Bonjour\\u00a0!"', "Bonjour\u00a0!"),
        ('"Pride \\U0001F3F3\\uFE0F\\u200D\\U0001F308"', "Pride \U0001f3f3\ufe0f\u200d\U0001f308"),
    ],
)
def test_a_template_may_span_lines(campaign: Path, toml: str, template: str) -> None:
    beside(campaign, f"[campaign]\ntemplate = {toml}\n" + MINIMAL)
    assert load_settings(campaign).campaign.template == template


@pytest.mark.parametrize("toml", ['"Hi\\u0007"', '"Hi\\r\\nthere"', '"\\u001b[31mHi"', '" \\n "'])
def test_a_template_refuses_other_control_characters(campaign: Path, toml: str) -> None:
    beside(campaign, f"[campaign]\ntemplate = {toml}\n" + MINIMAL)
    with pytest.raises(ConfigError, match="without control characters other than new") as caught:
        load_settings(campaign)
    assert caught.value.key == "campaign.template"
