"""The event loop every command runs on (``bulkdm.loops``): uvloop with the ``fast`` extra,
asyncio's own on request; the CLI's choice seen through the real CLI in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bulkdm.errors import ConfigError
from bulkdm.loops import LOOP_ENV, loop_factory
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, env_for, write_campaign


def test_uvloop_is_the_default_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")  # installed by the test command ('.[dev,fast]')
    factory = loop_factory({})
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_asyncio_is_chosen_by_name_and_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loop_factory({LOOP_ENV: "asyncio"}) is None
    assert loop_factory({LOOP_ENV: " AsyncIO "}) is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` meets uninstalled
    assert loop_factory({}) is None
    with pytest.raises(ConfigError, match=r"BULKDM_LOOP=uvloop, but uvloop is not installed"):
        loop_factory({LOOP_ENV: "uvloop"})


def test_a_loop_that_is_none_of_them_is_named() -> None:
    with pytest.raises(ConfigError, match=r"BULKDM_LOOP='trio': expected one of auto, uvloop, "
                                          r"asyncio"):
        loop_factory({LOOP_ENV: "trio"})


async def test_the_cli_reads_the_choice_and_runs_on_either_loop(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(70_000 + i), "first_name": "x"} for i in range(4)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        wrong = await bulkdm("run", str(campaign), "--progress", "none",
                             env={**env_for(), LOOP_ENV: "trio"})
        # refused before anything was planned or sent
        assert sb.ledger == [] and not (tmp_path / "camp.bulkdm.sqlite").exists()
        on_asyncio = await bulkdm("run", str(campaign), "--progress", "none",
                                  env={**env_for(), LOOP_ENV: "asyncio"})
        delivered = len(sb.ledger)
    assert wrong.code == 1 and "error: BULKDM_LOOP='trio'" in wrong.stderr
    assert on_asyncio.code == 0, on_asyncio.stdout + on_asyncio.stderr
    assert delivered == 4
