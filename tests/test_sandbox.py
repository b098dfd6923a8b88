"""The sandbox over real sockets: each provider's documented shapes, faults, limits and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bulkdm.rates import Rate
from bulkdm.sandbox import Delivery, Faults, Sandbox, SandboxConfig, derive_user_id, running_sandbox
from bulkdm.sandbox.cli import build_config, parse_args
from bulkdm.sandbox.ledger import pair_key
from bulkdm.sandbox.limits import SlidingWindows

XQ = {"x-api-key": "xq_test"}
GX = {"Authorization": "Bearer get-x-api-test"}
WRITE_ACTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": str,
    "id": str,
    "writeActionId": str,
    "action": str,
    "status": str,
    "terminal": bool,
    "retryable": bool,
    "safeToRetry": bool,
    "statusUrl": str,
    "pollAfterMs": (int, type(None)),
    "charged": bool,
    "chargedCredits": str,
    "billing": dict,
    "request": dict,
    "account": (dict, type(None)),
    "target": (dict, type(None)),
    "targetId": (str, type(None)),
    "result": (dict, type(None)),
    "nextAction": (dict, type(None)),
    "sendDispatched": bool,
    "success": bool,
}


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int
    body: Any
    #: aiohttp's case-insensitive headers (a multidict, which only aiohttp declares)
    headers: Mapping[str, str]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        yield client


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox() as running:
        yield running


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Reply:
    async with session.request(method, url, headers=headers, **kwargs) as response:
        body = await response.json(content_type=None)
        return Reply(status=response.status, body=body, headers=response.headers)


async def xq_send(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    user_id: str,
    *,
    key: str | None = "key-1",
    account: str = "alice",
    text: str = "hello",
    extra: Mapping[str, Any] | None = None,
) -> Reply:
    headers = dict(XQ) if key is None else {**XQ, "Idempotency-Key": key}
    body = {"account": account, "text": text, **(extra or {})}
    return await call(
        session, "POST", f"{sandbox.xquik_url}/x/dm/{user_id}", headers=headers, json=body
    )


async def gx_send(
    session: aiohttp.ClientSession, sandbox: Sandbox, body: Mapping[str, Any]
) -> Reply:
    return await call(
        session, "POST", f"{sandbox.getxapi_url}/twitter/dm/send", headers=GX, json=body
    )


def assert_write_action(record: Mapping[str, Any]) -> None:
    """Every required ``XWriteAction`` field, with its schema type."""
    for name, kind in WRITE_ACTION_TYPES.items():
        assert isinstance(record[name], kind), name
    assert record["object"] == "x_write_action"
    assert record["id"] == record["writeActionId"]
    assert record["statusUrl"] == f"/api/v1/x/write-actions/{record['id']}"
    assert set(record["billing"]) == {"status", "charged", "plannedCredits", "chargedCredits"}
    assert set(record["request"]) == {"hash", "payload"}
    assert len(record["request"]["hash"]) == 64
    assert record["chargedCredits"].isdigit()


# -- Xquik: send ------------------------------------------------------------------------------


async def test_xquik_send_answers_a_terminal_write_action_and_records_the_delivery(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    user_id = sandbox.directory.register("bob")
    reply = await xq_send(session, sandbox, user_id, account="@alice", text="hi bob")
    assert reply.status == 200
    record = reply.body
    assert_write_action(record)
    assert record["action"] == "send_dm"
    assert (record["status"], record["terminal"], record["success"]) == ("success", True, True)
    assert record["billing"] == {
        "status": "charged",
        "charged": True,
        "plannedCredits": "10",
        "chargedCredits": "10",
    }
    assert record["target"] == {"type": "user", "id": user_id}
    assert record["targetId"] == user_id
    assert record["account"] == {"id": derive_user_id("alice"), "username": "alice"}
    assert record["request"]["payload"] == {"account": "@alice", "text": "hi bob"}
    assert record["result"] == {
        "type": "direct_message",
        "id": record["messageId"],
        "state": "sent",
    }
    assert record["nextAction"] is None
    assert reply.headers["X-Request-Id"]
    assert reply.headers["Location"] == record["statusUrl"]
    [delivery] = sandbox.ledger
    assert delivery == Delivery(
        provider="xquik",
        sender="alice",
        recipient_id=user_id,
        text="hi bob",
        media_id=None,
        message_id=record["messageId"],
        idempotency_key="key-1",
        at_s=delivery.at_s,
    )
    assert len(delivery.message_id) == 19


async def test_xquik_replay_with_the_same_key_and_payload_returns_the_original_action(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    first = await xq_send(session, sandbox, "123456789")
    again = await xq_send(session, sandbox, "123456789")
    assert again.status == 200
    assert again.body["id"] == first.body["id"]
    assert again.body["messageId"] == first.body["messageId"]
    assert (first.body["idempotent"], again.body["idempotent"]) == (False, True)
    assert len(sandbox.ledger) == 1


async def test_xquik_reused_key_with_another_payload_is_a_409_conflict(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    await xq_send(session, sandbox, "123456789", text="first")
    reply = await xq_send(session, sandbox, "123456789", text="second")
    assert reply.status == 409
    assert reply.body == {
        "error": "idempotency_conflict",
        "message": "Idempotency-Key was already used with a different request.",
        "charged": False,
        "chargedCredits": "0",
        "retryable": False,
        "safeToRetry": True,
        "success": False,
        "nextAction": {"type": "retry", "requiresNewIdempotencyKey": True},
    }
    assert reply.headers["X-Request-Id"]
    assert [d.text for d in sandbox.ledger] == ["first"]


async def test_xquik_key_whose_first_try_failed_before_dispatch_delivers_on_retry(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(fail_rate=1.0)))
    failed = await xq_send(session, sandbox, "123456789")
    assert failed.status in (500, 503)
    assert sandbox.ledger == []
    sandbox.reconfigure(SandboxConfig())
    retried = await xq_send(session, sandbox, "123456789")
    assert retried.status == 200
    assert retried.body["idempotent"] is False
    assert len(sandbox.ledger) == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_idempotency_key"),
        ({"Idempotency-Key": "has space"}, "invalid_idempotency_key"),
    ],
)
async def test_xquik_send_needs_a_well_formed_idempotency_key(
    session: aiohttp.ClientSession, sandbox: Sandbox, headers: dict[str, str], code: str
) -> None:
    reply = await call(
        session,
        "POST",
        f"{sandbox.xquik_url}/x/dm/123456789",
        headers={**XQ, **headers},
        json={"account": "alice", "text": "hi"},
    )
    assert reply.status == 400
    assert reply.body["error"] == code
    assert (reply.body["charged"], reply.body["chargedCredits"], reply.body["success"]) == (
        False,
        "0",
        False,
    )
    assert reply.body["nextAction"] == {"type": "fix_request"}
    assert sandbox.ledger == []


@pytest.mark.parametrize(
    ("user_id", "extra", "text"),
    [
        ("123456789", {}, ""),
        ("123456789", {}, "   "),
        ("123456789", {"media_ids": []}, "hi"),
        ("123456789", {"media_ids": ["1", "2"]}, "hi"),
        ("123456789", {"reply_to_message_id": "99"}, "hi"),
        ("not-a-number", {}, "hi"),
    ],
)
async def test_xquik_invalid_input_is_a_400_and_nothing_is_sent(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    user_id: str,
    extra: dict[str, Any],
    text: str,
) -> None:
    reply = await xq_send(session, sandbox, user_id, text=text, extra=extra)
    assert reply.status == 400
    assert reply.body["error"] == "invalid_input"
    assert reply.body["message"] == "Invalid input. Check request fields."
    assert reply.body["safeToRetry"] is True
    assert sandbox.ledger == []


async def test_xquik_body_that_is_not_json_is_invalid_json(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    headers = {**XQ, "Idempotency-Key": "k", "Content-Type": "application/json"}
    url = f"{sandbox.xquik_url}/x/dm/123456789"
    reply = await call(session, "POST", url, headers=headers, data=b"{nope")
    assert (reply.status, reply.body["error"]) == (400, "invalid_json")


async def test_xquik_text_over_10000_characters_is_x_content_too_long(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    at_limit = await xq_send(session, sandbox, "123456789", key="a", text="x" * 10_000)
    over = await xq_send(session, sandbox, "123456789", key="b", text="x" * 10_001)
    assert at_limit.status == 200
    assert (over.status, over.body["error"]) == (422, "x_content_too_long")
    assert len(sandbox.ledger) == 1


# -- Xquik: accepted actions, legacy ------------------------------------------------------------


async def test_xquik_accepted_send_answers_202_then_turns_terminal_when_polled(
    session: aiohttp.ClientSession,
) -> None:
    config = SandboxConfig(faults=Faults(accept_rate=1.0, accept_polls=2))
    async with running_sandbox(config) as sandbox:
        reply = await xq_send(session, sandbox, "123456789")
        assert reply.status == 202
        record = reply.body
        assert_write_action(record)
        assert (record["status"], record["terminal"], record["success"]) == (
            "dispatching",
            False,
            False,
        )
        assert record["result"] is None
        assert record["pollAfterMs"] == 200
        assert record["nextAction"] == {"type": "poll", "url": record["statusUrl"], "afterMs": 200}
        assert reply.headers["Retry-After"] == "1"
        assert reply.headers["Location"] == record["statusUrl"]
        [delivery] = sandbox.ledger
        poll_url = sandbox.root_url + reply.headers["Location"]
        first_poll = await call(session, "GET", poll_url, headers=XQ)
        second_poll = await call(session, "GET", poll_url, headers=XQ)
        replay = await xq_send(session, sandbox, "123456789")
    assert first_poll.status == 202
    assert second_poll.status == 200
    assert second_poll.body["status"] == "success"
    assert second_poll.body["messageId"] == delivery.message_id
    assert second_poll.body["result"]["id"] == delivery.message_id
    assert (replay.status, replay.body["id"]) == (200, record["id"])


async def test_xquik_unknown_write_action_is_404_not_found(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    reply = await call(session, "GET", f"{sandbox.xquik_url}/x/write-actions/999", headers=XQ)
    assert reply.status == 404
    assert reply.body == {"error": "not_found", "message": "Resource not found."}


async def test_xquik_legacy_mode_answers_message_id_and_success_only(
    session: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(
        SandboxConfig(legacy=True, faults=Faults(accept_rate=1.0))
    ) as sandbox:
        reply = await xq_send(session, sandbox, "123456789", key=None)
        replay_first = await xq_send(session, sandbox, "123456789", key="legacy-key")
        replay_again = await xq_send(session, sandbox, "123456789", key="legacy-key")
        ledger = list(sandbox.ledger)
    assert reply.status == 200
    assert reply.body == {"messageId": ledger[0].message_id, "success": True}
    assert replay_again.body == replay_first.body
    assert len(ledger) == 2


# -- Xquik: history, media, users ---------------------------------------------------------------


async def test_xquik_history_pages_newest_first_in_pages_of_20(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    user_id = sandbox.directory.register("carol")
    for n in range(45):
        assert (await xq_send(session, sandbox, user_id, key=f"k{n}", text=f"m{n}")).status == 200
    await xq_send(session, sandbox, user_id, key="other", account="dave", text="not alice's")
    url = f"{sandbox.xquik_url}/x/dm/{user_id}/history"
    pages: list[Any] = []
    cursor = ""
    for _ in range(5):
        params = {"account": "alice", **({"cursor": cursor} if cursor else {})}
        page = await call(session, "GET", url, headers=XQ, params=params)
        assert page.status == 200
        pages.append(page.body)
        cursor = page.body["next_cursor"]
        if not page.body["has_next_page"]:
            break
    assert [len(p["messages"]) for p in pages] == [20, 20, 5]
    # what a provider bills: every page served, by conversation (dave's was never read)
    assert sandbox.history_reads == {pair_key(derive_user_id("alice"), user_id): 3}
    assert [p["has_next_page"] for p in pages] == [True, True, False]
    assert pages[-1]["next_cursor"] == ""
    texts = [m["text"] for p in pages for m in p["messages"]]
    assert texts == [f"m{n}" for n in reversed(range(45))]
    newest = pages[0]["messages"][0]
    assert newest == {
        "id": sandbox.ledger[44].message_id,
        "text": "m44",
        "senderId": derive_user_id("alice"),
        "receiverId": user_id,
        "createdAt": newest["createdAt"],
    }
    assert newest["createdAt"].endswith("Z")


async def test_xquik_history_needs_an_account(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    url = f"{sandbox.xquik_url}/x/dm/123456789/history"
    reply = await call(session, "GET", url, headers=XQ)
    assert reply.status == 400
    assert reply.body["error"] == "account_required"
    assert reply.body["message"].startswith("Provide ?account=<x_handle>")


#: the first bytes of a PNG file: what the upload reads to tell a picture from another file
PNG = b"\x89PNG\r\n\x1a\n" + bytes(8)


def media_form(account: str, content: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("account", account)
    form.add_field("file", content, filename="pic.png", content_type="image/png")
    return form


async def test_xquik_media_upload_reuses_its_id_for_the_same_key_and_file(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    url = f"{sandbox.xquik_url}/x/media"
    headers = {**XQ, "Idempotency-Key": "media-1"}
    first = await call(session, "POST", url, headers=headers, data=media_form("alice", PNG + b"1"))
    again = await call(session, "POST", url, headers=headers, data=media_form("alice", PNG + b"1"))
    other = await call(session, "POST", url, headers=headers, data=media_form("alice", PNG + b"2"))
    assert first.status == 200
    assert_write_action(first.body)
    media_id = first.body["mediaId"]
    assert first.body["action"] == "upload_media"
    assert first.body["result"] == {"type": "media", "id": media_id, "state": "uploaded"}
    assert first.body["mediaUrl"].startswith("https://")
    assert (first.body["target"], first.body["targetId"]) == (None, None)
    assert (again.status, again.body["mediaId"], again.body["idempotent"]) == (200, media_id, True)
    assert (other.status, other.body["error"]) == (409, "idempotency_conflict")
    sent = await xq_send(session, sandbox, "123456789", extra={"media_ids": [media_id]})
    assert sent.status == 200
    assert sandbox.ledger[0].media_id == media_id
    history = await call(
        session,
        "GET",
        f"{sandbox.xquik_url}/x/dm/123456789/history",
        headers=XQ,
        params={"account": "alice"},
    )
    assert history.body["messages"][0]["mediaUrl"] == first.body["mediaUrl"]


async def test_xquik_media_upload_refuses_a_file_that_is_no_image_or_video(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    # the documented types only (AVIF, GIF, JPEG, PNG, WebP, MP4), told by the file's bytes:
    # its name and declared type say nothing
    url = f"{sandbox.xquik_url}/x/media"
    headers = {**XQ, "Idempotency-Key": "media-text"}
    reply = await call(session, "POST", url, headers=headers,
                       data=media_form("alice", b"XQUIK_API_KEY=xq_live_1\n"))
    assert (reply.status, reply.body["error"]) == (415, "unsupported_media_type")
    assert sandbox.uploads == {}


async def test_xquik_legacy_media_upload_answers_media_id_url_and_success(
    session: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(SandboxConfig(legacy=True)) as sandbox:
        reply = await call(
            session, "POST", f"{sandbox.xquik_url}/x/media", headers=XQ, data=media_form("a", PNG)
        )
    assert reply.status == 200
    assert set(reply.body) == {"mediaId", "mediaUrl", "success"}
    assert reply.body["success"] is True


async def test_xquik_user_lookup_by_name_and_by_id(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    by_name = await call(session, "GET", f"{sandbox.xquik_url}/x/users/Erin_B", headers=XQ)
    assert by_name.status == 200
    assert by_name.body["id"] == derive_user_id("erin_b")
    assert by_name.body["username"] == "Erin_B"
    assert isinstance(by_name.body["name"], str)
    assert isinstance(by_name.body["followers"], int)
    by_id = await call(
        session, "GET", f"{sandbox.xquik_url}/x/users/{by_name.body['id']}", headers=XQ
    )
    assert by_id.body == by_name.body
    given = await call(session, "GET", f"{sandbox.xquik_url}/x/users/42", headers=XQ)
    assert (given.status, given.body["id"], given.body["username"]) == (200, "42", "user_42")


async def test_xquik_missing_users_are_404_user_not_found(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    by_name = await call(session, "GET", f"{sandbox.xquik_url}/x/users/nf_ghost", headers=XQ)
    ghost_id = derive_user_id("nf_ghost")
    by_id = await call(session, "GET", f"{sandbox.xquik_url}/x/users/{ghost_id}", headers=XQ)
    expected = {"error": "user_not_found", "message": "X user not found. Check the username."}
    assert (by_name.status, by_name.body) == (404, expected)
    assert (by_id.status, by_id.body) == (404, expected)


async def test_xquik_batch_lookup_has_the_batch_users_shape(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    known = sandbox.directory.register("frank")
    ghost = sandbox.directory.register("nf_ghost")
    ids = f"{known},{ghost},{known},77"
    reply = await call(
        session, "GET", f"{sandbox.xquik_url}/x/users/batch", headers=XQ, params={"ids": ids}
    )
    assert reply.status == 200
    assert [user["id"] for user in reply.body.pop("users")] == [known, "77"]
    assert reply.body == {
        "has_next_page": False,
        "next_cursor": "",
        "requested_count": 3,
        "processed_count": 3,
        "returned_count": 2,
        "unavailable_ids": [ghost],
        "unprocessed_ids": [],
    }


# -- Xquik: directory, auth, credits, windows ---------------------------------------------------


@pytest.mark.parametrize(
    ("account", "recipient", "status", "body"),
    [
        (
            "alice",
            "closed_gina",
            422,
            {
                "error": "x_dm_not_allowed",
                "message": "Cannot send a DM to this user. They may not accept messages from this account.",
            },
        ),
        ("alice", "protected_hal", 422, {"error": "x_account_protected"}),
        ("vip_ivy", "protected_hal", 422, {"error": "x_account_protected"}),
        ("alice", "nf_ghost", 422, {"error": "x_target_not_found"}),
        ("suspended_sam", "bob", 422, {"error": "x_account_suspended"}),
        ("reauth_rita", "bob", 403, {"error": "account_needs_reauth"}),
        ("restricted_rob", "bob", 403, {"error": "account_restricted"}),
        (
            "nosuch_nick",
            "bob",
            404,
            {
                "error": "account_not_found",
                "message": "X account not found. Connect it first at /dashboard/account?tab=x-accounts.",
            },
        ),
    ],
)
async def test_xquik_directory_refusals(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    account: str,
    recipient: str,
    status: int,
    body: dict[str, str],
) -> None:
    user_id = sandbox.directory.register(recipient)
    reply = await xq_send(session, sandbox, user_id, account=account)
    assert reply.status == status
    if "message" in body or status == 403:
        assert reply.body == body  # the 403s are bare bodies, as documented
    else:
        assert reply.body["error"] == body["error"]
        assert isinstance(reply.body["message"], str)
    assert sandbox.ledger == []


async def test_xquik_closed_recipient_accepts_a_vip_sender(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    user_id = sandbox.directory.register("Closed_Gina")
    refused = await xq_send(session, sandbox, user_id, key="a", account="alice")
    accepted = await xq_send(session, sandbox, user_id, key="b", account="VIP_ivy")
    assert (refused.status, accepted.status) == (422, 200)
    assert [d.sender for d in sandbox.ledger] == ["VIP_ivy"]


async def test_xquik_daily_sender_hits_x_daily_limit_after_three_deliveries(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    statuses = [
        (await xq_send(session, sandbox, "123456789", key=f"k{n}", account="daily_dan")).status
        for n in range(3)
    ]
    limited = await xq_send(session, sandbox, "123456789", key="k3", account="daily_dan")
    assert statuses == [200, 200, 200]
    assert (limited.status, limited.body["error"]) == (429, "x_daily_limit")
    assert int(limited.headers["Retry-After"]) == 86_400
    assert len(sandbox.ledger) == 3


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "bad-key"}, {"Authorization": "Bearer "}])
async def test_xquik_missing_or_bad_api_key_is_401(
    session: aiohttp.ClientSession, sandbox: Sandbox, headers: dict[str, str]
) -> None:
    reply = await call(
        session,
        "POST",
        f"{sandbox.xquik_url}/x/dm/123456789",
        headers={**headers, "Idempotency-Key": "k"},
        json={"account": "alice", "text": "hi"},
    )
    assert reply.status == 401
    assert reply.body == {
        "error": "unauthenticated",
        "message": "Authentication required. Provide a valid API key or bearer token.",
    }
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="xquik"'
    assert reply.headers["Cache-Control"] == "no-store"


async def test_xquik_accepts_only_the_configured_keys_by_either_header(
    session: aiohttp.ClientSession,
) -> None:
    config = SandboxConfig(valid_api_keys=frozenset({"xq_good"}))
    async with running_sandbox(config) as sandbox:
        url = f"{sandbox.xquik_url}/x/users/bob"
        bearer = await call(session, "GET", url, headers={"Authorization": "Bearer xq_good"})
        header = await call(session, "GET", url, headers={"x-api-key": "xq_good"})
        other = await call(session, "GET", url, headers={"x-api-key": "xq_other"})
    assert (bearer.status, header.status, other.status) == (200, 200, 401)


async def test_xquik_runs_out_of_credits_with_402_insufficient_credits(
    session: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(SandboxConfig(credits=25)) as sandbox:
        statuses = [
            (await xq_send(session, sandbox, "123456789", key=f"k{n}")).status for n in range(3)
        ]
        refused = await xq_send(session, sandbox, "123456789", key="k2")
        credits = await call(session, "GET", f"{sandbox.xquik_url}/credits", headers=XQ)
        delivered = len(sandbox.ledger)
    assert statuses == [200, 200, 402]
    assert refused.body["error"] == "insufficient_credits"
    assert (refused.body["balance"], refused.body["required"]) == ("5", "10")
    assert set(refused.body["payment_options"]) == {"credits", "subscription"}
    assert (credits.body["balance"], credits.body["lifetime_used"]) == ("5", "20")
    assert delivered == 2


async def test_xquik_key_window_answers_429_with_retry_after_and_delivers_nothing(
    session: aiohttp.ClientSession,
) -> None:
    config = SandboxConfig(key_rates=(Rate(count=2, period_s=60.0),))
    async with running_sandbox(config) as sandbox:
        for n in range(2):
            assert (await xq_send(session, sandbox, "123456789", key=f"k{n}")).status == 200
        limited = await xq_send(session, sandbox, "123456789", key="k2")
        other_key = await call(
            session,
            "POST",
            f"{sandbox.xquik_url}/x/dm/123456789",
            headers={"x-api-key": "xq_other", "Idempotency-Key": "k2"},
            json={"account": "alice", "text": "hello"},
        )
        delivered = len(sandbox.ledger)
    assert limited.status == 429
    assert limited.body == {
        "error": "rate_limit_exceeded",
        "message": "Too many requests. Try again later.",
        "retryAfter": 60,
    }
    assert limited.headers["Retry-After"] == "60"
    assert other_key.status == 200
    assert delivered == 3


async def test_xquik_sender_window_answers_x_rate_limited_for_that_sender_only(
    session: aiohttp.ClientSession,
) -> None:
    config = SandboxConfig(sender_rates=(Rate(count=1, period_s=900.0),))
    async with running_sandbox(config) as sandbox:
        first = await xq_send(session, sandbox, "123456789", key="a", account="alice")
        limited = await xq_send(session, sandbox, "123456789", key="b", account="ALICE")
        other = await xq_send(session, sandbox, "123456789", key="c", account="bob")
        replay = await xq_send(session, sandbox, "123456789", key="a", account="alice")
        delivered = [d.sender for d in sandbox.ledger]
    assert (first.status, other.status, replay.status) == (200, 200, 200)
    assert (limited.status, limited.body["error"]) == (429, "x_rate_limited")
    assert limited.headers["Retry-After"] == "900"
    assert delivered == ["alice", "bob"]


async def test_read_window_limits_lookups_per_key_on_both_providers(
    session: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(SandboxConfig(read_rates=(Rate(count=1, period_s=1.0),))) as sandbox:
        xq_url = f"{sandbox.xquik_url}/x/users/bob"
        xq_first = await call(session, "GET", xq_url, headers=XQ)
        xq_limited = await call(session, "GET", xq_url, headers=XQ)
        gx_url = f"{sandbox.getxapi_url}/twitter/user/info"
        gx_first = await call(session, "GET", gx_url, headers=GX, params={"userName": "bob"})
        gx_limited = await call(session, "GET", gx_url, headers=GX, params={"userName": "bob"})
    assert (xq_first.status, xq_limited.status) == (200, 429)
    assert (xq_limited.body["error"], xq_limited.headers["Retry-After"]) == (
        "rate_limit_exceeded",
        "1",
    )
    assert (gx_first.status, gx_limited.status) == (200, 429)
    assert list(gx_limited.body) == ["error"]


async def test_read_throttle_refuses_every_read_on_both_providers(
    session: aiohttp.ClientSession,
) -> None:
    throttled = SandboxConfig(faults=Faults(read_throttle_rate=1.0))
    async with running_sandbox(throttled) as sandbox:
        xq = [await call(session, "GET", f"{sandbox.xquik_url}/x/users/bob", headers=XQ)
              for _ in range(3)]
        gx_url = f"{sandbox.getxapi_url}/twitter/user/info"
        gx = [await call(session, "GET", gx_url, headers=GX, params={"userName": "bob"})
              for _ in range(3)]
        sandbox.reconfigure(SandboxConfig())
        served = await call(session, "GET", f"{sandbox.xquik_url}/x/users/bob", headers=XQ)
    assert [(a.status, a.headers["Retry-After"]) for a in xq] == [(429, "1")] * 3
    assert [a.status for a in gx] == [429] * 3
    assert served.status == 200


async def test_getxapi_sender_window_throttles_that_sender_only(
    session: aiohttp.ClientSession,
) -> None:
    config = SandboxConfig(sender_rates=(Rate(count=1, period_s=900.0),))
    async with running_sandbox(config) as sandbox:
        statuses = [
            (
                await gx_send(
                    session, sandbox, {"auth_token": token, "recipient_id": "5", "text": "x"}
                )
            ).status
            for token in ("tok-alice", "alice", "tok-bob")
        ]
        delivered = [d.sender for d in sandbox.ledger]
    assert statuses == [200, 429, 200]
    assert delivered == ["alice", "bob"]


async def test_windows_free_up_as_the_injected_clock_moves(session: aiohttp.ClientSession) -> None:
    now = [1000.0]
    sandbox = Sandbox(
        SandboxConfig(key_rates=(Rate(count=1, period_s=10.0),)), clock=lambda: now[0]
    )
    await sandbox.start()
    try:
        first = await xq_send(session, sandbox, "123456789", key="a")
        now[0] += 4.5
        limited = await xq_send(session, sandbox, "123456789", key="b")
        now[0] += 5.5
        freed = await xq_send(session, sandbox, "123456789", key="b")
    finally:
        await sandbox.stop()
    assert (first.status, limited.status, freed.status) == (200, 429, 200)
    assert limited.headers["Retry-After"] == "6"


def test_sliding_windows_enforce_every_rate_and_report_the_wait() -> None:
    now = [0.0]
    windows = SlidingWindows(
        (Rate(count=2, period_s=1.0), Rate(count=3, period_s=60.0)), lambda: now[0]
    )
    assert [windows.admit("k") for _ in range(2)] == [None, None]
    assert windows.admit("k") == pytest.approx(1.0)
    assert windows.admit("other") is None
    now[0] = 1.0
    assert windows.admit("k") is None
    now[0] = 2.5
    assert windows.admit("k") == pytest.approx(57.5)


# -- faults -------------------------------------------------------------------------------------


async def test_dropped_send_disconnects_with_no_answer_but_is_delivered(
    session: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(SandboxConfig(faults=Faults(drop_rate=1.0))) as sandbox:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await xq_send(session, sandbox, "123456789")
        [delivery] = sandbox.ledger
        replay = await xq_send(session, sandbox, "123456789")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await gx_send(
                session, sandbox, {"auth_token": "tok-bob", "recipient_id": "5", "text": "hey"}
            )
        delivered = len(sandbox.ledger)
    assert (replay.status, replay.body["messageId"]) == (200, delivery.message_id)
    assert delivered == 2


async def test_late_getxapi_send_is_delivered_after_the_client_gave_up(
    session: aiohttp.ClientSession,
) -> None:
    faults = Faults(late_rate=1.0, late_ms=400)
    async with running_sandbox(SandboxConfig(faults=faults)) as sandbox:
        body = {"auth_token": "tok-bob", "recipient_id": "5", "text": "hey"}
        with pytest.raises(TimeoutError):
            await call(session, "POST", f"{sandbox.getxapi_url}/twitter/dm/send", headers=GX,
                       json=body, timeout=aiohttp.ClientTimeout(total=0.1))
        at_give_up = len(sandbox.ledger)
        await asyncio.sleep(0.6)
        later = [(d.sender, d.recipient_id) for d in sandbox.ledger]
    assert at_give_up == 0
    assert later == [("bob", "5")]


async def test_injected_429_and_5xx_deliver_nothing(session: aiohttp.ClientSession) -> None:
    async with running_sandbox(SandboxConfig(faults=Faults(rate_limit_rate=1.0))) as sandbox:
        limited = await xq_send(session, sandbox, "123456789")
        sandbox.reconfigure(SandboxConfig(faults=Faults(fail_rate=1.0)))
        failed = [(await xq_send(session, sandbox, "123456789")) for _ in range(8)]
        gx_failed = await gx_send(
            session, sandbox, {"auth_token": "tok-bob", "recipient_id": "5", "text": "hey"}
        )
        delivered = len(sandbox.ledger)
    assert (limited.status, limited.body["error"], limited.headers["Retry-After"]) == (
        429,
        "rate_limit_exceeded",
        "1",
    )
    assert {reply.status for reply in failed} == {500, 503}
    tracking = next(reply.body for reply in failed if reply.status == 503)
    assert tracking == {
        "error": "write_tracking_unavailable",
        "message": "Write tracking unavailable. Try again.",
        "charged": False,
        "chargedCredits": "0",
        "retryable": True,
        "safeToRetry": True,
        "success": False,
        "nextAction": {"type": "retry"},
    }
    assert gx_failed.status in (502, 503)
    assert delivered == 0


async def test_the_seed_makes_faults_repeat(session: aiohttp.ClientSession) -> None:
    config = SandboxConfig(faults=Faults(fail_rate=0.5, seed=7))
    runs: list[list[int]] = []
    for _ in range(2):
        async with running_sandbox(config) as sandbox:
            runs.append(
                [(await xq_send(session, sandbox, "1", key=f"k{n}")).status for n in range(20)]
            )
    assert runs[0] == runs[1]
    assert 200 in runs[0]
    assert set(runs[0]) - {200}


async def test_latency_delays_the_answer(session: aiohttp.ClientSession) -> None:
    async with running_sandbox(SandboxConfig(faults=Faults(latency_ms=150))) as sandbox:
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await call(session, "GET", f"{sandbox.xquik_url}/x/users/bob", headers=XQ)
        elapsed_s = loop.time() - started
    assert reply.status == 200
    assert elapsed_s >= 0.14


async def test_reconfigure_keeps_the_ledger_and_the_idempotency_keys(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    first = await xq_send(session, sandbox, "123456789")
    sandbox.reconfigure(SandboxConfig(legacy=True))
    replay = await xq_send(session, sandbox, "123456789")
    assert replay.body == {"messageId": first.body["messageId"], "success": True}
    assert len(sandbox.ledger) == 1


# -- GetXAPI ------------------------------------------------------------------------------------


async def test_getxapi_send_by_username_answers_the_documented_shape(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    reply = await gx_send(
        session,
        sandbox,
        {"auth_token": "tok-alice", "recipient_username": "target_user", "text": "Hello!"},
    )
    assert reply.status == 200
    data = reply.body.pop("data")
    assert reply.body == {"status": "success", "msg": "DM sent successfully"}
    assert data == {
        "id": sandbox.ledger[0].message_id,
        "createdAt": data["createdAt"],
        "senderId": derive_user_id("alice"),
        "recipientId": derive_user_id("target_user"),
        "text": "Hello!",
        "recipient_username": "target_user",
    }
    assert data["createdAt"].endswith("Z")
    assert sandbox.ledger[0].provider == "getxapi"
    assert sandbox.ledger[0].sender == "alice"
    assert sandbox.ledger[0].idempotency_key is None


async def test_getxapi_has_no_idempotency_a_resend_delivers_again(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    body = {"auth_token": "tok-alice", "recipient_id": "1234567890123456789", "text": "Hello!"}
    first = await gx_send(session, sandbox, body)
    second = await gx_send(session, sandbox, body)
    assert (first.status, second.status) == (200, 200)
    assert first.body["data"]["id"] != second.body["data"]["id"]
    assert [d.message_id for d in sandbox.ledger] == [
        first.body["data"]["id"],
        second.body["data"]["id"],
    ]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"auth_token": "t", "text": "hi"},
            400,
            "Missing required field: recipient_id or recipient_username",
        ),
        ({"recipient_id": "5", "text": "hi"}, 400, "Missing required field: auth_token"),
        (
            {"auth_token": "bad-token", "recipient_id": "5", "text": "hi"},
            401,
            "Invalid auth_token - could not extract userId",
        ),
        (
            {"auth_token": "tok-reauth_r", "recipient_id": "5", "text": "hi"},
            401,
            "Invalid auth_token - could not extract userId",
        ),
        (
            {"auth_token": "t", "recipient_username": "nf_ghost", "text": "hi"},
            404,
            "User not found",
        ),
        (
            {"auth_token": "t", "recipient_username": "closed_gina", "text": "hi"},
            403,
            "You cannot send messages to this user",
        ),
        ({"auth_token": "t", "recipient_username": "protected_hal", "text": "hi"}, 403, None),
        ({"auth_token": "tok-suspended_s", "recipient_id": "5", "text": "hi"}, 403, None),
        ({"auth_token": "tok-restricted_r", "recipient_id": "5", "text": "hi"}, 403, None),
        ({"auth_token": "t", "recipient_id": "5", "text": ""}, 400, "Missing required field: text"),
    ],
)
async def test_getxapi_send_errors_are_bare_error_strings(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    body: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    reply = await gx_send(session, sandbox, body)
    assert reply.status == status
    assert list(reply.body) == ["error"]
    if error is not None:
        assert reply.body["error"] == error
    assert sandbox.ledger == []


async def test_getxapi_vip_sender_reaches_closed_users_and_daily_senders_stop(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    vip = await gx_send(
        session, sandbox, {"auth_token": "tok-vip_v", "recipient_username": "closed_g", "text": "x"}
    )
    daily = [
        (
            await gx_send(
                session, sandbox, {"auth_token": "daily_d", "recipient_id": "5", "text": "x"}
            )
        ).status
        for _ in range(4)
    ]
    assert vip.status == 200
    assert daily == [200, 200, 200, 429]
    assert len(sandbox.ledger) == 4


async def test_getxapi_needs_the_api_key(session: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    reply = await call(
        session,
        "POST",
        f"{sandbox.getxapi_url}/twitter/dm/send",
        json={"auth_token": "t", "recipient_id": "5", "text": "hi"},
    )
    assert reply.status == 401
    assert list(reply.body) == ["error"]


async def test_getxapi_key_window_is_a_bare_429(session: aiohttp.ClientSession) -> None:
    async with running_sandbox(SandboxConfig(key_rates=(Rate(count=1, period_s=60.0),))) as sandbox:
        body = {"auth_token": "t", "recipient_id": "5", "text": "hi"}
        first, limited = (
            await gx_send(session, sandbox, body),
            await gx_send(session, sandbox, body),
        )
        delivered = len(sandbox.ledger)
    assert (first.status, limited.status) == (200, 429)
    assert list(limited.body) == ["error"]
    assert delivered == 1


async def send_thread(session: aiohttp.ClientSession, sandbox: Sandbox, count: int) -> str:
    """``count`` DMs from alice to peer, then one to user 77; returns peer's id."""
    peer = sandbox.directory.register("peer")
    for n in range(count):
        body = {"auth_token": "tok-alice", "recipient_id": peer, "text": f"m{n}"}
        assert (await gx_send(session, sandbox, body)).status == 200
    other = {"auth_token": "tok-alice", "recipient_id": "77", "text": "other"}
    assert (await gx_send(session, sandbox, other)).status == 200
    return peer


