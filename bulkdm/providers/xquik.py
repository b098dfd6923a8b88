"""The Xquik client: DMs with an ``Idempotency-Key``, write actions polled to the end, lookups,
media uploads and DM history (providers.md §1).

Both send contracts are accepted: the ``x_write_action`` record (200 terminal, 202 to be polled)
and the legacy ``{messageId, success}``. A poll that keeps failing or runs out of time ends in
``VERIFY`` with the action's id, never in a second send: replaying the same key is what settles it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Final
from urllib.parse import urljoin

import aiohttp

from bulkdm.media import MediaProblem, type_or_problem
from bulkdm.outcomes import Action, Outcome, Reconciliation
from bulkdm.providers.base import DmRequest, HistoryPage, SenderAuth
from bulkdm.providers.classify import as_lookup, classify_xquik
from bulkdm.providers.http import (
    Answer,
    BaseUrl,
    HttpClient,
    JsonObject,
    bool_field,
    history_messages,
    number_field,
    object_field,
    parse_iso,
    path_segment,
    redact,
    retry_after_s,
    search_messages,
    text_field,
)
from bulkdm.secrets import Secret
from bulkdm.timestamps import normalize_iso

__all__ = ["XquikProvider"]

#: "The file limit is 15,728,640 bytes" (providers.md §1.5)
#: history pages read by one reconcile before it gives up proving absence
MAX_HISTORY_PAGES: Final = 20
#: consecutive failed polls (transport errors, 5xx, 404) before the write is left to VERIFY
MAX_POLL_FAILURES: Final = 3
#: polling delay when the action gives no hint, and the smallest one honoured
DEFAULT_POLL_S: Final = 1.0
MIN_POLL_S: Final = 0.05
_TERMINAL: Final = frozenset({"success", "failed", "expired"})


@dataclass(frozen=True, kw_only=True, slots=True)
class _Product:
    """What a write yields: the ``result.type`` and the compatibility field that carry its id."""

    result_type: str
    id_field: str


_DM: Final = _Product(result_type="direct_message", id_field="messageId")
_MEDIA: Final = _Product(result_type="media", id_field="mediaId")


class XquikProvider:
    """Xquik behind the :class:`~bulkdm.providers.base.Provider` interface.

    Example::

        http = HttpClient.open(concurrency=8, request_timeout_s=30)
        xquik = XquikProvider(http=http, base_url="https://xquik.com/api/v1",
                              api_key=Secret("xq_..."), poll_timeout_s=120)

    :param base_url: ends with ``/api/v1``; status URLs (``/api/v1/x/write-actions/...``) are
        resolved against its origin
    """

    def __init__(
        self, *, http: HttpClient, base_url: str, api_key: Secret, poll_timeout_s: float
    ) -> None:
        self.name = "xquik"
        self.send_endpoint = "POST /x/dm/{userId}"
        self._http = http
        self._base = base_url.rstrip("/")
        self._root = BaseUrl(self._base)
        self._api_key = api_key
        self._poll_timeout_s = poll_timeout_s

    def __repr__(self) -> str:
        return f"XquikProvider(base_url={self._base!r})"

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"x-api-key": self._api_key.reveal(), "Accept": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    # -- writes ------------------------------------------------------------------------------

    async def send(self, request: DmRequest) -> Outcome:
        """``POST /x/dm/{userId}``; ``DONE`` with the message id, or what the error means."""
        body: dict[str, object] = {"account": request.sender.account, "text": request.text}
        if request.media_id is not None:
            body["media_ids"] = [request.media_id]
        answer = await self._http.request(
            "POST",
            self._root.at("/x/dm/" + path_segment(request.recipient_id)),
            headers=self._headers(request.idempotency_key),
            json_body=body,
            write=True,
            on_sent=request.on_sent,
        )
        return self._scrub(await self._write_result(answer, _DM))

    async def upload_media(self, path: Path, sender: SenderAuth, idempotency_key: str) -> Outcome:
        """``POST /x/media`` (multipart ``account`` and ``file``); ``DONE`` with the media id."""
        media = await _read_media(path)
        if isinstance(media, Outcome):
            return media
        content, content_type = media
        form = aiohttp.FormData()
        form.add_field("account", sender.account)
        form.add_field("file", content, filename=path.name, content_type=content_type)
        answer = await self._http.request(
            "POST",
            self._root.at("/x/media"),
            headers=self._headers(idempotency_key),
            form=form,
            write=True,
        )
        return self._scrub(await self._write_result(answer, _MEDIA))

    async def _write_result(self, answer: Answer | Outcome, product: _Product) -> Outcome:
        if isinstance(answer, Outcome):
            return answer
        body = answer.json_object()
        request_id = answer.headers.get("x-request-id")
        if not 200 <= answer.status < 300:
            outcome = classify_xquik(
                status=answer.status,
                body=body,
                retry_after_s=retry_after_s(answer.headers, body),
                write=True,
            )
            return replace(outcome, request_id=request_id)
        if body is None:
            # a 2xx that cannot be read: the write most likely happened, and replaying the same
            # key returns its record, so this is a check, not an error that stops the run
            return Outcome(
                action=Action.VERIFY,
                code="unreadable_answer",
                http_status=answer.status,
                request_id=request_id,
                message="a success answer that is not JSON",
            )
        if _is_record(body):
            return await self._record_result(answer, body, product)
        return _legacy_result(answer, body, product)

    async def _record_result(
        self, answer: Answer, record: JsonObject, product: _Product
    ) -> Outcome:
        request_id = answer.headers.get("x-request-id")
        # the common case, a terminal answer, without a coroutine, a deadline or a delay to read
        settled = (
            (answer, record) if _is_terminal(record) else await self._await_terminal(answer, record)
        )
        if isinstance(settled, Outcome):
            return replace(settled, request_id=request_id)
        final_answer, final = settled
        if text_field(final, "status") == "success" or bool_field(final, "success") is True:
            return Outcome(
                action=Action.DONE,
                value=_product_id(final, product),
                http_status=final_answer.status,
                request_id=request_id,
                write_action_id=_action_id(final),
                sent_at=normalize_iso(
                    text_field(final, "completedAt") or text_field(final, "createdAt")),
            )
        outcome = classify_xquik(
            status=final_answer.status, body=final, retry_after_s=None, write=True
        )
        return replace(outcome, request_id=request_id, write_action_id=_action_id(final))

    async def _await_terminal(
        self, answer: Answer, record: JsonObject
    ) -> tuple[Answer, JsonObject] | Outcome:
        """Poll the action's status URL until it is terminal, within ``poll_timeout_s``."""
        deadline_s = time.monotonic() + self._poll_timeout_s
        failures = 0
        delay_s = _poll_delay_s(answer, record)
        while not _is_terminal(record):
            url = self._status_url(answer, record)
            remaining_s = deadline_s - time.monotonic()
            if url is None or remaining_s <= 0:
                return _unsettled(record, answer.status, "poll_timeout" if url else "no_status_url")
            await asyncio.sleep(min(delay_s, remaining_s))
            polled = await self._http.request("GET", url, headers=self._headers(), write=False)
            body = None if isinstance(polled, Outcome) else polled.json_object()
            if isinstance(polled, Outcome) or polled.status not in (200, 202) or body is None:
                # a throttled poll is no failure: "Wait for Retry-After. Poll the same action again"
                throttled = not isinstance(polled, Outcome) and polled.status == 429
                failures += 0 if throttled else 1
                if failures >= MAX_POLL_FAILURES:
                    return _unsettled(record, answer.status, "poll_failed")
                hint_s = (
                    None if isinstance(polled, Outcome) else retry_after_s(polled.headers, body)
                )
                delay_s = max(delay_s, hint_s or DEFAULT_POLL_S)
                continue
            failures, answer, record = 0, polled, body
            delay_s = _poll_delay_s(answer, record)
        return answer, record

    def _status_url(self, answer: Answer, record: JsonObject) -> str | None:
        relative = (
            answer.headers.get("location")
            or text_field(record, "statusUrl")
            or text_field(object_field(record, "nextAction"), "url")
        )
        # "/api/v1/x/write-actions/1": an absolute path, so urljoin keeps only the base's origin
        return None if relative is None else urljoin(self._base + "/", relative)

    def _scrub(self, outcome: Outcome) -> Outcome:
        if outcome.message is None:
            return outcome
        return replace(outcome, message=redact(outcome.message, self._api_key.reveal()))

    # -- reads -------------------------------------------------------------------------------

    async def resolve(self, username: str, sender: SenderAuth) -> Outcome:
        """``GET /x/users/{username}``; ``DONE`` with the numeric id, ``FAIL_ROW`` if unknown."""
        name = username.strip().removeprefix("@")
        answer = await self._http.request(
            "GET",
            self._root.at("/x/users/" + path_segment(name)),
            headers=self._headers(),
            write=False,
        )
        if isinstance(answer, Outcome):
            return answer
        body = answer.json_object()
        request_id = answer.headers.get("x-request-id")
        user_id = text_field(body, "id")
        if answer.status == 200 and user_id is not None:
            return Outcome(
                action=Action.DONE, value=user_id, http_status=200, request_id=request_id
            )
        return self._scrub(as_lookup(self._read_failure(answer, body)))

    def _read_failure(self, answer: Answer, body: JsonObject | None) -> Outcome:
        if answer.status == 200:
            # a 200 whose body lacks what the contract promises: ask again later
            return Outcome(
                action=Action.RETRY,
                code="unreadable_answer",
                http_status=200,
                message="a success answer without the expected fields",
            )
        outcome = classify_xquik(
            status=answer.status,
            body=body,
            retry_after_s=retry_after_s(answer.headers, body),
            write=False,
        )
        return replace(outcome, request_id=answer.headers.get("x-request-id"))

    async def reconcile(self, request: DmRequest, since_iso: str) -> Reconciliation:
        """Page ``GET /x/dm/{userId}/history`` (newest first) for ``request.text`` sent from
        this account after ``since_iso``; stop at older messages or after a bound of pages."""
        since = parse_iso(since_iso)
        url = self._root.at(f"/x/dm/{path_segment(request.recipient_id)}/history")
        cursor = ""
        for _ in range(MAX_HISTORY_PAGES):
            params = {"account": request.sender.account.removeprefix("@")}
            if cursor:
                params["cursor"] = cursor
            answer = await self._http.request(
                "GET", url, headers=self._headers(), params=params, write=False
            )
            if isinstance(answer, Outcome):
                return Reconciliation(found=None, outcome=answer)
            body = answer.json_object()
            messages = None if body is None else body.get("messages")
            if answer.status != 200 or not isinstance(messages, list):
                return Reconciliation(
                    found=None, outcome=self._scrub(self._read_failure(answer, body))
                )
            found, older = _search(messages, request, since)
            if found is not None:
                return found
            cursor = text_field(body, "next_cursor") or ""
            if older or bool_field(body, "has_next_page") is not True or not cursor:
                return Reconciliation(found=False)
        # too many recent messages to prove absence: say so rather than guess
        return Reconciliation(
            found=None,
            outcome=Outcome(
                action=Action.RETRY,
                code="history_too_long",
                message=f"the text was not in the newest {MAX_HISTORY_PAGES} pages of history",
            ),
        )

    async def history_page(self, sender: SenderAuth, recipient_id: str,
                           cursor: str | None) -> HistoryPage | Outcome:
        """``GET /x/dm/{userId}/history`` (1 credit per message returned)."""
        url = self._root.at(f"/x/dm/{path_segment(recipient_id)}/history")
        params = {"account": sender.account.removeprefix("@"), **({"cursor": cursor} if cursor
                                                                   else {})}
        answer = await self._http.request("GET", url, headers=self._headers(), params=params,
                                          write=False)
        if isinstance(answer, Outcome):
            return answer
        body = answer.json_object()
        messages = None if body is None else body.get("messages")
        if answer.status != 200 or not isinstance(messages, list):
            return self._scrub(self._read_failure(answer, body))
        following = text_field(body, "next_cursor") or None
        return HistoryPage(messages=history_messages(messages),
                           cursor=following if bool_field(body, "has_next_page") else None)

    async def aclose(self) -> None:
        await self._http.aclose()


