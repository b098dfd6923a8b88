"""The README's usage commands run as written: every ``.venv/bin/bulkdm`` line of its examples, in
order, on a copy of ``campaigns/``, against the in-process sandbox (``--sandbox``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ".venv/bin/bulkdm"
#: exit codes a command of the examples may end with: done, or done with failed/invalid rows
#: (the example campaign holds both on purpose)
FINISHED = {0, 3}


def readme_commands() -> list[str]:
    """Each example line that runs bulkdm, in README order (the synopsis's lines, with their
    ``[optional]`` grammar, and the set-up's install line are left out: they are a grammar and
    an install; ``tests/test_readme_sandbox.py`` checks the synopses' flags)."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"),
                        flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(f"{PROGRAM} ")
            and "CAMPAIGN" not in line and "[" not in line and " sandbox " not in f"{line} "]


def test_the_readme_examples_are_found() -> None:
    commands = readme_commands()
    assert f"{PROGRAM} run campaigns/welcome.jsonl --sandbox" in commands
    assert any("--as-campaign" in c for c in commands)
    assert any(c.startswith(f"{PROGRAM} run campaigns/welcome.retry.") for c in commands)


@pytest.mark.timeout(180)
def test_the_readme_usage_commands_run_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    printed = ""
    for command in readme_commands():
        args = shlex.split(command)[1:]
        done = subprocess.run([sys.executable, "-m", "bulkdm", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode in FINISHED, f"{command}\n{done.stdout}\n{done.stderr}"
        if "--as-campaign" in args:
            printed = done.stdout
        elif printed:
            # the run command the export printed is the README's (which adds --sandbox)
            assert f"run them with: bulkdm {shlex.join(args[:-1])}" in printed, command
            printed = ""
    assert (tmp_path / "campaigns" / "welcome.xlsx").is_file()
    assert (tmp_path / "campaigns" / "welcome.retry.handoff.jsonl").is_file()
