"""The error model: every documented provider error to its Action, the transport split, the
Retry-After family, and secrets kept out of logs, outcomes and reprs."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import bulkdm.providers
from bulkdm.outcomes import Action, Outcome, Reconciliation
from bulkdm.providers import DmRequest, GetXapiProvider, SenderAuth, XquikProvider, open_provider
from bulkdm.providers.classify import (
    XQUIK_ACTIONS,
    as_lookup,
    classify_getxapi,
    classify_xquik,
    getxapi_error_text,
)
from bulkdm.providers.http import (
    BaseUrl,
    JsonObject,
    path_segment,
    redact,
    retry_after_s,
    transport_outcome,
)
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.secrets import MASK, Secret
from bulkdm.settings import ProviderName, ProviderSettings

A = Action

# -- Xquik: the documented codes (providers.md §1.3 table, §1.10) -------------------------------

WRITE_ERROR = {"charged": False, "chargedCredits": "0", "success": False}
TRACKING = {
    **WRITE_ERROR,
    "error": "write_tracking_unavailable",
    "message": "Write tracking unavailable. Try again.",
    "retryable": True,
    "safeToRetry": True,
    "nextAction": {"type": "retry"},
}
INVALID_INPUT = {
    **WRITE_ERROR,
    "error": "invalid_input",
    "message": "Invalid input. Check request fields.",
    "retryable": False,
    "safeToRetry": True,
    "nextAction": {"type": "fix_request"},
}
CONFLICT = {
    **WRITE_ERROR,
    "error": "idempotency_conflict",
    "message": "Idempotency-Key was already used with a different request.",
    "retryable": False,
    "safeToRetry": True,
    "nextAction": {"type": "retry", "requiresNewIdempotencyKey": True},
}


def err(code: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": f"about {code}", **extra}


# (status, body, expected action, expected new_key) for a DM send
XQUIK_SEND_CASES: list[tuple[int, JsonObject | None, Action, bool]] = [
    (400, INVALID_INPUT, A.FAIL_ROW, False),
    *(
        (400, err(code), A.FAIL_ROW, False)
        for code in (
            "invalid_json",
            "unknown_field",
            "unsupported_field",
            "missing_idempotency_key",
            "invalid_idempotency_key",
        )
    ),
    (401, err("unauthenticated"), A.STOP_RUN, False),
    *(
        (402, err(code), A.STOP_RUN, False)
        for code in (
            "insufficient_credits",
            "no_credits",
            "no_subscription",
            "subscription_inactive",
            "payment_failed",
        )
    ),
    (403, {"error": "account_needs_reauth"}, A.DROP_SENDER, False),
    (403, {"error": "account_restricted"}, A.DROP_SENDER, False),
    (404, err("account_not_found"), A.DROP_SENDER, False),
    (409, CONFLICT, A.STOP_RUN, True),
    (422, err("x_dm_not_allowed"), A.FAIL_ROW, False),
    (422, err("x_content_too_long"), A.FAIL_ROW, False),
    (422, err("x_account_protected"), A.FAIL_ROW, False),
    (422, err("x_target_not_found"), A.FAIL_ROW, False),
    (422, err("x_rejected"), A.FAIL_ROW, False),
    (422, err("x_rejected", safeToRetry=True, sendDispatched=False), A.RETRY, True),
    (422, err("x_account_suspended"), A.DROP_SENDER, False),
    (422, err("x_account_feature_required"), A.DROP_SENDER, False),
    (422, err("media_download_failed"), A.FAIL_ROW, False),
    (422, err("x_duplicate_action"), A.VERIFY, False),
    (500, err("x_duplicate_action", safeToRetry=True), A.VERIFY, False),
    (429, err("rate_limit_exceeded", retryAfter=60), A.RETRY, False),
    (429, err("x_rate_limited"), A.REST_SENDER, False),
    (429, err("x_daily_limit"), A.REST_SENDER, False),
    (500, err("x_daily_limit"), A.REST_SENDER, False),
    (500, err("x_write_failed"), A.VERIFY, False),
    (500, err("x_write_failed", safeToRetry=False, retryable=True), A.VERIFY, False),
    (500, err("x_write_failed", safeToRetry=True, sendDispatched=False), A.RETRY, True),
    (500, err("x_write_ambiguous"), A.VERIFY, False),
    (202, err("x_write_unconfirmed", writeActionId="77"), A.VERIFY, False),
    (503, TRACKING, A.RETRY, False),
    (503, {**TRACKING, "safeToRetry": False}, A.VERIFY, False),
    (503, err("x_transient_error", safeToRetry=True), A.RETRY, False),
    (503, err("x_transient_error", safeToRetry=False), A.VERIFY, False),
    (500, err("internal_error"), A.RETRY, False),
    (502, err("x_api_unavailable"), A.RETRY, False),
    # codes bulkdm does not know, and answers without one
    (500, err("brand_new_code"), A.VERIFY, False),
    (500, err("brand_new_code", safeToRetry=True, sendDispatched=False), A.RETRY, True),
    (503, None, A.VERIFY, False),
    (504, None, A.VERIFY, False),
    (418, err("brand_new_code"), A.RETRY, False),
    (422, err("brand_new_code"), A.FAIL_ROW, False),
    (401, None, A.STOP_RUN, False),
    (404, None, A.STOP_RUN, False),
]


@pytest.mark.parametrize(("status", "body", "action", "new_key"), XQUIK_SEND_CASES)
def test_xquik_send_errors(
    status: int, body: JsonObject | None, action: Action, new_key: bool
) -> None:
    outcome = classify_xquik(status=status, body=body, retry_after_s=None, write=True)

    assert (outcome.action, outcome.new_key, outcome.http_status) == (action, new_key, status)
    expected_code = body.get("error") if body else f"http_{status}"
    assert outcome.code == expected_code
    assert outcome.message


def test_every_xquik_code_in_the_table_is_covered_by_a_case() -> None:
    tested = {body.get("error") for _, body, _, _ in XQUIK_SEND_CASES if body}
    untested = set(XQUIK_ACTIONS) - tested
    # reads only (lookups, history) or rarer aliases; each is still in the table
    assert untested <= {
        "invalid_username",
        "invalid_user_id",
        "account_required",
        "body_too_large",
        "unsupported_media_type",
        "user_not_found",
        "dm_not_permitted",
        "idempotency_key_conflict",
        "login_cooldown",
    }


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (404, err("user_not_found"), A.FAIL_ROW),
        (400, err("invalid_username"), A.FAIL_ROW),
        (500, err("x_write_ambiguous"), A.RETRY),
        (503, None, A.RETRY),
        (500, err("brand_new_code"), A.RETRY),
        (403, err("dm_not_permitted"), A.FAIL_ROW),
    ],
)
def test_xquik_reads_never_verify(status: int, body: JsonObject | None, action: Action) -> None:
    outcome = classify_xquik(status=status, body=body, retry_after_s=None, write=False)

    assert outcome.action is action


@pytest.mark.parametrize(
    ("code", "given_s", "write", "expected_s"),
    [
        ("rate_limit_exceeded", 7.0, True, 7.0),
        ("rate_limit_exceeded", None, True, 60.0),
        ("rate_limit_exceeded", None, False, 1.0),
        ("x_rate_limited", 30.0, True, 30.0),
        ("x_rate_limited", None, True, 60.0),
        ("x_daily_limit", None, True, 86_400.0),
        ("x_daily_limit", 100_000.0, True, 100_000.0),
        ("internal_error", None, True, None),
    ],
)
def test_xquik_waits(
    code: str, given_s: float | None, write: bool, expected_s: float | None
) -> None:
    outcome = classify_xquik(status=429, body=err(code), retry_after_s=given_s, write=write)

    assert outcome.retry_after_s == expected_s


def test_xquik_conflict_message_names_the_bug() -> None:
    outcome = classify_xquik(status=409, body=CONFLICT, retry_after_s=None, write=True)

    assert outcome.message is not None and "bulkdm bug" in outcome.message


@pytest.mark.parametrize(
    ("record", "action", "code", "new_key"),
    [
        ({"status": "failed", "error": "x_dm_not_allowed"}, A.FAIL_ROW, "x_dm_not_allowed", False),
        ({"status": "expired", "sendDispatched": True}, A.VERIFY, "write_expired", False),
        (
            {"status": "failed", "safeToRetry": True, "sendDispatched": False},
            A.RETRY,
            "write_failed",
            True,
        ),
        (
            {"status": "failed", "retryable": False, "safeToRetry": False, "sendDispatched": False},
            A.FAIL_ROW,
            "write_failed",
            False,
        ),
    ],
)
def test_xquik_terminal_records_that_did_not_succeed(
    record: dict[str, object], action: Action, code: str, new_key: bool
) -> None:
    body = {"object": "x_write_action", "id": "42", "writeActionId": "42", "terminal": True}
    outcome = classify_xquik(status=200, body={**body, **record}, retry_after_s=None, write=True)

    assert (outcome.action, outcome.code, outcome.new_key) == (action, code, new_key)
    assert outcome.write_action_id == "42"


# -- GetXAPI: status first, then careful text ----------------------------------------------------


def gx(text: str) -> dict[str, object]:
    return {"error": text}


GETXAPI_SEND_CASES: list[tuple[int, JsonObject | None, Action, str]] = [
    (400, gx("Missing required field: recipient_id or recipient_username"), A.FAIL_ROW, "http_400"),
    (400, gx("Missing required field: auth_token"), A.DROP_SENDER, "account_restricted"),
    (
        401,
        gx("Invalid auth_token - could not extract userId"),
        A.DROP_SENDER,
        "account_needs_reauth",
    ),
    (401, gx("Invalid or missing API key"), A.STOP_RUN, "unauthenticated"),
    (401, None, A.STOP_RUN, "unauthenticated"),
    (402, gx("Insufficient credits, top up"), A.STOP_RUN, "insufficient_credits"),
    (402, None, A.STOP_RUN, "http_402"),
    (403, gx("You cannot send messages to this user"), A.FAIL_ROW, "x_dm_not_allowed"),
    (403, {"status": "error", "msg": "User has DMs closed"}, A.FAIL_ROW, "x_dm_not_allowed"),
    (403, gx("This account is protected"), A.FAIL_ROW, "x_account_protected"),
    (
        403,
        gx("Account suspended - this account cannot send messages"),
        A.DROP_SENDER,
        "x_account_suspended",
    ),
    (
        403,
        gx("Account temporarily locked - verify it on x.com"),
        A.DROP_SENDER,
        "account_restricted",
    ),
    (403, gx("Forbidden"), A.FAIL_ROW, "http_403"),
    (404, gx("User not found"), A.FAIL_ROW, "user_not_found"),
    (404, None, A.STOP_RUN, "http_404"),
    (408, None, A.RETRY, "http_408"),
    (429, gx("Too many requests. Slow down."), A.RETRY, "http_429"),
    (429, gx("Rate limited by Twitter for this account"), A.REST_SENDER, "x_rate_limited"),
    (429, gx("Daily DM limit reached for this account"), A.REST_SENDER, "x_daily_limit"),
    (500, gx("Internal server error"), A.VERIFY, "http_500"),
    (502, gx("X rejected the mutation"), A.VERIFY, "http_502"),
    (502, None, A.VERIFY, "http_502"),
    (503, gx("Service temporarily unavailable"), A.VERIFY, "http_503"),
    (504, None, A.VERIFY, "http_504"),
    (200, gx("something odd"), A.VERIFY, "http_200"),
]


@pytest.mark.parametrize(("status", "body", "action", "code"), GETXAPI_SEND_CASES)
def test_getxapi_send_errors(
    status: int, body: JsonObject | None, action: Action, code: str
) -> None:
    outcome = classify_getxapi(status=status, body=body, retry_after_s=None, write=True)

    assert (outcome.action, outcome.code, outcome.http_status) == (action, code, status)
    assert outcome.message is not None and outcome.message.startswith(f"HTTP {status}")
    text = getxapi_error_text(body)
    if text is not None:
        assert text in outcome.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_getxapi_reads_never_verify(status: int) -> None:
    outcome = classify_getxapi(status=status, body=None, retry_after_s=None, write=False)

    assert outcome.action is A.RETRY


@pytest.mark.parametrize(
    ("body", "given_s", "expected_s"),
    [
        (gx("Too many requests"), None, 10.0),
        (gx("Too many requests"), 3.0, 3.0),
        (gx("Rate limited by Twitter for this account"), None, 60.0),
        (gx("Daily limit reached"), None, 86_400.0),
    ],
)
def test_getxapi_waits(body: JsonObject, given_s: float | None, expected_s: float) -> None:
    outcome = classify_getxapi(status=429, body=body, retry_after_s=given_s, write=True)

    assert outcome.retry_after_s == expected_s


# -- transport errors: never left vs may have been delivered --------------------------------------

ConnTimeout = aiohttp.ConnectionTimeoutError
SockTimeout = aiohttp.SocketTimeoutError


@pytest.mark.parametrize(
    ("exc", "written", "write", "action", "code"),
    [
        (ConnTimeout("connect"), True, True, A.RETRY, "connect_timeout"),
        (TimeoutError(), False, True, A.RETRY, "timeout"),
        (TimeoutError(), True, True, A.VERIFY, "timeout"),
        (TimeoutError(), True, False, A.RETRY, "timeout"),
        (SockTimeout("read"), True, True, A.VERIFY, "timeout"),
        (aiohttp.ServerDisconnectedError(), True, True, A.VERIFY, "connection_lost"),
        (aiohttp.ServerDisconnectedError(), False, True, A.RETRY, "connection_lost"),
        (aiohttp.ClientOSError(104, "reset"), True, True, A.VERIFY, "connection_lost"),
        (aiohttp.ClientConnectionResetError(), True, True, A.VERIFY, "connection_lost"),
        (aiohttp.ClientPayloadError("cut"), True, True, A.VERIFY, "truncated_answer"),
        (aiohttp.ClientPayloadError("cut"), True, False, A.RETRY, "truncated_answer"),
    ],
)
def test_transport_outcomes(
    exc: BaseException, written: bool, write: bool, action: Action, code: str
) -> None:
    outcome = transport_outcome(exc, written=written, write=write)

    assert (outcome.action, outcome.code, outcome.http_status) == (action, code, None)


async def test_timeout_before_the_connection_opens_is_retry_even_for_a_send() -> None:
    # a listener whose accept queue is full drops new SYNs: the connect hangs until the timeout
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(8)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        settings = ProviderSettings(
            base_url=f"http://127.0.0.1:{port}/api/v1", request_timeout_s=0.3
        )
        provider = await open_provider(settings, Secret(KEY))
        try:
            outcome = await provider.send(dm("1", "k"))
        finally:
            await provider.aclose()
            for filler in fillers:
                filler.close()

    assert outcome.action is A.RETRY
    assert outcome.code in ("timeout", "connect_timeout")


# -- Retry-After ---------------------------------------------------------------------------------

NOW_S = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "body", "expected_s"),
    [
        ({}, None, None),
        ({"retry-after": "120"}, None, 120.0),
        (
            {"retry-after": format_datetime(datetime.fromtimestamp(NOW_S + 30, UTC), usegmt=True)},
            None,
            30.0,
        ),
        ({"retry-after": "soon"}, None, None),
        ({"retry-after": "-5"}, None, None),
        ({"retry-after-ms": "1500"}, None, 1.5),
        ({}, {"retryAfter": 60}, 60.0),
        ({}, {"retryAfterMs": 2500}, 2.5),
        ({}, {"retryAfter": "60"}, None),
        ({"retry-after": "1"}, {"retryAfter": 60}, 60.0),
    ],
)
def test_retry_after(
    headers: dict[str, str], body: JsonObject | None, expected_s: float | None
) -> None:
    assert retry_after_s(headers, body, now_s=NOW_S) == expected_s


# -- the wire: request URLs and timestamps ------------------------------------------------------


@pytest.mark.parametrize(
    "segment", ["44196397", "a/b", "../x", "q?cursor=1#f", "a b%2F", "ünï", "", "٣٤"]
)
@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8787/api/v1", "http://127.0.0.1:8787/api/v1/", "https://h"]
)
def test_a_url_from_the_parsed_base_is_the_one_the_string_gave(base: str, segment: str) -> None:
    # the string form the clients sent before: yarl parses it, keeping each segment one segment
    expected = URL(f"{base.rstrip('/')}/x/dm/{quote(segment, safe='')}/history")
    built = BaseUrl(base).at(f"/x/dm/{path_segment(segment)}/history")
    assert isinstance(built, URL)
    if segment == "../x":  # the parse resolves the dots; the built URL keeps them in the id
        assert built.raw_path.endswith("/x/dm/..%2Fx/history")
        return
    # the same path, decoded, in as many segments (the parse may decode a "=" that was quoted)
    assert (built.origin(), built.path, built.query_string) == (
        expected.origin(), expected.path, expected.query_string)
    assert len(built.raw_parts) == len(expected.raw_parts)


def test_a_base_that_is_no_url_fails_at_the_request_as_before() -> None:
    assert BaseUrl("http://127.0.0.1:99999/api").at("/x/media") == (
        "http://127.0.0.1:99999/api/x/media"
    )


# -- secrets -------------------------------------------------------------------------------------

KEY = "xq_super_secret_key_4242"
TOKEN = "tok-alice-secret-cookie-9999"


def test_redact_masks_every_secret() -> None:
    assert redact(f"bad token {TOKEN} with {KEY}", TOKEN, KEY) == f"bad token {MASK} with {MASK}"


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A misbehaving server: undecodable successes, and errors that echo the credentials."""

    async def send_html(request: web.Request) -> web.Response:
        return web.Response(text="<html>fine</html>", content_type="text/html")

    async def echo_token(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"error": f"Invalid auth_token {body['auth_token']}"}, status=401)

    async def echo_key(request: web.Request) -> web.Response:
        return web.json_response({"error": request.headers["Authorization"]}, status=500)

    async def accept(request: web.Request) -> web.Response:
        record = {"object": "x_write_action", "id": "9", "status": "accepted", "terminal": False,
                  "statusUrl": "/api/v1/x/write-actions/9", "pollAfterMs": 10}  # fmt: skip
        return web.json_response(record, status=202)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    app = web.Application()
    app.router.add_post("/api/v1/x/dm/{id}", send_html)
    app.router.add_post("/accepted/api/v1/x/dm/{id}", accept)
    app.router.add_get("/api/v1/x/write-actions/{id}", broken)
    app.router.add_post("/twitter/dm/send", echo_token)
    app.router.add_post("/twitter/dm/list", echo_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_misbehaving_answers_are_values_and_echoed_secrets_are_masked(
    echo_url: str,
) -> None:
    request = dm("123", "k")
    xquik = await open_provider(ProviderSettings(base_url=echo_url + "/api/v1"), Secret(KEY))
    getxapi = await open_provider(
        ProviderSettings(name=ProviderName.GETXAPI, base_url=echo_url), Secret(KEY)
    )
    try:
        unreadable = await xquik.send(request)
        echoed = await getxapi.send(request)
        history = await getxapi.reconcile(request, "2000-01-01T00:00:00Z")
    finally:
        await xquik.aclose()
        await getxapi.aclose()

    assert (unreadable.action, unreadable.code) == (A.VERIFY, "unreadable_answer")
    assert (echoed.action, echoed.code) == (A.DROP_SENDER, "account_needs_reauth")
    assert history.outcome is not None and history.outcome.action is A.RETRY
    for text in (repr(echoed), repr(history)):
        assert TOKEN not in text and KEY not in text
    assert echoed.message == f"HTTP 401: Invalid auth_token {MASK}"


async def test_polls_that_keep_failing_end_in_verify(echo_url: str) -> None:
    settings = ProviderSettings(base_url=echo_url + "/accepted/api/v1")
    provider = await open_provider(settings, Secret(KEY))
    try:
        outcome = await provider.send(dm("123", "k"))
    finally:
        await provider.aclose()

    assert (outcome.action, outcome.code, outcome.write_action_id) == (A.VERIFY, "poll_failed", "9")


def dm(recipient_id: str, key: str, text: str = "hi", sender: str = "alice") -> DmRequest:
    return DmRequest(
        recipient_id=recipient_id,
        sender=SenderAuth(account=sender, auth_token=Secret(TOKEN)),
        text=text,
        idempotency_key=key,
    )


async def exercise(
    provider: XquikProvider | GetXapiProvider, recipient_id: str, picture: Path
) -> list[Outcome | Reconciliation]:
    sender = SenderAuth(account="alice", auth_token=Secret(TOKEN))
    return [
        await provider.send(dm(recipient_id, "k1")),
        await provider.send(dm(recipient_id, "k2", sender="suspended_sam")),
        await provider.resolve("bob", sender),
        await provider.resolve("nf_ghost", sender),
        await provider.reconcile(dm(recipient_id, "k1"), "2000-01-01T00:00:00Z"),
        await provider.upload_media(picture, sender, "m1"),
    ]


async def test_no_secret_reaches_a_log_an_outcome_or_a_repr(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "aiohttp.client", "aiohttp.internal", "bulkdm", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    picture = tmp_path / "p.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    results: list[object] = []
    async with running_sandbox(SandboxConfig()) as sandbox:
        bob = sandbox.directory.register("bob")
        for name in (ProviderName.XQUIK, ProviderName.GETXAPI):
            url = sandbox.xquik_url if name is ProviderName.XQUIK else sandbox.getxapi_url
            for faults in (Faults(), Faults(drop_rate=1.0), Faults(latency_ms=400)):
                sandbox.reconfigure(SandboxConfig(faults=faults))
                settings = ProviderSettings(name=name, base_url=url, request_timeout_s=0.2)
                provider = await open_provider(settings, Secret(KEY), concurrency=2)
                assert isinstance(provider, XquikProvider | GetXapiProvider)
                try:
                    results += await exercise(provider, bob, picture)
                    results.append(provider)
                finally:
                    await provider.aclose()
            bad = await open_provider(
                ProviderSettings(name=name, base_url=url), Secret("bad" + KEY)
            )
            try:
                results.append(await bad.send(dm(bob, "k9")))
            finally:
                await bad.aclose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = await open_provider(
        ProviderSettings(base_url=f"http://127.0.0.1:{port}"), Secret(KEY)
    )
    try:
        results.append(await refused.send(dm(bob, "k1")))
    finally:
        await refused.aclose()

    assert any(isinstance(r, Outcome) and r.action is A.VERIFY for r in results)
    assert "bulkdm.providers" in caplog.text
    for text in [caplog.text, *map(repr, results), *map(str, results)]:
        assert KEY not in text
        assert TOKEN not in text


# -- the package's public face -------------------------------------------------------------------


def test_public_names_are_complete_and_sorted() -> None:
    names = bulkdm.providers.__all__
    assert names == sorted(names)
    assert all(hasattr(bulkdm.providers, name) for name in names)
    assert {"open_provider", "XquikProvider", "GetXapiProvider", "Provider"} <= set(names)


@pytest.mark.parametrize(("status", "error", "action", "code"), [
    (403, "User has been suspended.", Action.FAIL_ROW, "user_suspended"),
    (404, "User not found or suspended", Action.FAIL_ROW, "user_suspended"),
    (403, "This account is temporarily locked", Action.FAIL_ROW, "user_unavailable"),
    (401, "Invalid auth_token", Action.STOP_RUN, "unauthenticated"),  # the API key: all a lookup has
    (429, "Rate limit exceeded", Action.RETRY, "http_429"),
    (429, "Daily limit reached for this account", Action.RETRY, "x_daily_limit"),
])
def test_a_lookup_answer_about_an_account_is_about_the_user_looked_up(
    status: int, error: str, action: Action, code: str,
) -> None:
    outcome = as_lookup(classify_getxapi(status=status, body={"error": error},
                                         retry_after_s=None, write=False))
    assert (outcome.action, outcome.code) == (action, code)
