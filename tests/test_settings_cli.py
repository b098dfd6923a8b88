"""Settings through the real CLI in subprocesses: where the ledger goes whatever folder a command
runs from, bad numbers refused by ``plan`` before any run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

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
