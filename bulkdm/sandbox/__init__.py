"""A local stand-in for Xquik and GetXAPI: both DM contracts, fault injection, a delivery ledger.

Start one in-process with :func:`running_sandbox`, or from a shell with
``bulkdm sandbox --port 8787``. Who exists and who may DM whom follows the rules in
:mod:`bulkdm.sandbox.directory`; every delivered DM lands in ``Sandbox.ledger`` (and
``GET /_sandbox/ledger``).

The names below are imported on first use, so that ``bulkdm``'s command line can read the
sandbox's options (:mod:`bulkdm.sandbox.cli`) without loading aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulkdm.sandbox.app import Sandbox, running_sandbox
    from bulkdm.sandbox.cli import main
    from bulkdm.sandbox.config import Faults, SandboxConfig
    from bulkdm.sandbox.directory import derive_user_id
    from bulkdm.sandbox.getxapi import sender_of_token
    from bulkdm.sandbox.ledger import Delivery

__all__ = [
    "Delivery",
    "Faults",
    "Sandbox",
    "SandboxConfig",
    "derive_user_id",
    "main",
    "running_sandbox",
    "sender_of_token",
]

_HOMES = {
    "Delivery": "ledger",
    "Faults": "config",
    "Sandbox": "app",
    "SandboxConfig": "config",
    "derive_user_id": "directory",
    "main": "cli",
    "running_sandbox": "app",
    "sender_of_token": "getxapi",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
