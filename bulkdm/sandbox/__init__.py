"""A local stand-in for Xquik and GetXAPI: both DM contracts, fault injection, a delivery ledger.

Start one in-process with :func:`running_sandbox`, or from a shell with
``python -m bulkdm.sandbox --port 8787``. Who exists and who may DM whom follows the rules in
:mod:`bulkdm.sandbox.directory`; every delivered DM lands in ``Sandbox.ledger`` (and
``GET /_sandbox/ledger``).
"""

from __future__ import annotations

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
