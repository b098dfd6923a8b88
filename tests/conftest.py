from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    # aiohttp runs on asyncio only; debug mode reports never-awaited coroutines and slow callbacks
    return ("asyncio", {"debug": True})


@pytest.fixture(autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # the campaign registry ($XDG_STATE_HOME/bulkdm) of every test, and of the CLI processes it
    # starts (they inherit the environment), is its own, never the user's
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
