"""The event loop a command runs on: uvloop when it is installed (the ``fast`` extra), else
asyncio's own; ``BULKDM_LOOP=asyncio`` (or ``uvloop``) chooses."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Final

from bulkdm.errors import ConfigError

__all__ = ["LOOP_ENV", "loop_factory"]

#: the environment variable that chooses the loop: ``auto`` (the default), ``uvloop``, ``asyncio``
LOOP_ENV: Final = "BULKDM_LOOP"
_CHOICES: Final = ("auto", "uvloop", "asyncio")


def loop_factory(
    environ: Mapping[str, str] = os.environ,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for :class:`asyncio.Runner` (``None``: asyncio's default loop).

    :raises ConfigError: ``BULKDM_LOOP`` names no loop, or uvloop, which is not installed.
    """
    choice = environ.get(LOOP_ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"{LOOP_ENV}={choice!r}: expected one of {', '.join(_CHOICES)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(f"{LOOP_ENV}=uvloop, but uvloop is not installed "
                              "(pip install 'bulkdm[fast]')") from exc
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
