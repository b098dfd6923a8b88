"""Xquik's error answers, with the bodies, statuses and headers of its OpenAPI and docs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bulkdm.sandbox.directory import RecipientRefusal, SenderRefusal
from bulkdm.sandbox.limits import retry_after_s
from bulkdm.sandbox.replies import json_reply

__all__ = [
    "DM_FIELDS",
    "account_refusal",
    "error",
    "idempotency_conflict",
    "insufficient_credits",
    "internal_error",
    "invalid_input",
    "rate_limited",
    "recipient_refusal",
    "tracking_unavailable",
    "unauthenticated",
    "write_error",
]

DM_FIELDS = ("account", "text", "media_ids")
DAILY_LIMIT_S = 86_400


def error(
    status: int, code: str, message: str | None, request_id: str, **extra: Any
) -> web.Response:
    """The default envelope ``{"error", "message"}`` (``message`` omitted for bare bodies)."""
    body: dict[str, Any] = {"error": code}
    if message is not None:
        body["message"] = message
    body.update(extra)
    return json_reply(body, status, {"X-Request-Id": request_id})


def write_error(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    retryable: bool,
    next_action: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """``XWriteActionError``: a pre-dispatch failure; nothing was charged or sent."""
    body: dict[str, Any] = {
        "error": code,
        "message": message,
        "charged": False,
        "chargedCredits": "0",
        "retryable": retryable,
        "safeToRetry": True,
        "success": False,
        "nextAction": dict(next_action),
        **extra,
    }
    return json_reply(body, status, {"X-Request-Id": request_id, **(headers or {})})


def invalid_input(
    request_id: str, path: str, message: str, *, code: str = "invalid_input"
) -> web.Response:
    field_error = {"code": code, "message": message, "path": path}
    return write_error(
        400,
        code,
        "Invalid input. Check request fields." if code == "invalid_input" else message,
        request_id,
        retryable=False,
        next_action={"type": "fix_request"},
        fieldErrors=[field_error],
    )


def idempotency_conflict(request_id: str) -> web.Response:
    return write_error(
        409,
        "idempotency_conflict",
        "Idempotency-Key was already used with a different request.",
        request_id,
        retryable=False,
        next_action={"type": "retry", "requiresNewIdempotencyKey": True},
    )


def tracking_unavailable(request_id: str) -> web.Response:
    return write_error(
        503,
        "write_tracking_unavailable",
        "Write tracking unavailable. Try again.",
        request_id,
        retryable=True,
        next_action={"type": "retry"},
        headers={"Retry-After": "1"},
    )


def internal_error(request_id: str) -> web.Response:
    return error(500, "internal_error", "Unexpected error. Try again.", request_id)


def unauthenticated(request_id: str) -> web.Response:
    response = error(
        401,
        "unauthenticated",
        "Authentication required. Provide a valid API key or bearer token.",
        request_id,
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="xquik"'
    response.headers["Cache-Control"] = "no-store"
    return response


def rate_limited(
    request_id: str, wait_s: float, *, code: str = "rate_limit_exceeded"
) -> web.Response:
    """429 with ``retryAfter`` and a ``Retry-After`` header in whole seconds."""
    seconds = retry_after_s(wait_s)
    message = _RATE_MESSAGES[code]
    response = error(429, code, message, request_id, retryAfter=seconds)
    response.headers["Retry-After"] = str(seconds)
    return response


def insufficient_credits(request_id: str, balance: int, required: int) -> web.Response:
    """``AuthenticatedPaymentRequired``: the balance cannot cover the call."""
    body = {
        "balance": str(max(balance, 0)),
        "dashboard": "/dashboard/account",
        "error": "insufficient_credits",
        "message": "Insufficient credits. Top up or subscribe to continue.",
        "next_step": "Ask the user to confirm a payment option before creating checkout.",
        "payment_options": _PAYMENT_OPTIONS,
        "required": str(required),
        "top_up_endpoint": "/api/v1/credits/topup",
        "top_up_url": "POST /api/v1/credits/topup",
    }
    return json_reply(body, 402, {"X-Request-Id": request_id})


def account_refusal(refusal: SenderRefusal, request_id: str) -> web.Response:
    """The answer for a sender account the directory refuses."""
    if refusal is SenderRefusal.DAILY_LIMIT:
        return rate_limited(request_id, DAILY_LIMIT_S, code="x_daily_limit")
    status, code, message = _SENDER_ERRORS[refusal]
    return error(status, code, message, request_id)


def recipient_refusal(refusal: RecipientRefusal, request_id: str) -> web.Response:
    code, message = _RECIPIENT_ERRORS[refusal]
    return error(422, code, message, request_id)


_RATE_MESSAGES = {
    "rate_limit_exceeded": "Too many requests. Try again later.",
    "x_rate_limited": "Rate limited by X. Wait before retrying.",
    "x_daily_limit": "X daily limit reached. Do not retry on the same X account for 24 hours.",
}

_SENDER_ERRORS: dict[SenderRefusal, tuple[int, str, str | None]] = {
    SenderRefusal.SUSPENDED: (
        422,
        "x_account_suspended",
        "This X account is suspended. Use another connected account.",
    ),
    # X's docs show these two as bare bodies, without a message
    SenderRefusal.NEEDS_REAUTH: (403, "account_needs_reauth", None),
    SenderRefusal.RESTRICTED: (403, "account_restricted", None),
    SenderRefusal.NOT_CONNECTED: (
        404,
        "account_not_found",
        "X account not found. Connect it first at /dashboard/account?tab=x-accounts.",
    ),
}

_RECIPIENT_ERRORS = {
    RecipientRefusal.NOT_FOUND: ("x_target_not_found", "X could not find the target user."),
    RecipientRefusal.DMS_CLOSED: (
        "x_dm_not_allowed",
        "Cannot send a DM to this user. They may not accept messages from this account.",
    ),
    RecipientRefusal.PROTECTED: (
        "x_account_protected",
        "This X account is protected and cannot receive messages from this account.",
    ),
}

_PAYMENT_OPTIONS = {
    "credits": {
        "create_checkout": {
            "body": {"dollars": 10, "locale": "en"},
            "creates": "checkout_url",
            "method": "POST",
            "path": "/api/v1/credits/topup",
            "provider": "stripe",
            "requires_authentication": True,
            "requires_user_confirmation": True,
            "response_url_field": "url",
        }
    },
    "subscription": {
        "create_checkout": {
            "body": {"tier": "starter"},
            "creates": "checkout_url",
            "method": "POST",
            "path": "/api/v1/subscribe",
            "provider": "stripe",
            "requires_authentication": True,
            "requires_user_confirmation": True,
            "response_url_field": "url",
        }
    },
}
