"""Xquik's durable write actions: the records, their idempotency keys, and the record's JSON shape."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from bulkdm.timestamps import iso_utc

__all__ = ["ActionStore", "Stored", "WriteAction", "render_action", "request_hash"]

#: suggested polling delay of a non-terminal action
POLL_AFTER_MS = 200


@dataclass(kw_only=True, slots=True)
class WriteAction:
    """One write (``send_dm`` or ``upload_media``); mutable because it moves to ``success``."""

    id: str
    action: str
    terminal: bool
    request_hash: str
    payload: dict[str, Any]
    account_id: str
    account_username: str
    target_id: str | None
    #: the message id (send_dm) or media id (upload_media)
    result_id: str
    created_at_s: float
    credits: int
    media_url: str | None = None
    completed_at_s: float | None = None
    polls: int = 0

    def complete(self, at_s: float) -> None:
        self.terminal = True
        self.completed_at_s = at_s


@dataclass(frozen=True, kw_only=True, slots=True)
class Stored:
    """What an idempotency key is bound to: the request's hash and the action it created."""

    request_hash: str
    action_id: str


class ActionStore:
    """Actions by id, and idempotency keys (scoped by API key) to the action each created."""

    def __init__(self) -> None:
        self.actions: dict[str, WriteAction] = {}
        self._keys: dict[tuple[str, str], Stored] = {}

    def bound(self, api_key: str, idempotency_key: str) -> Stored | None:
        return self._keys.get((api_key, idempotency_key))

    def add(self, action: WriteAction, *, api_key: str, idempotency_key: str | None) -> None:
        self.actions[action.id] = action
        if idempotency_key is not None:
            stored = Stored(request_hash=action.request_hash, action_id=action.id)
            self._keys[(api_key, idempotency_key)] = stored

    def clear(self) -> None:
        self.actions.clear()
        self._keys.clear()


def request_hash(action: str, account: str, target_id: str | None, payload: dict[str, Any]) -> str:
    """Stable hash of account, action, target and payload (what a reused key must match)."""
    material = {"account": account, "action": action, "target": target_id, "payload": payload}
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def render_action(action: WriteAction, *, request_id: str, idempotent: bool) -> dict[str, Any]:
    """The ``XWriteAction`` record, exactly the fields and types of Xquik's OpenAPI schema."""
    status_url = f"/api/v1/x/write-actions/{action.id}"
    credits = str(action.credits) if action.terminal else "0"
    created = iso_utc(action.created_at_s)
    record: dict[str, Any] = {
        "object": "x_write_action",
        "id": action.id,
        "writeActionId": action.id,
        "action": action.action,
        "status": "success" if action.terminal else "dispatching",
        "terminal": action.terminal,
        "retryable": False,
        "safeToRetry": False,
        "statusUrl": status_url,
        "pollAfterMs": None if action.terminal else POLL_AFTER_MS,
        "charged": action.terminal,
        "chargedCredits": credits,
        "billing": _billing(action, credits),
        "request": {"hash": action.request_hash, "payload": action.payload},
        "account": {"id": action.account_id, "username": action.account_username},
        "target": None if action.target_id is None else {"type": "user", "id": action.target_id},
        "targetId": action.target_id,
        "result": _result(action),
        "nextAction": None if action.terminal else _poll(status_url),
        "sendDispatched": True,
        "success": action.terminal,
        "requestHash": action.request_hash,
        "requestId": request_id,
        "idempotent": idempotent,
        "sendDispatchedAt": created,
        "createdAt": created,
        "updatedAt": iso_utc(action.completed_at_s or action.created_at_s),
    }
    record.update(_compatibility_fields(action))
    return record


def _billing(action: WriteAction, charged_credits: str) -> dict[str, Any]:
    # "Pending or failed writes are not charged": credits settle when the action turns terminal
    return {
        "status": "charged" if action.terminal else "pending",
        "charged": action.terminal,
        "plannedCredits": str(action.credits),
        "chargedCredits": charged_credits,
    }


def _result(action: WriteAction) -> dict[str, str] | None:
    if not action.terminal:
        return None
    if action.action == "send_dm":
        return {"type": "direct_message", "id": action.result_id, "state": "sent"}
    return {"type": "media", "id": action.result_id, "state": "uploaded"}


def _poll(status_url: str) -> dict[str, Any]:
    return {"type": "poll", "url": status_url, "afterMs": POLL_AFTER_MS}


def _compatibility_fields(action: WriteAction) -> dict[str, str]:
    if not action.terminal or action.completed_at_s is None:
        return {}
    done = iso_utc(action.completed_at_s)
    fields = {"completedAt": done, "confirmedAt": done}
    if action.action == "send_dm":
        fields["messageId"] = action.result_id
    else:
        fields["mediaId"] = action.result_id
        fields["mediaUrl"] = action.media_url or ""
    return fields