def _search(
    messages: list[object], request: DmRequest, since: datetime | None
) -> tuple[Reconciliation | None, bool]:
    def is_ours(item: JsonObject) -> bool:
        # the account's own messages: anything the recipient did not send
        return text_field(item, "senderId") != request.recipient_id and (
            item.get("text") == request.text
        )

    return search_messages(messages, since, is_ours)


async def _read_media(path: Path) -> tuple[bytes, str] | Outcome:
    """The file's bytes and MIME type, or ``FAIL_ROW`` when it cannot be read, is not a type
    Xquik takes (read again here: the file may have changed since the plan) or is over its
    limit."""
    try:
        content = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        return Outcome(
            action=Action.FAIL_ROW,
            code="media_unreadable",
            message=f"cannot read {path}: {exc.strerror or exc}",
        )
    checked = type_or_problem(path, content, len(content))
    if isinstance(checked, MediaProblem):
        return Outcome(action=Action.FAIL_ROW, code=checked.code, message=checked.message)
    return content, checked


def _is_record(body: JsonObject) -> bool:
    return text_field(body, "object") == "x_write_action" or "terminal" in body


def _is_terminal(record: JsonObject) -> bool:
    terminal = bool_field(record, "terminal")
    return terminal if terminal is not None else text_field(record, "status") in _TERMINAL


