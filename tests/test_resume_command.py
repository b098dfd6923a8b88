"""The command a stopped run prints resumes it: the same checkpoint, handoff file and URL.
The real CLI in a subprocess, the sandbox over 127.0.0.1, paths with spaces."""

from __future__ import annotations

import os
import shlex
import signal
from collections import Counter
from pathlib import Path

import pytest

from bulkdm.cli import build_parser, checkpoint_path, resume_command
from bulkdm.naming import HANDOFF_SUFFIX, beside
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, handoff_lines, kill_when, start

_DEAD_URL = "http://127.0.0.1:9/api/v1"  # nothing listens: only --base-url reaches the sandbox


def _settings(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text(
        '[campaign]\ntemplate = "Hello {first_name}"\n\n'
        f'[provider]\nname = "xquik"\nbase_url = "{_DEAD_URL}"\nrate = "100000/1s"\n\n'
        '[[senders]]\naccount = "alice"\nrate = "4/1s"\n\n'
        '[retry]\nmax_attempts = 6\nbase_delay = "10ms"\nmax_delay = "100ms"\n',
        encoding="utf-8")
    return path


def _resume_line(stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("To resume: ")]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0].removeprefix("To resume: "))


async def test_the_printed_command_resumes_the_same_campaign(tmp_path: Path) -> None:
    folder = tmp_path / "my campaign"
    folder.mkdir()
    campaign = folder / "customers.csv"
    ids = [str(64_000 + i) for i in range(12)]
    campaign.write_text("recipient_id;first_name\n" + "".join(f"{i};n{i}\n" for i in ids),
                        encoding="utf-8")
    config = _settings(tmp_path / "conf dir" / "settings.toml")
    checkpoint = tmp_path / "state dir" / "ck.sqlite"
    checkpoint.parent.mkdir()
    out = tmp_path / "out dir" / "handoff.jsonl"
    out.parent.mkdir()
    async with running_sandbox() as sb:
        first = await kill_when(
            await start("run", str(campaign), "--config", str(config), "--checkpoint",
                        str(checkpoint), "--out", str(out), "--base-url", sb.xquik_url,
                        "--delimiter", ";", "--concurrency", "2", "--progress", "none"),
            lambda: len(sb.ledger) >= 3, signum=signal.SIGINT)
        assert first.code == 4, first.stdout + first.stderr
        words = _resume_line(first.stdout)
        assert words[:2] == ["bulkdm", "run"]
        resumed = await bulkdm(*words[1:], timeout_s=60)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert "plan planned" not in resumed.stdout and "plan replaced" not in resumed.stdout
    assert delivered == Counter(ids)  # each once: the same checkpoint, the same URL
    assert sorted(str(r["user_id"]) for r in handoff_lines(out)) == ids
    assert not (folder / "customers.handoff.jsonl").exists()


@pytest.mark.parametrize("argv", [
    ["run", "a b/c.retry.jsonl", "--progress", "none"],
    ["run", "c.csv", "--config", "x.toml", "--delimiter", "tab", "--name", "it's mine",
     "--provider", "getxapi", "--base-url", "http://127.0.0.1:1/v1", "--no-require-consent",
     "--sandbox", "--concurrency", "3", "--out", "o.jsonl", "--checkpoint", "k.db"],
    ["run", "c.jsonl", "--require-consent", "--amend"],
])
def test_every_run_flag_survives_the_resume_command(argv: list[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    given = parser.parse_args(argv)
    words = shlex.split(resume_command(given))
    assert words[:2] == ["bulkdm", "run"]
    again = parser.parse_args(words[1:])
    expected = {**vars(given), "amend": False}  # --amend acts once
    for name in ("campaign", "config", "checkpoint", "out"):
        value = getattr(again, name)
        assert value is None or value.is_absolute()
        if expected[name] is not None:
            expected[name] = Path(os.path.abspath(expected[name]))
    expected["checkpoint"] = again.checkpoint  # named even when it was the default
    expected["out"] = again.out
    assert vars(again) == expected
    assert again.checkpoint == Path(os.path.abspath(checkpoint_path(given)))
    assert again.out == Path(os.path.abspath(given.out or beside(given.campaign, HANDOFF_SUFFIX)))
