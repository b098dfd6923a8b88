"""README.md's replies and opt-outs block, run as written after a run of the example campaign.

The example's settings point at a sandbox on 127.0.0.1:8787 (``bulkdm sandbox``); here the
sandbox takes a free port and a copy of ``campaigns/`` names it instead. Every command of the
block then runs in that copy's folder, in the README's order, through the real CLI.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import sys
from pathlib import Path

from tests.clikit import env_for, sandbox_process
from tests.test_readme_sandbox import README, README_PORT

_FIRST = ".venv/bin/bulkdm replies campaigns/welcome.jsonl --dry-run"


def _replies_block() -> list[list[str]]:
    """The fenced block of "Replies and opt-outs" that starts with :data:`_FIRST`, as argv lists
    for ``python -m bulkdm`` (a trailing ``# comment`` dropped)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(_FIRST)
    block = text[start:text.index("```", start)]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert all(words[0] == ".venv/bin/bulkdm" for words in commands), commands
    return [words[1:] for words in commands]


async def _bulkdm(folder: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkdm", *args, cwd=folder, env=env_for(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_readmes_replies_and_opt_outs_block_runs_as_written(tmp_path: Path) -> None:
    commands = _replies_block()
    assert [words[0] for words in commands] == [
        "replies", "replies", "optouts", "optouts", "optouts", "optouts", "export"]
    shutil.copytree(README.parent / "campaigns", tmp_path / "campaigns")
    async with sandbox_process() as urls:
        port = urls["sandbox"].rsplit(":", 1)[1]
        settings = tmp_path / "campaigns" / "welcome.toml"
        assert f"127.0.0.1:{README_PORT}" in settings.read_text(encoding="utf-8")
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}"), encoding="utf-8")
        code, output = await _bulkdm(tmp_path, "run", "campaigns/welcome.jsonl")
        assert code in (0, 3), output  # the example has rows that fail on purpose
        outputs = []
        for words in commands:
            code, output = await _bulkdm(tmp_path, *words)
            assert code == 0, (words, output)
            outputs.append(output)
    dry_run, replies, listed, added, removed, exported, export = outputs
    planned = re.search(r"reading replies of (\d+) DMs", dry_run)
    assert planned is not None and int(planned[1]) > 0, dry_run
    # the run's DMs, each conversation read once (the example has no one who answers)
    assert f"read all {planned[1]} conversations" in replies and "0 new opt-outs" in replies, replies
    assert listed.startswith("0 opt-outs in "), listed
    assert "opted out: @someone" in added and "lifted 1 opt-out entry for @someone" in removed
    assert exported.startswith("wrote 0 opt-outs to do-not-contact.txt"), exported
    assert (tmp_path / "do-not-contact.txt").is_file()
    assert export.startswith("wrote 0 replies to campaigns/welcome.replies-export.csv"), export
    assert (tmp_path / "campaigns" / "welcome.replies-export.csv").is_file()
