"""Deterministic keys: the same campaign, recipient, sender and text always give the same key."""

from __future__ import annotations

import hashlib

__all__ = ["idempotency_key", "text_sha256"]

_SEP = "\x1f"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def idempotency_key(*, campaign: str, recipient_key: str, sender: str, text_digest: str) -> str:
    """A printable-ASCII key of 69 characters (Xquik allows ``^[!-~]{1,255}$``).

    ``recipient_key`` is the canonical recipient (``id:123`` or ``u:name``); ``text_digest`` is
    :func:`text_sha256` of the rendered text.
    """
    material = _SEP.join(("bulkdm/1", campaign, recipient_key, sender, text_digest))
    return "bdm1-" + hashlib.sha256(material.encode("utf-8")).hexdigest()
