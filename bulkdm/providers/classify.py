"""Which :class:`~bulkdm.outcomes.Action` each provider error means: one table per provider.

Pure functions of an answer's status, decoded body and Retry-After; no I/O.

Xquik (providers.md §1.3, §1.10) names every error with a code, and its write errors add
``safeToRetry`` ("no write was dispatched and a new idempotency key may be used"), ``retryable``,
``sendDispatched`` and ``nextAction``. The code picks the action; those flags can only move it
toward what they prove (a ``safeToRetry`` true turns a "may have happened" into a retry; a
``safeToRetry`` false turns a retry of a write into a check).

GetXAPI (§2.3) answers ``{"error": "<text>"}`` with no code, so the status decides, helped by
careful text matching. A matched text gets the code Xquik uses for the same cause (so
``on_dm_not_allowed`` and the reports treat both providers alike); anything else is
``http_<status>``. GetXAPI has no idempotency key, so a wrong RETRY after a delivery sends the DM
twice, while a wrong VERIFY costs one history read: every doubt goes to VERIFY.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from bulkdm.outcomes import Action, Outcome
from bulkdm.providers.http import (
    MAX_MESSAGE_CHARS,
    JsonObject,
    bool_field,
    object_field,
    text_field,
)

__all__ = [
    "DAILY_LIMIT_S",
    "GETXAPI_THROTTLE_S",
    "XQUIK_ACTIONS",
    "X_THROTTLE_S",
    "as_lookup",
    "classify_getxapi",
    "classify_xquik",
    "getxapi_error_text",
]

#: ``x_daily_limit``: "Do not retry ... on the same X account for 24 hours"
DAILY_LIMIT_S: Final = 86_400.0
#: an X throttle without Retry-After; Xquik's write throttles answer ``Retry-After: 60``
X_THROTTLE_S: Final = 60.0
#: Xquik's own throttle without Retry-After: its documented header values (write 60 s, read 1 s)
_XQUIK_THROTTLE_S: Final = {True: 60.0, False: 1.0}
#: a GetXAPI 429 documents no Retry-After; a short pause spares the key a burst of refusals
GETXAPI_THROTTLE_S: Final = 10.0

_A = Action
XQUIK_ACTIONS: Final[Mapping[str, Action]] = {
    # the request itself is wrong: the same payload can never succeed
    **dict.fromkeys(
        (
            "invalid_input",
            "invalid_json",
            "unknown_field",
            "unsupported_field",
            "missing_idempotency_key",
            "invalid_idempotency_key",
            "invalid_username",
            "invalid_user_id",
            "account_required",
            "body_too_large",
            "unsupported_media_type",
            "media_download_failed",
        ),
        _A.FAIL_ROW,
    ),
    # this recipient cannot get this DM (x_rejected: unless safeToRetry, see _adjust)
    **dict.fromkeys(
        (
            "user_not_found",
            "x_dm_not_allowed",
            "x_content_too_long",
            "x_account_protected",
            "x_target_not_found",
            "x_rejected",
            "dm_not_permitted",
        ),
        _A.FAIL_ROW,
    ),
    "x_rate_limited": _A.REST_SENDER,
    "x_daily_limit": _A.REST_SENDER,
    **dict.fromkeys(
        (
            "account_needs_reauth",
            "account_restricted",
            "x_account_suspended",
            "x_account_feature_required",
            "account_not_found",
        ),
        _A.DROP_SENDER,
    ),
    # no call can succeed; a reused key with new input is a bulkdm bug, never a row's fault
    **dict.fromkeys(
        (
            "unauthenticated",
            "insufficient_credits",
            "no_credits",
            "no_subscription",
            "subscription_inactive",
            "payment_failed",
            "idempotency_conflict",
            "idempotency_key_conflict",
        ),
        _A.STOP_RUN,
    ),
    **dict.fromkeys(
        (
            "rate_limit_exceeded",
            "internal_error",
            "write_tracking_unavailable",
            "x_transient_error",
            "x_api_unavailable",
            "login_cooldown",
        ),
        _A.RETRY,
    ),
    # x_duplicate_action: X says it already has it, so confirm rather than send
    **dict.fromkeys(
        ("x_write_ambiguous", "x_write_unconfirmed", "x_duplicate_action", "x_write_failed"),
        _A.VERIFY,
    ),
}

_CONFLICT_MESSAGE: Final = (
    "the Idempotency-Key was already used with a different request. This is a bulkdm bug "
    "(keys are derived from the row and its text): please report it. The run stops so that "
    "no row is sent twice"
)
_MISSING_ENDPOINT: Final = "the endpoint does not exist: check provider.base_url"


def classify_xquik(
    *, status: int, body: JsonObject | None, retry_after_s: float | None, write: bool
) -> Outcome:
    """The outcome of an Xquik error answer, or of a terminal write action that did not succeed.

    :param body: the decoded JSON object (None when the body is not one)
    :param write: a DM send or media upload (as opposed to a lookup, history read or poll)
    """
    code = text_field(body, "error") or _status_code(body, status)
    known = XQUIK_ACTIONS.get(code)
    action = _adjust(known, code, body, write) if known else _xquik_unknown(status, body, write)
    if not write and action is Action.VERIFY:
        action = Action.RETRY
    message = (
        _CONFLICT_MESSAGE
        if code in ("idempotency_conflict", "idempotency_key_conflict")
        else _xquik_message(code, body, status)
    )
    safe = bool_field(body, "safeToRetry") is True
    next_action = object_field(body, "nextAction")
    fresh_key = (
        bool_field(next_action, "requiresNewIdempotencyKey") is True
        or bool_field(body, "sendDispatched") is False
    )
    return Outcome(
        action=action,
        code=code,
        message=message,
        http_status=status,
        retry_after_s=_xquik_wait_s(code, action, retry_after_s, write),
        new_key=write and safe and fresh_key,
        write_action_id=_write_action_id(body),
    )


def _status_code(body: JsonObject | None, status: int) -> str:
    """A code for an answer that gave none: a failed write action's status, or the HTTP one."""
    state = text_field(body, "status")
    if body is not None and text_field(body, "object") == "x_write_action" and state:
        return f"write_{state}"
    return f"http_{status}"


