"""The GetXAPI client: DMs with the sender's X session token, lookups and conversation history
(providers.md §2).

GetXAPI has no idempotency key: a send that may have been delivered is settled by reading the
conversation (:meth:`GetXapiProvider.reconcile`), never by sending again. It documents no DM
media, so :meth:`GetXapiProvider.upload_media` refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Final

from bulkdm.outcomes import Action, Outcome, Reconciliation
from bulkdm.providers.base import DmRequest, HistoryPage, SenderAuth
from bulkdm.providers.classify import as_lookup, classify_getxapi
from bulkdm.providers.http import (
    Answer,
    BaseUrl,
    HttpClient,
    JsonObject,
    bool_field,
    history_messages,
    object_field,
    parse_iso,
    redact,
    retry_after_s,
    search_messages,
    text_field,
)
from bulkdm.secrets import Secret
from bulkdm.timestamps import normalize_iso

__all__ = ["MAX_CONVERSATION_PAGES", "GetXapiProvider", "conversation_id"]

#: conversation pages read by one reconcile before it gives up proving absence
MAX_CONVERSATION_PAGES: Final = 20


def conversation_id(user_a: str, user_b: str) -> str:
    """X's id of a one-to-one conversation: the two user ids, numerically lower first."""
    low, high = sorted((user_a, user_b), key=lambda uid: (len(uid), uid))
    return f"{low}-{high}"


class GetXapiProvider:
    """GetXAPI behind the :class:`~bulkdm.providers.base.Provider` interface.

    Example::

        http = HttpClient.open(concurrency=8, request_timeout_s=30)
        getxapi = GetXapiProvider(http=http, base_url="https://api.getxapi.com",
                                  api_key=Secret("get-x-api-..."))

    Each :class:`SenderAuth` must carry the sender's ``auth_token``.
    """

    def __init__(self, *, http: HttpClient, base_url: str, api_key: Secret) -> None:
        self.name = "getxapi"
        self.send_endpoint = "POST /twitter/dm/send"
        self._http = http
        self._base = base_url.rstrip("/")
        self._root = BaseUrl(self._base)
        self._api_key = api_key
        #: sender account -> its own X user id (from ``dm/list``), for conversation ids
        self._own_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"GetXapiProvider(base_url={self._base!r})"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.reveal()}", "Accept": "application/json"}

    async def _post(
        self, path: str, body: dict[str, object], *, write: bool,
        on_sent: Callable[[float], None] | None = None,
    ) -> Answer | Outcome:
        return await self._http.request(
            "POST", self._root.at(path), headers=self._headers(), json_body=body, write=write,
            on_sent=on_sent,
        )

    # -- send --------------------------------------------------------------------------------

    async def send(self, request: DmRequest) -> Outcome:
        """``POST /twitter/dm/send``; ``DONE`` with the message id and X's timestamp."""
        token = request.sender.auth_token
        if token is None:
            return _no_token(request.sender)
        if request.media_id is not None:
            return _NO_MEDIA
        body: dict[str, object] = {
            "auth_token": token.reveal(),
            "recipient_id": request.recipient_id,
            "text": request.text,
        }
        answer = await self._post("/twitter/dm/send", body, write=True, on_sent=request.on_sent)
        if isinstance(answer, Outcome):
            return answer
        return self._scrub(_send_result(answer), token)

    async def upload_media(self, path: Path, sender: SenderAuth, idempotency_key: str) -> Outcome:
        """Always ``FAIL_ROW`` ``media_not_supported``: GetXAPI documents no DM attachments."""
        return _NO_MEDIA

    # -- reads -------------------------------------------------------------------------------

    async def resolve(self, username: str, sender: SenderAuth) -> Outcome:
        """``GET /twitter/user/info?userName=``; ``DONE`` with the id, ``FAIL_ROW`` if unknown."""
        answer = await self._http.request(
            "GET",
            self._root.at("/twitter/user/info"),
            headers=self._headers(),
            params={"userName": username.strip().removeprefix("@")},
            write=False,
        )
        if isinstance(answer, Outcome):
            return answer
        body = answer.json_object()
        user_id = text_field(object_field(body, "data"), "id") or text_field(body, "id")
        if answer.status == 200 and user_id is not None:
            return Outcome(action=Action.DONE, value=user_id, http_status=200)
        return self._scrub(as_lookup(_read_failure(answer, body)), sender.auth_token)

    async def reconcile(self, request: DmRequest, since_iso: str) -> Reconciliation:
        """Page ``POST /twitter/dm/conversation`` (newest first) for ``request.text`` sent by
        this sender to the recipient after ``since_iso``."""
        token = request.sender.auth_token
        if token is None:
            return Reconciliation(found=None, outcome=_no_token(request.sender))
        own_id = await self._own_id(request.sender.account, token)
        if isinstance(own_id, Outcome):
            return Reconciliation(found=None, outcome=self._scrub(own_id, token))
        body: dict[str, object] = {
            "auth_token": token.reveal(),
            "conversation_id": conversation_id(own_id, request.recipient_id),
        }
        since = parse_iso(since_iso)
        for _ in range(MAX_CONVERSATION_PAGES):
            answer = await self._post("/twitter/dm/conversation", body, write=False)
            page = _page(answer)
            if isinstance(page, Outcome):
                return Reconciliation(found=None, outcome=self._scrub(page, token))
            found, older = _search(page, request, own_id, since)
            if found is not None:
                return found
            cursor = text_field(page, "next_cursor")
            if older or bool_field(page, "has_more") is not True or cursor is None:
                return Reconciliation(found=False)
            body["cursor"] = cursor
        return Reconciliation(
            found=None,
            outcome=Outcome(
                action=Action.RETRY,
                code="history_too_long",
                message=f"the text was not in the newest {MAX_CONVERSATION_PAGES} pages",
            ),
        )

    async def history_page(self, sender: SenderAuth, recipient_id: str,
                           cursor: str | None) -> HistoryPage | Outcome:
        """``POST /twitter/dm/conversation`` (the conversation id from ``dm/list``'s
        ``userId``, asked once per sender); $0.001 a page."""
        token = sender.auth_token
        if token is None:
            return _no_token(sender)
        known = sender.account in self._own_ids
        own_id = await self._own_id(sender.account, token)
        if isinstance(own_id, Outcome):
            return self._scrub(own_id, token)
        body: dict[str, object] = {"auth_token": token.reveal(),
                                   "conversation_id": conversation_id(own_id, recipient_id)}
        if cursor:
            body["cursor"] = cursor
        page = _page(await self._post("/twitter/dm/conversation", body, write=False))
        if isinstance(page, Outcome):
            return self._scrub(page, token)
        following = text_field(page, "next_cursor")
        messages = page.get("messages")
        return HistoryPage(messages=history_messages(messages if isinstance(messages, list)
                                                     else []),
                           cursor=following if bool_field(page, "has_more") else None,
                           pages=1 if known else 2)

    async def _own_id(self, account: str, token: Secret) -> str | Outcome:
        """The sender's own X user id: ``userId`` of ``dm/list``, asked once per sender."""
        cached = self._own_ids.get(account)
        if cached is not None:
            return cached
        answer = await self._post(
            "/twitter/dm/list", {"auth_token": token.reveal(), "count": 1}, write=False
        )
        page = _page(answer)
        if isinstance(page, Outcome):
            return page
        own_id = text_field(page, "userId")
        if own_id is None:
            return Outcome(
                action=Action.RETRY,
                code="unreadable_answer",
                http_status=200,
                message="dm/list gave no userId",
            )
        self._own_ids[account] = own_id
        return own_id

    def _scrub(self, outcome: Outcome, token: Secret | None) -> Outcome:
        if outcome.message is None:
            return outcome
        secrets = (self._api_key.reveal(), token.reveal() if token is not None else "")
        return replace(outcome, message=redact(outcome.message, *secrets))

    async def aclose(self) -> None:
        await self._http.aclose()


