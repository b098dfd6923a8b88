"""Deterministic keys: the same campaign, recipient, sender and text always give the same key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

__all__ = ["idempotency_key", "idempotency_keys", "key_scope", "text_sha256"]

_SEP = "\x1f"


def key_scope(name: str, campaign_id: str | None) -> str:
    """The campaign part of every key: the name and the checkpoint's campaign identity.

    The identity is random, made at a checkpoint's first plan and kept by every replan, amend
    and resume, so a campaign's keys are deterministic while a new campaign with the same name
    gets new ones. A checkpoint planned before identities existed has none, and keeps its keys.
    """
    return name if not campaign_id else f"{name}\x1e{campaign_id}"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def idempotency_key(*, campaign: str, recipient_key: str, sender: str, text_digest: str) -> str:
    """A printable-ASCII key of 69 characters (Xquik allows ``^[!-~]{1,255}$``).

    ``recipient_key`` is the canonical recipient (``id:123`` or ``u:name``); ``text_digest`` is
    :func:`text_sha256` of the rendered text.
    """
    material = _SEP.join(("bulkdm/1", campaign, recipient_key, sender, text_digest))
    return "bdm1-" + hashlib.sha256(material.encode("utf-8")).hexdigest()


def idempotency_keys(campaign: str) -> Callable[[str, str, str], str]:
    """:func:`idempotency_key` for one campaign: ``keys(recipient_key, sender, text_digest)``.

    The same keys, faster: the campaign's part of the hashed material is fed once, and each
    call continues from a copy of that hash (a plan makes a million keys).
    """
    head = hashlib.sha256(_SEP.join(("bulkdm/1", campaign, "")).encode("utf-8"))
    copy = head.copy

    def key(recipient_key: str, sender: str, text_digest: str) -> str:
        digest = copy()
        digest.update(f"{recipient_key}{_SEP}{sender}{_SEP}{text_digest}".encode())
        return "bdm1-" + digest.hexdigest()

    return key
