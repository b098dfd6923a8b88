"""Reading and validating Xquik write requests (DM sends and media uploads) into plain values."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bulkdm.media import MEDIA_TYPES_TEXT, media_type
from bulkdm.sandbox import xquik_errors as errors
from bulkdm.sandbox.actions import request_hash
from bulkdm.sandbox.directory import normalize_account
from bulkdm.sandbox.replies import read_json_object

__all__ = [
    "MAX_MEDIA_BYTES",
    "MAX_TEXT_CHARS",
    "WriteInput",
    "api_key_of",
    "idempotency_key_of",
    "read_dm",
    "read_media",
]

MAX_TEXT_CHARS = 10_000
MAX_MEDIA_BYTES = 15_728_640
_KEY_PATTERN = re.compile(r"^[!-~]{1,255}$")


@dataclass(frozen=True, kw_only=True, slots=True)
class WriteInput:
    """A validated write: who acts, on what, and the fingerprint a reused key must match."""

    account: str
    idempotency_key: str | None
    payload: dict[str, Any]
    request_hash: str
    user_id: str = ""
    text: str = ""
    media_id: str | None = None


def api_key_of(request: web.Request) -> str:
    """The API key from ``x-api-key``, ``Xquik-Api-Key`` or ``Authorization: Bearer``."""
    key = request.headers.get("x-api-key") or request.headers.get("Xquik-Api-Key")
    if key:
        return key.strip()
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return ""


def idempotency_key_of(
    request: web.Request, request_id: str, *, required: bool
) -> str | None | web.Response:
    """The ``Idempotency-Key`` header, or the 400 answer for a missing or malformed one."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        if not required:
            return None
        message = "Idempotency-Key header is required for write requests."
        return errors.invalid_input(
            request_id, "Idempotency-Key", message, code="missing_idempotency_key"
        )
    if _KEY_PATTERN.match(key) is None:
        message = "Idempotency-Key must be 1-255 printable ASCII characters without spaces."
        return errors.invalid_input(
            request_id, "Idempotency-Key", message, code="invalid_idempotency_key"
        )
    return key


async def read_dm(
    request: web.Request, request_id: str, key: str | None
) -> WriteInput | web.Response:
    """``POST /x/dm/{userId}``: the path id, and the body ``{account, text, media_ids?}``."""
    user_id = request.match_info["userId"]
    if not user_id.isdigit():
        return errors.invalid_input(request_id, "userId", "userId must be a numeric X user id.")
    body = await read_json_object(request)
    if body is None:
        message = "Request body must be a JSON object."
        return errors.invalid_input(request_id, "body", message, code="invalid_json")
    problem = _dm_problem(body)
    if problem is not None:
        return errors.invalid_input(request_id, problem[0], problem[1])
    payload = {name: body[name] for name in errors.DM_FIELDS if name in body}
    return WriteInput(
        account=normalize_account(body["account"]),
        idempotency_key=key,
        payload=payload,
        request_hash=request_hash("send_dm", body["account"], user_id, payload),
        user_id=user_id,
        text=body["text"],
        media_id=body["media_ids"][0] if "media_ids" in body else None,
    )


def _dm_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """The (field, message) of the first thing wrong with a DM body, if any."""
    unknown = sorted(set(body) - set(errors.DM_FIELDS))
    if unknown:
        return unknown[0], f"Unknown field {unknown[0]!r}; allowed: account, text, media_ids."
    account, text = body.get("account"), body.get("text")
    if not isinstance(account, str) or not normalize_account(account):
        return "account", "account must be the @username or id of a connected X account."
    if not isinstance(text, str) or not text.strip():
        return "text", "text must be a non-empty string."
    if "media_ids" in body:
        media_ids = body["media_ids"]
        if not (isinstance(media_ids, list) and len(media_ids) == 1):
            return "media_ids", "media_ids must hold exactly one uploaded media id."
        if not isinstance(media_ids[0], str) or not media_ids[0]:
            return "media_ids", "media_ids must hold exactly one uploaded media id."
    return None


async def read_media(
    request: web.Request, request_id: str, key: str | None
) -> WriteInput | web.Response:
    """``POST /x/media``: multipart ``{account, file}`` or JSON ``{account, url}``."""
    if request.content_type == "application/json":
        body = await read_json_object(request) or {}
        account, content = body.get("account"), body.get("url")
        source = "url"
        data = content.encode() if isinstance(content, str) else b""
    else:
        form = await request.post()
        account, upload = form.get("account"), form.get("file")
        source = "file"
        data = upload.file.read() if isinstance(upload, web.FileField) else b""
    if not isinstance(account, str) or not normalize_account(account):
        return errors.invalid_input(request_id, "account", "account is required.")
    if not data:
        return errors.invalid_input(request_id, source, f"{source} is required and non-empty.")
    if len(data) > MAX_MEDIA_BYTES:
        message = f"The file limit is {MAX_MEDIA_BYTES} bytes."
        return errors.error(413, "body_too_large", message, request_id)
    if source == "file" and media_type(data) is None:
        message = f"The file must be {MEDIA_TYPES_TEXT}."
        return errors.error(415, "unsupported_media_type", message, request_id)
    payload = {"account": account, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return WriteInput(
        account=normalize_account(account),
        idempotency_key=key,
        payload=payload,
        request_hash=request_hash("upload_media", account, None, payload),
    )
