"""Xquik's DM contract (prefix ``/api/v1``): send, write actions, media, users, history, credits.

The current contract answers writes with the ``x_write_action`` record (200 terminal, 202 while
dispatching) and requires ``Idempotency-Key``; ``SandboxConfig(legacy=True)`` answers the legacy
``{messageId, success}`` and makes the key optional. A key is bound only to a write that was
dispatched (delivered or accepted): a key whose first try failed before dispatch may be used again.
DM history is free here (the real one charges a credit per message).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from bulkdm.sandbox import xquik_errors as errors
from bulkdm.sandbox.actions import Stored, WriteAction, render_action
from bulkdm.sandbox.directory import Profile, SenderRefusal
from bulkdm.sandbox.ledger import Entry, page_newest_first
from bulkdm.sandbox.replies import cut_connection, json_reply
from bulkdm.sandbox.state import SandboxState
from bulkdm.sandbox.xquik_input import (
    MAX_TEXT_CHARS,
    WriteInput,
    api_key_of,
    idempotency_key_of,
    read_dm,
    read_media,
)
from bulkdm.timestamps import iso_utc

__all__ = ["HISTORY_PAGE_SIZE", "XquikRoutes"]

PREFIX = "/api/v1"
DM_CREDITS = 10
MEDIA_CREDITS = 10
LOOKUP_CREDITS = 1
HISTORY_PAGE_SIZE = 20
_UNLIMITED_BALANCE = 10**12


class XquikRoutes:
    """The Xquik endpoints over one :class:`SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(PREFIX + "/x/dm/{userId}", self.send_dm),
            web.get(PREFIX + "/x/dm/{userId}/history", self.history),
            web.post(PREFIX + "/x/media", self.upload_media),
            # registered before /x/users/{id}, which would otherwise take "batch" for a name
            web.get(PREFIX + "/x/users/batch", self.users_batch),
            web.get(PREFIX + "/x/users/{id}", self.user),
            web.get(PREFIX + "/x/write-actions/{id}", self.write_action),
            web.get(PREFIX + "/credits", self.credits),
        ]

    # -- writes ------------------------------------------------------------------------------

    async def send_dm(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        opened = self._open_write(request, request_id)
        if isinstance(opened, web.Response):
            return opened
        dm = await read_dm(request, request_id, opened[1])
        if isinstance(dm, web.Response):
            return dm
        return self._send(request, request_id, opened[0], dm)

    async def upload_media(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        opened = self._open_write(request, request_id)
        if isinstance(opened, web.Response):
            return opened
        media = await read_media(request, request_id, opened[1])
        if isinstance(media, web.Response):
            return media
        return self._upload(request_id, opened[0], media)

    def _open_write(
        self, request: web.Request, request_id: str
    ) -> tuple[str, str | None] | web.Response:
        api_key = api_key_of(request)
        if not self._state.api_key_valid(api_key):
            return errors.unauthenticated(request_id)
        required = not self._state.config.legacy
        key = idempotency_key_of(request, request_id, required=required)
        return key if isinstance(key, web.Response) else (api_key, key)

    def _send(
        self, request: web.Request, request_id: str, api_key: str, dm: WriteInput
    ) -> web.StreamResponse:
        state = self._state
        wait_s = state.key_windows.admit(api_key)
        if wait_s is not None:
            return errors.rate_limited(request_id, wait_s)
        stored = state.actions.bound(api_key, dm.idempotency_key) if dm.idempotency_key else None
        if stored is not None:
            failure = self._injected_failure(request_id)
            return failure if failure is not None else self._replay(stored, dm, request_id)
        refusal = self._dm_refusal(dm, request_id)
        if refusal is None:
            refusal = self._injected_failure(request_id)
        if refusal is not None:
            return refusal
        return self._deliver(request, request_id, api_key, dm)

    def _dm_refusal(self, dm: WriteInput, request_id: str) -> web.Response | None:
        """Why X (or Xquik's billing) would refuse this DM before dispatch, if it would."""
        state = self._state
        if not state.credits.can_pay(DM_CREDITS):
            return errors.insufficient_credits(request_id, state.credits.balance or 0, DM_CREDITS)
        sender_refusal = state.directory.sender_refusal(dm.account)
        if sender_refusal is not None:
            return errors.account_refusal(sender_refusal, request_id)
        recipient_refusal = state.directory.recipient_refusal(dm.account, dm.user_id)
        if recipient_refusal is not None:
            return errors.recipient_refusal(recipient_refusal, request_id)
        if len(dm.text) > MAX_TEXT_CHARS:
            message = f"Text exceeds X's limit of {MAX_TEXT_CHARS} characters. Shorten it."
            return errors.error(422, "x_content_too_long", message, request_id)
        wait_s = state.sender_windows.admit(state.directory.sender_name(dm.account).lower())
        if wait_s is not None:
            return errors.rate_limited(request_id, wait_s, code="x_rate_limited")
        return None

    def _injected_failure(self, request_id: str) -> web.Response | None:
        dice = self._state.dice
        if dice.rate_limited():
            return errors.rate_limited(request_id, 1)
        if dice.failed():
            return (
                errors.tracking_unavailable(request_id)
                if dice.coin()
                else errors.internal_error(request_id)
            )
        return None

    def _replay(self, stored: Stored, write: WriteInput, request_id: str) -> web.Response:
        if stored.request_hash != write.request_hash:
            return errors.idempotency_conflict(request_id)
        action = self._state.actions.actions[stored.action_id]
        return self._write_reply(action, request_id, idempotent=True)

    def _deliver(
        self, request: web.Request, request_id: str, api_key: str, dm: WriteInput
    ) -> web.Response:
        state = self._state
        state.credits.charge(DM_CREDITS)
        slow = state.config.faults.accept_after_ms > 0 and not state.config.legacy
        if slow and state.dice.accepted():
            return self._accept_slowly(request_id, api_key, dm)
        delivery = state.deliver(
            provider="xquik",
            sender=dm.account,
            recipient_id=dm.user_id,
            text=dm.text,
            media_id=dm.media_id,
            idempotency_key=dm.idempotency_key,
        )
        dropped = state.dice.dropped()
        accepted = state.dice.accepted() and not state.config.legacy
        action = self._new_action(
            "send_dm", dm, result_id=delivery.message_id, at_s=delivery.at_s, credits=DM_CREDITS
        )
        if accepted:
            action.terminal, action.completed_at_s = False, None
        # bound before the drop: a replay with the same key must find this delivery
        state.actions.add(action, api_key=api_key, idempotency_key=dm.idempotency_key)
        if dropped:
            return cut_connection(request)
        return self._write_reply(action, request_id, idempotent=False)

    def _accept_slowly(self, request_id: str, api_key: str, dm: WriteInput) -> web.Response:
        """202 with an action that X confirms ``accept_after_ms`` later: only then is the DM
        delivered (and in the history), whatever is polled or replayed meanwhile."""
        state = self._state
        action = self._new_action("send_dm", dm, result_id="", at_s=time.time(), credits=DM_CREDITS)
        action.terminal, action.completed_at_s = False, None
        state.actions.add(action, api_key=api_key, idempotency_key=dm.idempotency_key)

        def confirm() -> None:
            delivery = state.deliver(provider="xquik", sender=dm.account, recipient_id=dm.user_id,
                                     text=dm.text, media_id=dm.media_id,
                                     idempotency_key=dm.idempotency_key)
            action.result_id = delivery.message_id
            action.complete(delivery.at_s)

        # a timer, not this handler: X confirms whether or not anyone is polling
        asyncio.get_running_loop().call_later(state.config.faults.accept_after_ms / 1000, confirm)
        return self._write_reply(action, request_id, idempotent=False)

    def _upload(self, request_id: str, api_key: str, media: WriteInput) -> web.Response:
        state = self._state
        wait_s = state.key_windows.admit(api_key)
        if wait_s is not None:
            return errors.rate_limited(request_id, wait_s)
        stored = (
            state.actions.bound(api_key, media.idempotency_key) if media.idempotency_key else None
        )
        if stored is not None:
            return self._replay(stored, media, request_id)
        if not state.credits.can_pay(MEDIA_CREDITS):
            balance = state.credits.balance or 0
            return errors.insufficient_credits(request_id, balance, MEDIA_CREDITS)
        refusal = state.directory.sender_refusal(media.account)
        if refusal is not None and refusal is not SenderRefusal.DAILY_LIMIT:
            return errors.account_refusal(refusal, request_id)
        state.credits.charge(MEDIA_CREDITS)
        media_id = state.ids.snowflake()
        action = self._new_action(
            "upload_media", media, result_id=media_id, at_s=time.time(), credits=MEDIA_CREDITS
        )
        action.media_url = state.media_urls[media_id] = f"https://media.sandbox.invalid/{media_id}"
        state.actions.add(action, api_key=api_key, idempotency_key=media.idempotency_key)
        return self._write_reply(action, request_id, idempotent=False)

    def _new_action(
        self, kind: str, write: WriteInput, *, result_id: str, at_s: float, credits: int
    ) -> WriteAction:
        directory = self._state.directory
        return WriteAction(
            id=self._state.ids.action_id(),
            action=kind,
            terminal=True,
            request_hash=write.request_hash,
            payload=write.payload,
            account_id=directory.sender_id(write.account),
            account_username=directory.sender_name(write.account),
            target_id=write.user_id or None,
            result_id=result_id,
            created_at_s=at_s,
            completed_at_s=at_s,
            credits=credits,
        )

    def _write_reply(
        self, action: WriteAction, request_id: str, *, idempotent: bool
    ) -> web.Response:
        """The answer to a write: the legacy body, or the action record (200 or 202)."""
        if not self._state.config.legacy:
            return self._record_reply(action, request_id, idempotent=idempotent)
        body: dict[str, Any]
        if action.action == "send_dm":
            body = {"messageId": action.result_id, "success": True}
        else:
            body = {"mediaId": action.result_id, "mediaUrl": action.media_url, "success": True}
        return json_reply(body, 200, {"X-Request-Id": request_id})

    def _record_reply(
        self, action: WriteAction, request_id: str, *, idempotent: bool
    ) -> web.Response:
        record = render_action(action, request_id=request_id, idempotent=idempotent)
        headers = {"X-Request-Id": request_id, "Location": record["statusUrl"]}
        if action.terminal:
            return json_reply(record, 200, headers)
        headers["Retry-After"] = "1"
        return json_reply(record, 202, headers)

    # -- reads -------------------------------------------------------------------------------

    def _open_read(self, request: web.Request, request_id: str) -> web.Response | None:
        """The 401 or 429 answer that stops a read, or None to go on."""
        api_key = api_key_of(request)
        if not self._state.api_key_valid(api_key):
            return errors.unauthenticated(request_id)
        wait_s = self._state.read_wait_s(api_key)
        return None if wait_s is None else errors.rate_limited(request_id, wait_s)

    async def write_action(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        refusal = self._open_read(request, request_id)
        if refusal is not None:
            return refusal
        action = self._state.actions.actions.get(request.match_info["id"])
        if action is None:
            return errors.error(404, "not_found", "Resource not found.", request_id)
        if not action.terminal and self._state.config.faults.accept_after_ms <= 0:
            action.polls += 1
            if action.polls >= self._state.config.faults.accept_polls:
                action.complete(time.time())
        return self._record_reply(action, request_id, idempotent=False)

    async def user(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        refusal = self._open_read(request, request_id)
        if refusal is not None:
            return refusal
        ident = request.match_info["id"].removeprefix("@")
        if not ident.isdigit() and not _is_username(ident):
            return errors.error(400, "invalid_username", "Invalid X username.", request_id)
        directory = self._state.directory
        if ident.isdigit():
            user_id = ident if directory.exists(ident) else None
        else:
            user_id = directory.find(ident)
        if user_id is None:
            return errors.error(
                404, "user_not_found", "X user not found. Check the username.", request_id
            )
        credits = self._state.credits
        if not credits.can_pay(LOOKUP_CREDITS):
            return errors.insufficient_credits(request_id, credits.balance or 0, LOOKUP_CREDITS)
        credits.charge(LOOKUP_CREDITS)
        return json_reply(
            _user_profile(directory.profile(user_id)), 200, {"X-Request-Id": request_id}
        )

    async def users_batch(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        refusal = self._open_read(request, request_id)
        if refusal is not None:
            return refusal
        parts = (part.strip() for part in request.query.get("ids", "").split(","))
        ids = list(dict.fromkeys(part for part in parts if part))
        if not 1 <= len(ids) <= 100 or not all(user_id.isdigit() for user_id in ids):
            message = "ids must be 1-100 comma-separated numeric user ids."
            return errors.error(400, "invalid_input", message, request_id)
        users, unavailable, unprocessed = [], [], []
        for user_id in ids:
            if not self._state.credits.can_pay(LOOKUP_CREDITS):
                unprocessed.append(user_id)
            elif self._state.directory.exists(user_id):
                self._state.credits.charge(LOOKUP_CREDITS)
                users.append(_user_profile(self._state.directory.profile(user_id)))
            else:
                unavailable.append(user_id)
        body = {
            "users": users,
            "has_next_page": False,
            "next_cursor": "",
            "requested_count": len(ids),
            "processed_count": len(ids) - len(unprocessed),
            "returned_count": len(users),
            "unavailable_ids": unavailable,
            "unprocessed_ids": unprocessed,
        }
        return json_reply(body, 200, {"X-Request-Id": request_id})

    async def history(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        refusal = self._open_read(request, request_id)
        if refusal is None:
            refusal = self._history_refusal(request, request_id)
        if refusal is not None:
            return refusal
        state = self._state
        account_id = state.directory.sender_id(request.query["account"])
        entries = state.history_page(account_id, request.match_info["userId"])
        page = page_newest_first(entries, request.query.get("cursor"),
                                 min(HISTORY_PAGE_SIZE, state.config.history_page_size))
        if page is None:
            return errors.error(400, "invalid_input", "Unknown cursor.", request_id)
        body = {
            "messages": [self._history_message(entry) for entry in page.entries],
            "has_next_page": page.next_cursor is not None,
            "next_cursor": page.next_cursor or "",
        }
        return json_reply(body, 200, {"X-Request-Id": request_id})

    def _history_refusal(self, request: web.Request, request_id: str) -> web.Response | None:
        if not request.match_info["userId"].isdigit():
            return errors.error(400, "invalid_user_id", None, request_id)
        account = request.query.get("account", "").strip().removeprefix("@")
        if not account:
            message = (
                "Provide ?account=<x_handle> for a connected X account. "
                "DM history requires a connected participant account."
            )
            return errors.error(400, "account_required", message, request_id)
        refusal = self._state.directory.sender_refusal(account)
        if refusal is None or refusal is SenderRefusal.DAILY_LIMIT:
            return None
        if refusal is SenderRefusal.SUSPENDED:
            return errors.error(403, "account_restricted", None, request_id)
        return errors.account_refusal(refusal, request_id)

    def _history_message(self, entry: Entry) -> dict[str, str]:
        delivery = entry.delivery
        message = {
            "id": delivery.message_id,
            "text": delivery.text,
            "senderId": entry.sender_id,
            "receiverId": delivery.recipient_id,
            "createdAt": iso_utc(delivery.at_s),
        }
        if delivery.media_id is not None:
            message["mediaUrl"] = self._state.media_urls.get(
                delivery.media_id, f"https://media.sandbox.invalid/{delivery.media_id}"
            )
        return message

    async def credits(self, request: web.Request) -> web.StreamResponse:
        request_id = self._state.ids.request_id()
        refusal = self._open_read(request, request_id)
        if refusal is not None:
            return refusal
        credits = self._state.credits
        balance = _UNLIMITED_BALANCE if credits.balance is None else credits.balance
        body = {
            "auto_topup_amount_dollars": 0,
            "auto_topup_enabled": False,
            "auto_topup_threshold": "0",
            "balance": str(max(balance, 0)),
            "lifetime_purchased": str(max(balance, 0) + credits.used),
            "lifetime_used": str(credits.used),
        }
        return json_reply(body, 200, {"X-Request-Id": request_id})


def _is_username(ident: str) -> bool:
    return 0 < len(ident) <= 50 and ident.replace("_", "").isalnum() and ident.isascii()


def _user_profile(profile: Profile) -> dict[str, Any]:
    """``UserProfile``: the required ``id``, ``username``, ``name`` and a few optional fields."""
    return {
        "id": profile.id,
        "username": profile.username,
        "name": profile.display_name,
        "description": "A sandbox user.",
        "followers": profile.followers,
        "following": profile.followers // 7,
        "verified": False,
        "isBlueVerified": False,
        "protected": profile.protected,
        "createdAt": "2020-01-01T00:00:00.000Z",
        # documented as optional (the workflow guide), not in the OpenAPI schema
        "canDm": profile.can_dm,
    }