async def test_getxapi_dm_list_pages_every_conversation_newest_first(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    await send_thread(session, sandbox, 25)
    url = f"{sandbox.getxapi_url}/twitter/dm/list"
    page1 = await call(session, "POST", url, headers=GX, json={"auth_token": "tok-alice"})
    body2 = {"auth_token": "tok-alice", "cursor": page1.body["next_cursor"]}
    page2 = await call(session, "POST", url, headers=GX, json=body2)
    assert page1.status == 200
    assert page1.body["userId"] == derive_user_id("alice")
    assert (page1.body["message_count"], page1.body["has_more"]) == (20, True)
    assert (page2.body["message_count"], page2.body["has_more"]) == (6, False)
    assert page2.body["next_cursor"] is None
    first = page1.body["messages"][0]
    assert set(first) >= {"id", "createdAt", "senderId", "recipientId", "text", "media"}
    assert (first["text"], first["recipientId"], first["media"]) == ("other", "77", None)
    assert [c["last_message"]["text"] for c in page1.body["conversations"]] == ["other", "m24"]
    texts = [m["text"] for m in page1.body["messages"] + page2.body["messages"]]
    assert texts == ["other", *(f"m{n}" for n in reversed(range(25)))]


async def test_getxapi_conversation_pages_one_thread_newest_first(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    peer = await send_thread(session, sandbox, 25)
    conversation_id = "-".join(sorted((derive_user_id("alice"), peer), key=int))
    url = f"{sandbox.getxapi_url}/twitter/dm/conversation"
    body1 = {"auth_token": "tok-alice", "conversation_id": conversation_id}
    page1 = await call(session, "POST", url, headers=GX, json=body1)
    body2 = {**body1, "cursor": page1.body["next_cursor"]}
    page2 = await call(session, "POST", url, headers=GX, json=body2)
    assert set(page1.body) == {
        "userId",
        "conversation_id",
        "message_count",
        "has_more",
        "next_cursor",
        "messages",
        "events",
        "users",
    }
    assert page1.body["conversation_id"] == conversation_id
    assert (page1.body["message_count"], page1.body["has_more"]) == (20, True)
    assert (page2.body["message_count"], page2.body["has_more"]) == (5, False)
    assert page2.body["next_cursor"] is None
    texts = [m["text"] for m in page1.body["messages"] + page2.body["messages"]]
    assert texts == [f"m{n}" for n in reversed(range(25))]
    assert page1.body["users"][peer]["userName"] == "peer"
    assert page1.body["messages"][0]["conversationId"] == conversation_id
    assert sandbox.history_reads == {pair_key(derive_user_id("alice"), peer): 2}
    sandbox.reset()
    assert not sandbox.history_reads


@pytest.mark.parametrize(
    ("conversation_id", "status", "error"),
    [
        (None, 400, "Missing required field: conversation_id (get it from /dm/list)"),
        ("12-34", 403, "Not a participant in this conversation"),
        ("abc", 400, "Invalid conversation_id"),
    ],
)
async def test_getxapi_conversation_errors(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    conversation_id: str | None,
    status: int,
    error: str,
) -> None:
    body: dict[str, str] = {"auth_token": "tok-alice"}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    reply = await call(
        session, "POST", f"{sandbox.getxapi_url}/twitter/dm/conversation", headers=GX, json=body
    )
    assert (reply.status, reply.body) == (status, {"error": error})


async def test_getxapi_user_info_and_not_found(
    session: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    url = f"{sandbox.getxapi_url}/twitter/user/info"
    found = await call(session, "GET", url, headers=GX, params={"userName": "closed_gina"})
    missing = await call(session, "GET", url, headers=GX, params={"userName": "nf_ghost"})
    by_id = await call(
        session,
        "GET",
        f"{sandbox.getxapi_url}/twitter/user/info_by_id",
        headers=GX,
        params={"userId": derive_user_id("closed_gina")},
    )
    assert found.status == 200
    assert (found.body["status"], found.body["data"]["userName"]) == ("success", "closed_gina")
    assert found.body["data"]["id"] == derive_user_id("closed_gina")
    assert found.body["data"]["canDm"] is False
    assert {"id", "name", "userName", "canDm", "protected", "followers"} <= set(found.body["data"])
    assert (missing.status, missing.body) == (404, {"error": "User not found"})
    assert by_id.body == found.body


# -- controls, ids, CLI -------------------------------------------------------------------------


async def test_ledger_and_reset_routes(session: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    await xq_send(session, sandbox, "123456789")
    ledger = await call(session, "GET", f"{sandbox.root_url}/_sandbox/ledger")
    [entry] = ledger.body["deliveries"]
    assert entry == {
        "provider": "xquik",
        "sender": "alice",
        "recipient_id": "123456789",
        "text": "hello",
        "media_id": None,
        "message_id": sandbox.ledger[0].message_id,
        "idempotency_key": "key-1",
        "at_s": sandbox.ledger[0].at_s,
    }
    reset = await call(session, "POST", f"{sandbox.root_url}/_sandbox/reset")
    assert reset.status == 200
    assert sandbox.ledger == []
    assert (await xq_send(session, sandbox, "123456789")).body["idempotent"] is False


def test_derived_user_ids_are_stable_case_insensitive_and_18_to_19_digits() -> None:
    ids = [derive_user_id(name) for name in ("alice", "ALICE", "@alice", "bob", "x", "nf_a")]
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids)) == 4
    assert all(user_id.isdigit() and 18 <= len(user_id) <= 19 for user_id in ids)


def test_cli_flags_build_the_config() -> None:
    args = parse_args(
        [
            "--port",
            "0",
            "--latency",
            "50ms",
            "--jitter",
            "10",
            "--fail-rate",
            "0.01",
            "--drop-rate",
            "0.02",
            "--rate-limit-rate",
            "0.03",
            "--accept-rate",
            "0.04",
            "--read-throttle-rate",
            "0.05",
            "--legacy",
            "--key-rate",
            "120/60s",
            "--sender-rate",
            "15/15m",
            "--sender-rate",
            "500/1d",
            "--seed",
            "9",
            "--credits",
            "100",
        ]
    )
    assert args.port == 0
    assert build_config(args) == SandboxConfig(
        faults=Faults(
            latency_ms=50.0,
            jitter_ms=10.0,
            fail_rate=0.01,
            drop_rate=0.02,
            rate_limit_rate=0.03,
            accept_rate=0.04,
            read_throttle_rate=0.05,
            seed=9,
        ),
        legacy=True,
        key_rates=(Rate(count=120, period_s=60.0),),
        sender_rates=(Rate(count=15, period_s=900.0), Rate(count=500, period_s=86400.0)),
        credits=100,
    )


def test_cli_rejects_a_bad_rate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--fail-rate", "2"])
    assert exited.value.code == 2
    assert "not between 0 and 1" in capsys.readouterr().err


async def test_cli_serves_until_sigint(session: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkdm.sandbox",
        "--port",
        "0",
        "--key-rate",
        "120/60s",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert process.stdout is not None
    try:
        first_line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        root_url = first_line.decode().split()[-1]
        assert root_url.startswith("http://127.0.0.1:")
        reply = await call(session, "GET", f"{root_url}/api/v1/x/users/bob", headers=XQ)
        assert (reply.status, reply.body["username"]) == (200, "bob")
        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), timeout=20)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert b"xquik    " + root_url.encode() + b"/api/v1" in rest
    assert b"stopped; 0 DMs delivered" in rest