_NO_MEDIA: Final = Outcome(
    action=Action.FAIL_ROW,
    code="media_not_supported",
    message="GetXAPI documents no DM attachments; send this campaign through Xquik or drop "
    "the media column",
)


def _no_token(sender: SenderAuth) -> Outcome:
    return Outcome(
        action=Action.DROP_SENDER,
        code="no_auth_token",
        message=f"sender {sender.account} has no X auth_token; GetXAPI needs one",
    )


def _send_result(answer: Answer) -> Outcome:
    body = answer.json_object()
    data = object_field(body, "data")
    message_id = text_field(data, "id")
    if answer.status == 200 and text_field(body, "status") == "success" and message_id:
        return Outcome(
            action=Action.DONE,
            value=message_id,
            http_status=200,
            sent_at=normalize_iso(text_field(data, "createdAt")),
        )
    if 200 <= answer.status < 300 and text_field(body, "error") is None:
        # a success status that does not read as one: the DM may well be out, so check
        return Outcome(
            action=Action.VERIFY,
            code="unreadable_answer",
            http_status=answer.status,
            message="a success answer without the message id",
        )
    return classify_getxapi(
        status=answer.status,
        body=body,
        retry_after_s=retry_after_s(answer.headers, body),
        write=True,
    )


def _read_failure(answer: Answer, body: JsonObject | None) -> Outcome:
    if answer.status == 200:
        return Outcome(
            action=Action.RETRY,
            code="unreadable_answer",
            http_status=200,
            message="a success answer without the expected fields",
        )
    return classify_getxapi(
        status=answer.status,
        body=body,
        retry_after_s=retry_after_s(answer.headers, body),
        write=False,
    )


def _page(answer: Answer | Outcome) -> JsonObject | Outcome:
    """A ``dm/list`` or ``dm/conversation`` page, or the outcome that says why there is none."""
    if isinstance(answer, Outcome):
        return answer
    body = answer.json_object()
    if answer.status != 200 or body is None or not isinstance(body.get("messages"), list):
        return _read_failure(answer, body)
    return body


def _search(
    page: JsonObject, request: DmRequest, own_id: str, since: datetime | None
) -> tuple[Reconciliation | None, bool]:
    def is_ours(item: JsonObject) -> bool:
        return (
            text_field(item, "senderId") == own_id
            and text_field(item, "recipientId") == request.recipient_id
            and item.get("text") == request.text
        )

    return search_messages(page.get("messages"), since, is_ours)
