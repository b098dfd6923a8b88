"""Settings through the real CLI in subprocesses: where the ledger goes whatever folder a command
runs from, bad numbers refused by ``plan`` before any run, secrets never printed, a GetXAPI
label's token variable, a template over several lines as delivered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bulkdm.sandbox import running_sandbox
from tests.clikit import API_KEY, bulkdm

ROW = {"recipient_username": "bob", "first_name": "Bob"}


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    return subprocess.run([sys.executable, "-m", "bulkdm", *args], cwd=cwd,
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=60, check=False)


def _folders(tmp_path: Path, settings: str, campaign: str = "") -> tuple[Path, Path, Path]:
    """The issue's layout: ``camp/c.jsonl``, ``conf/s.toml`` (``campaign`` in its [campaign]
    table, ``settings`` after its sender) and an empty ``elsewhere/``."""
    camp, conf, elsewhere = (tmp_path / name for name in ("camp", "conf", "elsewhere"))
    for folder in (camp, conf, elsewhere):
        folder.mkdir()
    (camp / "c.jsonl").write_bytes(orjson.dumps(ROW) + b"\n")
    (conf / "s.toml").write_text(f'[campaign]\ntemplate = "Hi {{first_name}}"\n{campaign}'
                                 f'[[senders]]\naccount = "acme"\n{settings}', encoding="utf-8")
    return camp, conf, elsewhere


def test_a_relative_ledger_path_is_beside_the_settings_file_from_any_folder(
        tmp_path: Path) -> None:
    camp, conf, elsewhere = _folders(tmp_path, '[accounts]\nledger = "myledger.sqlite"\n')
    for cwd in (elsewhere, camp, tmp_path):
        done = _cli("plan", str(os.path.relpath(camp / "c.jsonl", cwd)), "--config",
                    str(os.path.relpath(conf / "s.toml", cwd)), cwd=cwd)
        assert done.returncode == 0, done.stderr
    # one ledger, shared by the runs from every folder (it was one per folder)
    assert sorted(tmp_path.rglob("myledger.sqlite")) == [conf / "myledger.sqlite"]


def test_a_relative_bulkdm_ledger_is_the_current_folders(tmp_path: Path) -> None:
    _, _, elsewhere = _folders(tmp_path, "")
    done = _cli("plan", "../camp/c.jsonl", "--config", "../conf/s.toml", cwd=elsewhere,
                env={"BULKDM_LEDGER": "shell.sqlite"})
    assert done.returncode == 0, done.stderr
    # the variable is the user's shell's: its relative path is where the command runs
    assert sorted(tmp_path.rglob("shell.sqlite")) == [elsewhere / "shell.sqlite"]


@pytest.mark.parametrize(
    ("settings", "campaign", "key"),
    [
        ("[run]\nrate_guard = inf\n", "", "run.rate_guard"),  # plan passed, run crashed
        ('[provider]\nrate = "99999999999999999999/1s"\n', "", "provider.rate"),  # a traceback
        ("", "max_spend = nan\n", "campaign.max_spend"),  # plan said the estimate was within it
    ],
)
def test_plan_refuses_absurd_numbers_naming_the_file_and_the_key(
        tmp_path: Path, settings: str, campaign: str, key: str) -> None:
    camp, conf, _ = _folders(tmp_path, settings, campaign)
    done = _cli("plan", str(camp / "c.jsonl"), "--config", str(conf / "s.toml"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {conf / 's.toml'}, key {key!r}: "), done.stderr
    assert "Traceback" not in done.stderr
    assert not (camp / "c.bulkdm.sqlite").exists()  # refused before anything was planned


def test_a_secret_pasted_as_the_key_variable_is_never_printed(tmp_path: Path) -> None:
    camp, conf, _ = _folders(tmp_path, '[provider]\napi_key_env = "xq_SECRETPASTED123"\n'
                                       '[accounts]\nledger = "off"\n')
    done = _cli("run", str(camp / "c.jsonl"), "--config", str(conf / "s.toml"), cwd=tmp_path)
    assert done.returncode == 1
    assert "SECRETPASTED" not in done.stdout + done.stderr
    # said where it came from (a warning names the file and key), and what is missing
    assert f"warning: {conf / 's.toml'}, key 'provider.api_key_env': " in done.stderr
    # the run's error names the file and key too
    assert (f"error: {conf / 's.toml'}, key 'provider.api_key_env': the environment variable "
            "that holds the provider API key is not set") in done.stderr
    settings = (conf / "s.toml").read_text(encoding="utf-8")
    (conf / "s.toml").write_text(settings.replace("xq_SECRETPASTED123", "xq-SECRET/PASTED=="))
    done = _cli("plan", str(camp / "c.jsonl"), "--config", str(conf / "s.toml"), cwd=tmp_path)
    assert done.returncode == 1 and "SECRET" not in done.stdout + done.stderr
    where = f"{conf / 's.toml'}, key 'provider.api_key_env'"
    assert f"{where}: must name an environment variable" in done.stderr


async def test_a_getxapi_label_with_spaces_reads_a_variable_that_can_be_exported(
        tmp_path: Path) -> None:
    campaign = tmp_path / "c.jsonl"
    campaign.write_bytes(orjson.dumps(ROW) + b"\n")
    async with running_sandbox() as sb:
        campaign.with_suffix(".toml").write_text(
            f'[campaign]\ntemplate = "Hi {{first_name}}"\n[provider]\nname = "getxapi"\n'
            f'base_url = "{sb.getxapi_url}"\n[[senders]]\naccount = "help-desk team"\n',
            encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
        env["GETXAPI_API_KEY"] = API_KEY
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        assert done.code == 1
        suggested = re.search(r"\(export (\S+)=\.\.\.\)", done.stderr)
        assert suggested is not None, done.stderr
        assert suggested.group(1) == "X_AUTH_TOKEN_HELP_DESK_TEAM"  # was ..._HELP-DESK TEAM
        env[suggested.group(1)] = "tok-help-desk team"  # the sandbox's sender is the token's
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        assert done.code == 0, done.stderr
        assert [d.sender for d in sb.ledger] == ["help-desk team"]


async def test_a_template_over_several_lines_is_delivered_with_its_lines(tmp_path: Path) -> None:
    campaign = tmp_path / "c.jsonl"
    campaign.write_bytes(orjson.dumps(ROW) + b"\n")
    campaign.with_suffix(".toml").write_text(
        '[campaign]\ntemplate = """\nHi {first_name},\n\tthanks for signing up.\n"""\n'
        '[[senders]]\naccount = "acme"\n', encoding="utf-8")
    async with running_sandbox() as sb:
        toml = campaign.with_suffix(".toml")
        toml.write_text(toml.read_text(encoding="utf-8")
                        + f'[provider]\nbase_url = "{sb.xquik_url}"\n', encoding="utf-8")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        assert done.code == 0, done.stderr
        # the closing line break of the """ string is trimmed, as a row's text is
        assert [d.text for d in sb.ledger] == ["Hi Bob,\n\tthanks for signing up."]
