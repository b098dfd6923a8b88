from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    # aiohttp runs on asyncio only; debug mode reports never-awaited coroutines and slow callbacks
    return ("asyncio", {"debug": True})
