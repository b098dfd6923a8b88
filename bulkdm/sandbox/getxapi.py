"""GetXAPI's DM contract (no prefix): ``/twitter/dm/send``, ``dm/list``, ``dm/conversation``, users.

Errors are ``{"error": "<text>"}`` with no code; the texts below are the sandbox's, chosen to be
distinct per cause. The sender is named by the ``auth_token`` itself, with a leading ``tok-``
stripped (``tok-alice`` sends as ``alice``); see :mod:`bulkdm.sandbox.directory` for the rules.
There is no idempotency: every accepted send delivers, a resend delivers again. Rate-limit answers
carry no ``Retry-After`` (none is documented).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bulkdm.sandbox.directory import Profile, RecipientRefusal, SenderRefusal, is_banned
from bulkdm.sandbox.ledger import Entry, Page, page_newest_first, pair_key
from bulkdm.sandbox.replies import cut_connection, json_reply, read_json_object
from bulkdm.sandbox.state import SandboxState
from bulkdm.timestamps import iso_utc

__all__ = ["PAGE_SIZE", "GetXapiRoutes", "sender_of_token"]

PAGE_SIZE = 20
MAX_TEXT_CHARS = 10_000
INVALID_TOKEN = "Invalid auth_token - could not extract userId"
TOO_MANY_REQUESTS = "Too many requests. Slow down and retry with backoff."


def sender_of_token(auth_token: str) -> str:
    """The sender account an ``auth_token`` stands for: the token without a leading ``tok-``."""
    return auth_token.strip().removeprefix("tok-")


def _error(status: int, text: str) -> web.Response:
    return json_reply({"error": text}, status)


class GetXapiRoutes:
    """The GetXAPI endpoints over one :class:`SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/twitter/dm/send", self.send_dm),
            web.post("/twitter/dm/list", self.dm_list),
            web.post("/twitter/dm/conversation", self.dm_conversation),
            web.get("/twitter/user/info", self.user_info),
            web.get("/twitter/user/info_by_id", self.user_info_by_id),
        ]

    def _api_key(self, request: web.Request) -> str | None:
        authorization = request.headers.get("Authorization", "")
        key = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        return key if self._state.api_key_valid(key) else None

    async def _open(
        self, request: web.Request, windows_are_writes: bool
    ) -> tuple[dict[str, Any], str] | web.Response:
        """API key, its window, the JSON body and the sender; or the answer that stops here."""
        api_key = self._api_key(request)
        if api_key is None:
            return _error(401, "Invalid or missing API key")
        refused = (self._state.key_windows.admit(api_key) if windows_are_writes
                   else self._state.read_wait_s(api_key))
        if refused is not None:
            return _error(429, TOO_MANY_REQUESTS)
        body = await read_json_object(request)
        if body is None:
            return _error(400, "Request body must be a JSON object")
        token = body.get("auth_token")
        if not isinstance(token, str) or not token.strip():
            return _error(400, "Missing required field: auth_token")
        sender = sender_of_token(token)
        if sender.lower().startswith("bad"):
            return _error(401, INVALID_TOKEN)
        return body, sender

    # -- send --------------------------------------------------------------------------------

    async def send_dm(self, request: web.Request) -> web.StreamResponse:
        opened = await self._open(request, windows_are_writes=True)
        if isinstance(opened, web.Response):
            return opened
        body, sender = opened
        recipient = self._recipient(body)
        if isinstance(recipient, web.Response):
            return recipient
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Missing required field: text")
        refusal = self._send_refusal(sender, recipient, text)
        if refusal is not None:
            return refusal
        if self._state.dice.late():
            return await self._deliver_late(request, sender, recipient, text)
        return self._deliver(request, sender, recipient, text)

    async def _deliver_late(
        self, request: web.Request, sender: str, recipient_id: str, text: str
    ) -> web.Response:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def deliver() -> None:
            self._state.deliver(provider="getxapi", sender=sender, recipient_id=recipient_id,
                                text=text)
            if not delivered.done():
                delivered.set_result(None)

        # a timer, not this handler: the DM is delivered even if the client hangs up first
        loop.call_later(self._state.dice.faults.late_ms / 1000, deliver)
        await delivered
        return cut_connection(request)

    def _recipient(self, body: dict[str, Any]) -> str | web.Response:
        """The recipient's id, from ``recipient_id`` or else ``recipient_username``."""
        recipient_id, username = body.get("recipient_id"), body.get("recipient_username")
        if isinstance(recipient_id, int) and not isinstance(recipient_id, bool):
            recipient_id = str(recipient_id)
        if isinstance(recipient_id, str) and recipient_id.strip():
            recipient_id = recipient_id.strip()
            return recipient_id if recipient_id.isdigit() else _error(400, "Invalid recipient_id")
        if isinstance(username, str) and username.strip().removeprefix("@"):
            found = self._state.directory.find(username)
            return found if found is not None else _error(404, "User not found")
        return _error(400, "Missing required field: recipient_id or recipient_username")

    def _send_refusal(self, sender: str, recipient_id: str, text: str) -> web.Response | None:
        state = self._state
        sender_refusal = state.directory.sender_refusal(sender)
        if sender_refusal is not None:
            return _error(*_SENDER_ERRORS[sender_refusal])
        recipient_refusal = state.directory.recipient_refusal(sender, recipient_id)
        if recipient_refusal is not None:
            return _error(*_RECIPIENT_ERRORS[recipient_refusal])
        if len(text) > MAX_TEXT_CHARS:
            return _error(400, f"Text too long: the maximum is {MAX_TEXT_CHARS} characters")
        if state.sender_windows.admit(state.directory.sender_name(sender).lower()) is not None:
            return _error(429, "Rate limited by Twitter for this account. Try again later.")
        if state.dice.rate_limited():
            return _error(429, TOO_MANY_REQUESTS)
        if state.dice.failed():
            if state.dice.coin():
                return _error(502, "Upstream Twitter request failed")
            return _error(503, "Service temporarily unavailable")
        return None

    def _deliver(
        self, request: web.Request, sender: str, recipient_id: str, text: str
    ) -> web.Response:
        state = self._state
        delivery = state.deliver(
            provider="getxapi", sender=sender, recipient_id=recipient_id, text=text
        )
        if state.dice.dropped():
            return cut_connection(request)
        data = {
            "id": delivery.message_id,
            "createdAt": iso_utc(delivery.at_s),
            "senderId": state.directory.sender_id(sender),
            "recipientId": recipient_id,
            "text": text,
            "recipient_username": state.directory.username_for(recipient_id),
        }
        return json_reply({"status": "success", "msg": "DM sent successfully", "data": data})

    # -- reads -------------------------------------------------------------------------------

    async def dm_list(self, request: web.Request) -> web.StreamResponse:
        reader = await self._reader(request)
        if isinstance(reader, web.Response):
            return reader
        body, user_id = reader
        page = _page(self._state.ledger.involving(user_id), body,
                     self._state.config.history_page_size)
        if page is None:
            return _error(400, "Invalid cursor")
        messages = [_list_message(entry) for entry in page.entries]
        return json_reply(
            {
                "userId": user_id,
                "message_count": len(messages),
                "has_more": page.next_cursor is not None,
                "next_cursor": page.next_cursor,
                "messages": messages,
                "conversations": self._conversations(page.entries),
            }
        )

    async def dm_conversation(self, request: web.Request) -> web.StreamResponse:
        reader = await self._reader(request)
        if isinstance(reader, web.Response):
            return reader
        body, user_id = reader
        pair = _conversation_pair(body.get("conversation_id"), user_id)
        if isinstance(pair, web.Response):
            return pair
        page = _page(self._state.history_page(*pair), body,
                     self._state.config.history_page_size)
        if page is None:
            return _error(400, "Invalid cursor")
        messages = [_conversation_message(entry) for entry in page.entries]
        return json_reply(
            {
                "userId": user_id,
                "conversation_id": "-".join(pair),
                "message_count": len(messages),
                "has_more": page.next_cursor is not None,
                "next_cursor": page.next_cursor,
                "messages": messages,
                "events": [],
                "users": {uid: self._brief_user(uid) for uid in pair},
            }
        )

    async def _reader(self, request: web.Request) -> tuple[dict[str, Any], str] | web.Response:
        """The body and the reading sender's own user id, or the answer that refuses them."""
        opened = await self._open(request, windows_are_writes=False)
        if isinstance(opened, web.Response):
            return opened
        body, sender = opened
        refusal = self._reader_refusal(sender)
        if refusal is not None:
            return refusal
        return body, self._state.directory.sender_id(sender)

    def _reader_refusal(self, sender: str) -> web.Response | None:
        refusal = self._state.directory.sender_refusal(sender)
        if refusal is None or refusal is SenderRefusal.DAILY_LIMIT:
            return None
        return _error(*_SENDER_ERRORS[refusal])

    def _conversations(self, entries: tuple[Entry, ...]) -> list[dict[str, Any]]:
        """One summary per thread on this page; entries come newest first."""
        threads: dict[str, dict[str, Any]] = {}
        for entry in entries:
            pair = pair_key(entry.sender_id, entry.delivery.recipient_id)
            conversation_id = "-".join(pair)
            if conversation_id not in threads:
                threads[conversation_id] = {
                    "conversation_id": conversation_id,
                    "type": "ONE_TO_ONE",
                    "participants": [self._brief_user(uid) for uid in pair],
                    "last_message": _list_message(entry),
                    "read": True,
                }
        return list(threads.values())

    def _brief_user(self, user_id: str) -> dict[str, str]:
        name = self._state.directory.username_for(user_id)
        return {"id": user_id, "name": name.replace("_", " ").title(), "userName": name}

    async def user_info(self, request: web.Request) -> web.StreamResponse:
        refusal = self._open_lookup(request)
        if refusal is not None:
            return refusal
        username = request.query.get("userName", "").strip().removeprefix("@")
        if not username:
            return _error(400, "Missing required query parameter: userName")
        if is_banned(username):
            return _error(403, "User has been suspended.")
        user_id = self._state.directory.find(username)
        return self._user_reply(user_id)

    async def user_info_by_id(self, request: web.Request) -> web.StreamResponse:
        refusal = self._open_lookup(request)
        if refusal is not None:
            return refusal
        user_id = request.query.get("userId", "").strip()
        if not user_id.isdigit():
            return _error(400, "Missing or invalid query parameter: userId")
        return self._user_reply(user_id if self._state.directory.exists(user_id) else None)

    def _open_lookup(self, request: web.Request) -> web.Response | None:
        api_key = self._api_key(request)
        if api_key is None:
            return _error(401, "Invalid or missing API key")
        if self._state.read_wait_s(api_key) is not None:
            return _error(429, TOO_MANY_REQUESTS)
        return None

    def _user_reply(self, user_id: str | None) -> web.Response:
        if user_id is None:
            return _error(404, "User not found")
        data = _user_data(self._state.directory.profile(user_id))
        return json_reply(
            {"status": "success", "msg": "User info retrieved successfully", "data": data}
        )


def _page(entries: Any, body: dict[str, Any], most: int = PAGE_SIZE) -> Page | None:
    count = body.get("count")
    most = min(most, PAGE_SIZE)
    size = count if isinstance(count, int) and 0 < count < most else most
    cursor = body.get("cursor")
    return page_newest_first(entries, cursor if isinstance(cursor, str) else None, size)


def _conversation_pair(value: object, user_id: str) -> tuple[str, str] | web.Response:
    if not isinstance(value, str) or not value.strip():
        return _error(400, "Missing required field: conversation_id (get it from /dm/list)")
    first, _, second = value.strip().partition("-")
    if not (first.isdigit() and second.isdigit()):
        return _error(400, "Invalid conversation_id")
    if user_id not in (first, second):
        return _error(403, "Not a participant in this conversation")
    return pair_key(first, second)


def _list_message(entry: Entry) -> dict[str, Any]:
    delivery = entry.delivery
    return {
        "id": delivery.message_id,
        "conversationId": "-".join(pair_key(entry.sender_id, delivery.recipient_id)),
        "createdAt": iso_utc(delivery.at_s),
        "senderId": entry.sender_id,
        "recipientId": delivery.recipient_id,
        "text": delivery.text,
        "media": None if delivery.media_id is None else {"id": delivery.media_id},
    }


def _conversation_message(entry: Entry) -> dict[str, Any]:
    return {
        **_list_message(entry),
        "shared_tweet": None,
        "card": None,
        "links": [],
        "reactions": [],
        "reply_to_message_id": None,
        "edit_count": 0,
    }


def _user_data(profile: Profile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "name": profile.display_name,
        "userName": profile.username,
        "location": "",
        "description": "A sandbox user.",
        "protected": profile.protected,
        "isVerified": False,
        "isBlueVerified": False,
        "followers": profile.followers,
        "following": profile.followers // 7,
        "favouritesCount": 0,
        "statusesCount": 0,
        "mediaCount": 0,
        "createdAt": "2020-01-01T00:00:00.000Z",
        "profilePicture": "",
        "coverPicture": "",
        "canDm": profile.can_dm,
        "pinnedTweetIds": [],
    }


_SENDER_ERRORS: dict[SenderRefusal, tuple[int, str]] = {
    SenderRefusal.SUSPENDED: (403, "Account suspended - this account cannot send messages"),
    SenderRefusal.NEEDS_REAUTH: (401, INVALID_TOKEN),
    SenderRefusal.RESTRICTED: (403, "Account temporarily locked - verify it on x.com"),
    SenderRefusal.NOT_CONNECTED: (401, INVALID_TOKEN),
    SenderRefusal.DAILY_LIMIT: (429, "Daily DM limit reached for this account - try in 24 hours"),
}

_RECIPIENT_ERRORS: dict[RecipientRefusal, tuple[int, str]] = {
    RecipientRefusal.NOT_FOUND: (404, "User not found"),
    RecipientRefusal.DMS_CLOSED: (403, "You cannot send messages to this user"),
    RecipientRefusal.PROTECTED: (
        403,
        "You cannot send messages to this user: the account is protected",
    ),
}