def _poll_delay_s(answer: Answer, record: JsonObject) -> float:
    """``pollAfterMs`` (the finer hint), else ``Retry-After``, else ``nextAction.afterMs``."""
    after_ms = number_field(record, "pollAfterMs")
    if after_ms is None:
        header_s = retry_after_s(answer.headers, None)
        if header_s is not None:
            return max(MIN_POLL_S, header_s)
        after_ms = number_field(object_field(record, "nextAction"), "afterMs")
    return DEFAULT_POLL_S if after_ms is None else max(MIN_POLL_S, after_ms / 1000)


def _unsettled(record: JsonObject, status: int, code: str) -> Outcome:
    return Outcome(
        action=Action.VERIFY,
        code=code,
        http_status=status,
        write_action_id=_action_id(record),
        message=f"the write action is still {text_field(record, 'status') or 'pending'}; "
        "replay the same key or check the conversation, never send anew",
    )


def _action_id(record: JsonObject) -> str | None:
    return text_field(record, "writeActionId") or text_field(record, "id")


def _product_id(record: JsonObject, product: _Product) -> str | None:
    value = text_field(record, product.id_field)
    result = object_field(record, "result")
    if value is None and text_field(result, "type") == product.result_type:
        value = text_field(result, "id")
    return value


def _legacy_result(answer: Answer, body: JsonObject, product: _Product) -> Outcome:
    """``{messageId, success}`` (or ``{mediaId, mediaUrl, success}``) from older deployments."""
    request_id = answer.headers.get("x-request-id")
    value = text_field(body, product.id_field)
    success = bool_field(body, "success")
    # "Treat success: true ... as sent" (providers.md §1.3), with or without the id
    if success is True or (success is None and value is not None):
        return Outcome(
            action=Action.DONE, value=value, http_status=answer.status, request_id=request_id
        )
    outcome = classify_xquik(status=answer.status, body=body, retry_after_s=None, write=True)
    return replace(outcome, request_id=request_id)
