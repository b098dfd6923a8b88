"""The small things that cost a newcomer minutes (issue 15, item 4): the real CLI in a subprocess
where the behaviour is the CLI's, the loaders and renderer directly where it is theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bulkdm.campaign import CampaignReader
from bulkdm.errors import CampaignFileError, ConfigError
from bulkdm.settings import load_settings
from bulkdm.template import Template, compile_template, render

SETTINGS = """
[campaign]
name = "welcome"
template = "Hi {first_name|there}!"
[provider]
base_url = "http://127.0.0.1:8787/api/v1"
[[senders]]
account = "Alice"
"""


def bulkdm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    return subprocess.run([sys.executable, "-m", "bulkdm", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "c.toml").write_text(SETTINGS, encoding="utf-8")
    return tmp_path


def write_rows(folder: Path, *rows: dict[str, object]) -> None:
    (folder / "c.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def test_plan_exits_non_zero_when_every_row_is_invalid(workdir: Path) -> None:
    write_rows(workdir, {"recipient_username": "bad name"}, {"recipient_username": "@@"})
    result = bulkdm("plan", "c.jsonl", cwd=workdir)
    assert result.returncode == 3, result.stderr
    assert "invalid         2" in result.stdout
    write_rows(workdir, {"recipient_username": "good"}, {"recipient_username": "@@"})
    assert bulkdm("plan", "c.jsonl", cwd=workdir).returncode == 0


def test_plan_of_a_missing_file_says_so_before_any_settings(tmp_path: Path) -> None:
    result = bulkdm("plan", "nothere.csv", cwd=tmp_path)  # no settings file here either
    assert (result.returncode, result.stderr) == (1, "error: nothere.csv: no such file\n")


def test_the_plan_report_says_new_plan_and_skips_once(workdir: Path) -> None:
    write_rows(workdir, {"recipient_username": "amy"}, {"recipient_username": "AMY"})
    result = bulkdm("plan", "c.jsonl", cwd=workdir)
    lines = result.stdout.splitlines()
    assert lines[0].endswith(", new plan")
    assert [line for line in lines if "duplicate" in line] == ["skipped         1  duplicate 1"]


def test_a_csv_header_without_a_recipient_column_is_one_clear_error(tmp_path: Path) -> None:
    campaign = tmp_path / "c.csv"
    campaign.write_text("Recipient Username,text\namy,hi\n", encoding="utf-8")
    with pytest.raises(CampaignFileError) as caught, CampaignReader(campaign) as reader:
        list(reader)
    assert str(caught.value) == (
        f"{campaign}: no recipient column; found: Recipient Username, text; rename "
        "'Recipient Username' to 'recipient_username'")


def test_unknown_keys_and_sections_get_a_did_you_mean(workdir: Path) -> None:
    (workdir / "c.toml").write_text(SETTINGS + "[[senders]]\naccount = 'b'\ndaly_cap = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key; did you mean 'daily_cap'\?"):
        load_settings(workdir / "c.jsonl")
    (workdir / "c.toml").write_text(SETTINGS + "[retries]\nmax_attempts = 3\n")
    with pytest.raises(ConfigError, match=r"unknown section; did you mean 'retry'\?"):
        load_settings(workdir / "c.jsonl")


def test_sender_names_are_case_insensitive_as_x_handles_are(workdir: Path) -> None:
    write_rows(workdir, {"recipient_username": "amy", "sender": "@ALICE"},
               {"recipient_username": "ben", "sender": "bob"})
    result = bulkdm("plan", "c.jsonl", "--json", cwd=workdir)
    report = orjson.loads(result.stdout)
    assert report["senders"] == {"Alice": 1}  # the pinned row goes to the configured name
    assert report["invalid_by_reason"] == {"unknown_sender": 1}
    (workdir / "c.toml").write_text(SETTINGS + "[[senders]]\naccount = 'alice'\n")
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(workdir / "c.jsonl")


def test_a_daily_cap_over_what_x_allows_warns_and_goes_on(workdir: Path) -> None:
    (workdir / "c.toml").write_text(SETTINGS + "daily_cap = 900\n")
    write_rows(workdir, {"recipient_username": "amy"})
    result = bulkdm("plan", "c.jsonl", cwd=workdir)
    assert result.returncode == 0
    assert result.stderr == (
        "warning: c.toml, key 'senders[1].daily_cap': 900 is over the about 500 DMs a day X "
        "allows an account; it may be restricted\n")


def test_a_template_default_fills_a_missing_or_blank_value() -> None:
    template = compile_template("Hi {first_name|there}, {company|}!")
    assert isinstance(template, Template)
    assert render(template, {}) == "Hi there, !"
    assert render(template, {"first_name": " ", "company": "Acme"}) == "Hi there, Acme!"
    assert render(template, {"first_name": "Ann", "company": None}) == "Hi Ann, !"
    strict = compile_template("Hi {first_name}")
    assert isinstance(strict, Template)
    assert not isinstance(render(strict, {}), str)  # without a default it is still required
