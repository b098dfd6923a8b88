"""The commands README.md shows, run as written: the sandbox's in a subprocess, the synopses' flags.

Each ``bulkdm sandbox`` command found in README.md (in a fenced block or inline code) is started
as a subprocess through the ``bulkdm`` console script, with one change: ``--port 8787`` becomes
``--port 0`` (a fixed port would collide with anything else holding it on a shared machine), and
the port the sandbox prints replaces 8787 in the README's ``curl`` commands, which run next. A
command counts as working once its sandbox answers a request on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest

from bulkdm.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
README_PORT = "8787"
_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")


def _fenced_commands(text: str) -> Iterator[str]:
    """Each line of each fenced block, with ``\\`` continuations joined."""
    for block in _FENCE.findall(text):
        yield from (line.strip() for line in block.replace("\\\n", " ").splitlines())


def readme_commands(prefix: str) -> list[str]:
    """Every command in README.md that starts with ``prefix``, in order, each once. The README
    writes most as ``.venv/bin/bulkdm`` (where its set-up installs it): that is ``bulkdm`` on
    the PATH :func:`_env` gives."""
    text = README.read_text(encoding="utf-8")
    inline = _INLINE.findall(_FENCE.sub("", text))
    commands = [c.removeprefix(".venv/bin/") for c in [*_fenced_commands(text), *inline]]
    return list(dict.fromkeys(c for c in commands if c.startswith(prefix)))


def _words(command: str) -> list[str]:
    """The command as a shell splits it (a trailing ``# comment`` dropped)."""
    return shlex.split(command, comments=True)


def _as_run(command: str) -> list[str]:
    """The command's words, a synopsis unbracketed, the README's port replaced by 0."""
    words = _words(command.replace("[", "").replace("]", "").replace("...", ""))
    if "--port" in words:
        at = words.index("--port") + 1
        assert words[at] == README_PORT, command
        words[at] = "0"
    else:
        words += ["--port", "0"]
    return words


def _env() -> dict[str, str]:
    # `bulkdm` as the README writes it: the console script installed beside this interpreter
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}


@asynccontextmanager
async def serving(words: list[str]) -> AsyncIterator[str]:
    """Start the command; yield the sandbox's root URL once it prints it; stop it with SIGINT."""
    process = await asyncio.create_subprocess_exec(
        *words, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        first = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not first.startswith(b"sandbox "):
            _, err = await asyncio.wait_for(process.communicate(), timeout=10)
            pytest.fail(f"{shlex.join(words)} printed {first!r}, stderr {err.decode()!r}")
        yield first.split()[1].decode()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert b"stopped;" in out


async def _get(url: str) -> object:
    assert url.startswith("http://127.0.0.1:"), url
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        assert answer.status == 200
        return orjson.loads(await answer.read())


async def _run(words: list[str]) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *words, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, (words, err.decode())
    return out


SANDBOX_COMMANDS = readme_commands("bulkdm sandbox")
SYNOPSES = [c for c in readme_commands("bulkdm ") if "[" in c]


def test_the_readme_shows_the_sandbox_with_its_options() -> None:
    example = ("bulkdm sandbox --port 8787 --latency 50ms --jitter 10ms --fail-rate 0.01"
               " --drop-rate 0.01")
    assert example in SANDBOX_COMMANDS
    # the synopsis, the example, and inline: the bare command and its --help
    assert len(SANDBOX_COMMANDS) == 4, SANDBOX_COMMANDS
    # plan, run, status, export, replies, accounts, optouts, sandbox
    assert len(SYNOPSES) == 8, SYNOPSES


@pytest.mark.parametrize("command", [c for c in SANDBOX_COMMANDS if "--help" not in c])
async def test_each_readme_sandbox_command_serves(command: str) -> None:
    async with serving(_as_run(command)) as root_url:
        ledger = await _get(f"{root_url}/_sandbox/ledger")
    assert ledger == {"deliveries": [], "total": 0}


@pytest.mark.parametrize("command", [c for c in SANDBOX_COMMANDS if "--help" in c])
async def test_each_readme_sandbox_help_lists_the_options(command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *_words(command), env=_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert {"--port", "--jitter", "--drop-rate", "--read-rate"} <= _flags(out.decode())


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
async def test_the_readme_curl_examples_answer_as_shown() -> None:
    (command,) = [c for c in SANDBOX_COMMANDS if "--jitter" in c]
    curls = readme_commands("curl ")
    assert len(curls) == 2, curls
    async with serving(_as_run(command)) as root_url:
        port = root_url.rsplit(":", 1)[1]
        answers = [await _run(_words(c.replace(README_PORT, port))) for c in curls]
    sent, ledger = (orjson.loads(a) for a in answers)
    assert sent["status"] == "success", sent
    assert [(d["recipient_id"], d["text"]) for d in ledger["deliveries"]] == [
        ("44196397", "Hello")]


def _help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


@pytest.mark.parametrize("synopsis", SYNOPSES)
def test_each_readme_synopsis_names_only_flags_its_command_takes(
        synopsis: str, capsys: pytest.CaptureFixture[str]) -> None:
    taken = _flags(_help(capsys, synopsis.split()[1]))
    assert _flags(synopsis) <= taken, synopsis


def test_every_flag_the_readme_sandbox_section_names_is_taken(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The sandbox", 1)[1].split("\n## ", 1)[0]
    named = _flags(section) - {"--sandbox"}  # `bulkdm run --sandbox` is run's flag
    assert {"--port", "--latency", "--key-rate", "--late"} <= named
    assert named <= _flags(_help(capsys, "sandbox"))


async def test_the_readme_first_command_runs_the_example_campaign(tmp_path: Path) -> None:
    # the part after the install: `.venv/bin/bulkdm run campaigns/welcome.jsonl --sandbox`, run
    # as written in a copy of the repository's campaigns beside a `.venv` that is this one
    (setup,) = [c for c in _fenced_commands(README.read_text("utf-8"))
                if "welcome.jsonl --sandbox" in c and "pip install" in c]
    command = setup.rsplit("&&", 1)[1].strip()
    assert command == ".venv/bin/bulkdm run campaigns/welcome.jsonl --sandbox"
    shutil.copytree(README.parent / "campaigns", tmp_path / "campaigns")
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    process = await asyncio.create_subprocess_exec(
        *_words(command), cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=50)
    assert process.returncode == 3, err.decode()  # finished; the example has bad rows on purpose
    assert "completed" in out.decode()
    handoff = (tmp_path / "campaigns" / "welcome.handoff.jsonl").read_bytes().splitlines()
    states = [orjson.loads(line)["send_status"] for line in handoff]
    assert len(states) == 16 and states.count("sent") == 6, states