def _adjust(action: Action, code: str, body: JsonObject | None, write: bool) -> Action:
    """Trust ``safeToRetry`` over the code (the write-action docs: "never infer retry safety from
    an HTTP status or error name alone"), but only in the direction it proves."""
    safe = bool_field(body, "safeToRetry")
    if safe is True and (action is Action.VERIFY and code != "x_duplicate_action"):
        return Action.RETRY
    if safe is True and code == "x_rejected":
        return Action.RETRY
    if safe is False and write and action is Action.RETRY and code != "rate_limit_exceeded":
        return Action.VERIFY
    return action


def _xquik_unknown(status: int, body: JsonObject | None, write: bool) -> Action:
    """A code the table does not know (or none): decide by what the answer proves."""
    if bool_field(body, "safeToRetry") is True:
        return Action.RETRY
    if status in (401, 402):
        return Action.STOP_RUN
    if status == 404 and body is None:
        return Action.STOP_RUN
    if status in (400, 413, 415, 422):
        return Action.FAIL_ROW
    if bool_field(body, "sendDispatched") is False:
        return Action.FAIL_ROW if bool_field(body, "retryable") is False else Action.RETRY
    if 400 <= status < 500:
        # refused before any work; a retry uses the same key, so it cannot send twice
        return Action.RETRY
    return Action.VERIFY if write else Action.RETRY


def _xquik_wait_s(code: str, action: Action, given_s: float | None, write: bool) -> float | None:
    if code == "x_daily_limit":
        return max(given_s or 0.0, DAILY_LIMIT_S)
    if code == "x_rate_limited" or (action is Action.REST_SENDER and given_s is None):
        return given_s if given_s is not None else X_THROTTLE_S
    if code == "rate_limit_exceeded" and given_s is None:
        return _XQUIK_THROTTLE_S[write]
    return given_s


def _xquik_message(code: str, body: JsonObject | None, status: int) -> str:
    text = text_field(body, "message") or text_field(body, "reason")
    if text is None and status == 404 and body is None:
        text = _MISSING_ENDPOINT
    return (text or f"HTTP {status}: {code}")[:MAX_MESSAGE_CHARS]


def _write_action_id(body: JsonObject | None) -> str | None:
    if text_field(body, "object") == "x_write_action":
        return text_field(body, "writeActionId") or text_field(body, "id")
    return text_field(body, "writeActionId")


# -- GetXAPI -------------------------------------------------------------------------------------

_DAILY = re.compile(r"daily|24 ?h|per day")
_X_THROTTLE = re.compile(r"twitter|\bx\b|this account")
_CREDITS = re.compile(r"credit|balance|insufficient funds|payment|top.?up")
_TOKEN = re.compile(r"auth_token|auth token|session|cookie")
_SUSPENDED = re.compile(r"suspend")
_RESTRICTED = re.compile(r"locked|restricted|re-?auth|verify (it|your account)")
_PROTECTED = re.compile(r"protected")
_DMS_CLOSED = re.compile(
    r"cannot (send|receive)|can't (send|receive)|not allowed|not accept|blocked"
    r"|dms? (are )?(closed|disabled|off)"
)
_NOT_FOUND = re.compile(r"not found|does not exist|no such user")


def getxapi_error_text(body: JsonObject | None) -> str | None:
    """The human text of a GetXAPI failure: ``error``, or ``msg`` of ``{status: "error"}``."""
    text = text_field(body, "error")
    if text is None and text_field(body, "status") == "error":
        text = text_field(body, "msg")
    return text


def classify_getxapi(
    *, status: int, body: JsonObject | None, retry_after_s: float | None, write: bool
) -> Outcome:
    """The outcome of a GetXAPI answer that is not a success (see the module docstring).

    :param write: a DM send; reads (lookups, history) have nothing to deliver twice
    """
    text = getxapi_error_text(body)
    action, code = _getxapi_rule(status, (text or "").lower(), body is not None)
    if not write and action is Action.VERIFY:
        action = Action.RETRY
    if status == 404 and body is None:
        text = _MISSING_ENDPOINT
    message = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if code == "x_daily_limit":
        wait_s: float | None = max(retry_after_s or 0.0, DAILY_LIMIT_S)
    elif code == "x_rate_limited":
        wait_s = retry_after_s or X_THROTTLE_S
    elif code == "http_429":
        wait_s = retry_after_s or GETXAPI_THROTTLE_S
    else:
        wait_s = retry_after_s
    outcome = Outcome(action=action, code=code, http_status=status, retry_after_s=wait_s)
    return replace(outcome, message=message[:MAX_MESSAGE_CHARS])


def _getxapi_rule(status: int, text: str, is_json: bool) -> tuple[Action, str]:
    """(action, code), the first rule that matches; statuses first, then the text within them."""
    http = f"http_{status}"
    client_error = 400 <= status < 500
    if client_error and status != 404 and _CREDITS.search(text):
        return Action.STOP_RUN, "insufficient_credits"
    if status == 401:
        if _TOKEN.search(text):
            return Action.DROP_SENDER, "account_needs_reauth"
        return Action.STOP_RUN, "unauthenticated"
    if status == 429:
        return _getxapi_throttle(text)
    if client_error:
        return _getxapi_refusal(status, text, is_json)
    # 500, 502, 503, 504 and the rest: the request reached a server that may have sent the DM.
    # A 502 with GetXAPI's JSON envelope reads as "X rejected the mutation" only in third-party
    # notes (providers.md §2.3); unproven, so it is checked like any doubt, not resent
    return Action.VERIFY, http


def _getxapi_throttle(text: str) -> tuple[Action, str]:
    if _DAILY.search(text):
        return Action.REST_SENDER, "x_daily_limit"
    if _X_THROTTLE.search(text):
        return Action.REST_SENDER, "x_rate_limited"
    return Action.RETRY, "http_429"


def _getxapi_refusal(status: int, text: str, is_json: bool) -> tuple[Action, str]:
    """A 4xx other than 401/429: refused before anything was sent."""
    if _SUSPENDED.search(text):
        return Action.DROP_SENDER, "x_account_suspended"
    if _RESTRICTED.search(text) or _TOKEN.search(text):
        return Action.DROP_SENDER, "account_restricted"
    if _PROTECTED.search(text):
        return Action.FAIL_ROW, "x_account_protected"
    if _DMS_CLOSED.search(text):
        return Action.FAIL_ROW, "x_dm_not_allowed"
    if status == 404:
        return (Action.FAIL_ROW, "user_not_found") if is_json else (Action.STOP_RUN, "http_404")
    if _NOT_FOUND.search(text):
        return Action.FAIL_ROW, "user_not_found"
    if status == 402:
        return Action.STOP_RUN, "http_402"
    if status == 408:
        return Action.RETRY, "http_408"
    return Action.FAIL_ROW, f"http_{status}"


def as_lookup(outcome: Outcome) -> Outcome:
    """A username lookup's failure, read as one: it carries only the API key, so an answer
    about an account (suspended, locked, throttled by X) is about the user looked up, never
    the sender. Such a user fails its row (``user_suspended``, ``user_unavailable``); a
    throttle is the key's reads (retried, not charged to the row); a 401 is the API key."""
    if outcome.http_status == 401:
        return replace(outcome, action=Action.STOP_RUN, code="unauthenticated")
    if outcome.action is Action.DROP_SENDER:
        code = "user_suspended" if "suspend" in (outcome.code or "") else "user_unavailable"
        return replace(outcome, action=Action.FAIL_ROW, code=code)
    if outcome.action is Action.REST_SENDER:
        return replace(outcome, action=Action.RETRY)
    return outcome
