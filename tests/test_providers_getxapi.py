"""The GetXAPI client against the sandbox over real sockets: sends, errors, lookups, reconcile."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulkdm.outcomes import Action
from bulkdm.providers import DmRequest, GetXapiProvider, SenderAuth, open_provider
from bulkdm.providers.getxapi import conversation_id
from bulkdm.providers.http import JsonObject, search_messages
from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, Sandbox, SandboxConfig, derive_user_id, running_sandbox
from bulkdm.secrets import Secret
from bulkdm.settings import ProviderName, ProviderSettings

API_KEY = "get-x-api-test-0123456789"
SINCE = "2000-01-01T00:00:00Z"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig()) as running:
        yield running


async def getxapi(
    base_url: str, *, key: str = API_KEY, request_timeout_s: float = 10.0
) -> GetXapiProvider:
    settings = ProviderSettings(
        name=ProviderName.GETXAPI,
        base_url=base_url,
        api_key_env="GETXAPI_API_KEY",
        request_timeout_s=request_timeout_s,
    )
    provider = await open_provider(settings, Secret(key), concurrency=4)
    assert isinstance(provider, GetXapiProvider)
    return provider


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[GetXapiProvider]:
    provider = await getxapi(sandbox.getxapi_url)
    yield provider
    await provider.aclose()


def auth(account: str) -> SenderAuth:
    return SenderAuth(account=account, auth_token=Secret(f"tok-{account}"))


def dm(
    sandbox: Sandbox,
    recipient: str = "bob",
    *,
    sender: str = "alice",
    text: str = "hello there",
    media_id: str | None = None,
) -> DmRequest:
    return DmRequest(
        recipient_id=sandbox.directory.register(recipient),
        sender=auth(sender),
        text=text,
        idempotency_key="unused-by-getxapi",
        media_id=media_id,
    )


# -- sends ---------------------------------------------------------------------------------------


async def test_send_is_done_with_id_and_timestamp(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    outcome = await client.send(dm(sandbox))

    [delivery] = sandbox.ledger
    assert (outcome.action, outcome.value, outcome.http_status) == (
        Action.DONE,
        delivery.message_id,
        200,
    )
    assert outcome.sent_at is not None and outcome.sent_at.endswith("Z")
    assert (delivery.sender, delivery.recipient_id) == ("alice", derive_user_id("bob"))


@pytest.mark.parametrize(
    ("recipient", "sender", "action", "code", "status"),
    [
        ("closed_carol", "alice", Action.FAIL_ROW, "x_dm_not_allowed", 403),
        ("protected_pat", "alice", Action.FAIL_ROW, "x_account_protected", 403),
        ("nf_nobody", "alice", Action.FAIL_ROW, "user_not_found", 404),
        ("bob", "suspended_sam", Action.DROP_SENDER, "x_account_suspended", 403),
        ("bob", "reauth_rae", Action.DROP_SENDER, "account_needs_reauth", 401),
        ("bob", "restricted_rob", Action.DROP_SENDER, "account_restricted", 403),
        ("bob", "nosuch_ned", Action.DROP_SENDER, "account_needs_reauth", 401),
        ("bob", "badtoken", Action.DROP_SENDER, "account_needs_reauth", 401),
    ],
)
async def test_refusals(
    sandbox: Sandbox,
    client: GetXapiProvider,
    recipient: str,
    sender: str,
    action: Action,
    code: str,
    status: int,
) -> None:
    outcome = await client.send(dm(sandbox, recipient, sender=sender))

    assert (outcome.action, outcome.code, outcome.http_status) == (action, code, status)
    assert outcome.message is not None and outcome.message.startswith(f"HTTP {status}: ")
    assert sandbox.ledger == []


async def test_vip_sender_may_message_a_closed_recipient(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    outcome = await client.send(dm(sandbox, "closed_carol", sender="vip_vera"))

    assert outcome.action is Action.DONE


async def test_text_too_long_fails_the_row(sandbox: Sandbox, client: GetXapiProvider) -> None:
    outcome = await client.send(dm(sandbox, text="x" * 10_001))

    assert (outcome.action, outcome.code) == (Action.FAIL_ROW, "http_400")


async def test_daily_limit_rests_the_sender_for_a_day(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    outcomes = [await client.send(dm(sandbox, f"user{n}", sender="daily_dan")) for n in range(4)]

    assert [o.action for o in outcomes[:3]] == [Action.DONE] * 3
    assert (outcomes[3].action, outcomes[3].code, outcomes[3].retry_after_s) == (
        Action.REST_SENDER,
        "x_daily_limit",
        86_400,
    )


async def test_x_throttle_rests_the_sender(sandbox: Sandbox, client: GetXapiProvider) -> None:
    sandbox.reconfigure(SandboxConfig(sender_rates=(Rate(count=1, period_s=60),)))
    first = await client.send(dm(sandbox, "bob"))
    second = await client.send(dm(sandbox, "bea"))

    assert first.action is Action.DONE
    assert (second.action, second.code, second.retry_after_s) == (
        Action.REST_SENDER,
        "x_rate_limited",
        60.0,
    )


@pytest.mark.parametrize(
    "config",
    [
        SandboxConfig(key_rates=(Rate(count=1, period_s=60),)),
        SandboxConfig(faults=Faults(rate_limit_rate=1.0)),
    ],
)
async def test_service_throttle_is_retry(
    sandbox: Sandbox, client: GetXapiProvider, config: SandboxConfig
) -> None:
    sandbox.reconfigure(config)
    first = await client.send(dm(sandbox, "bea"))
    outcome = await client.send(dm(sandbox, "bob"))

    assert first.action is (Action.RETRY if config.faults.rate_limit_rate else Action.DONE)

    assert (outcome.action, outcome.code, outcome.http_status) == (Action.RETRY, "http_429", 429)
    assert outcome.retry_after_s == 10.0


async def test_server_failures_502_and_503_verify(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(fail_rate=1.0, seed=3)))
    outcomes = [await client.send(dm(sandbox, f"u{n}")) for n in range(8)]

    # a 502 (even GetXAPI's own) or a 503 might have gone out: check first, never resend
    assert {(o.action, o.code) for o in outcomes} == {
        (Action.VERIFY, "http_502"),
        (Action.VERIFY, "http_503"),
    }
    assert sandbox.ledger == []


async def test_bad_api_key_stops_the_run(sandbox: Sandbox) -> None:
    provider = await getxapi(sandbox.getxapi_url, key="bad-key")
    try:
        sent = await provider.send(dm(sandbox))
        looked_up = await provider.resolve("bob", auth("alice"))
    finally:
        await provider.aclose()

    assert (sent.action, sent.code, sent.http_status) == (Action.STOP_RUN, "unauthenticated", 401)
    assert (looked_up.action, looked_up.code) == (Action.STOP_RUN, "unauthenticated")


async def test_connection_refused_is_retry() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = await getxapi(f"http://127.0.0.1:{port}")
    request = DmRequest(recipient_id="1", sender=auth("alice"), text="x", idempotency_key="k")
    try:
        outcome = await provider.send(request)
        result = await provider.reconcile(request, SINCE)
    finally:
        await provider.aclose()

    assert (outcome.action, outcome.code) == (Action.RETRY, "connect_failed")
    assert result.found is None and result.outcome is not None
    assert result.outcome.action is Action.RETRY


async def test_sender_without_token_is_dropped(sandbox: Sandbox, client: GetXapiProvider) -> None:
    request = DmRequest(
        recipient_id="1", sender=SenderAuth(account="alice"), text="x", idempotency_key="k"
    )

    outcome = await client.send(request)

    assert (outcome.action, outcome.code) == (Action.DROP_SENDER, "no_auth_token")


async def test_media_is_not_supported(
    sandbox: Sandbox, client: GetXapiProvider, tmp_path: Path
) -> None:
    uploaded = await client.upload_media(tmp_path / "pic.png", auth("alice"), "k")
    sent = await client.send(dm(sandbox, media_id="123"))

    assert (uploaded.action, uploaded.code) == (Action.FAIL_ROW, "media_not_supported")
    assert (sent.action, sent.code) == (Action.FAIL_ROW, "media_not_supported")
    assert sandbox.ledger == []


# -- unknown outcomes and reconcile --------------------------------------------------------------


async def test_dropped_send_is_verify_and_reconcile_finds_it(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(drop_rate=1.0, seed=1)))
    request = dm(sandbox)
    dropped = await client.send(request)
    sandbox.reconfigure(SandboxConfig())

    result = await client.reconcile(request, SINCE)
    never = await client.reconcile(dm(sandbox, text="never sent"), SINCE)

    assert (dropped.action, dropped.code, dropped.http_status) == (
        Action.VERIFY,
        "connection_lost",
        None,
    )
    [delivery] = sandbox.ledger
    assert (result.found, result.message_id) == (True, delivery.message_id)
    assert (never.found, never.outcome) == (False, None)


async def test_timeout_after_send_is_verify_and_reconcile_finds_it(sandbox: Sandbox) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(latency_ms=600)))
    provider = await getxapi(sandbox.getxapi_url, request_timeout_s=0.2)
    request = dm(sandbox)
    try:
        late = await provider.send(request)
        sandbox.reconfigure(SandboxConfig())
        result = await provider.reconcile(request, SINCE)
    finally:
        await provider.aclose()

    assert (late.action, late.code) == (Action.VERIFY, "timeout")
    assert (result.found, result.message_id) == (True, sandbox.ledger[0].message_id)


async def test_reconcile_needs_this_sender_and_recipient(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    await client.send(dm(sandbox, "bob", sender="alice"))

    other_sender = await client.reconcile(dm(sandbox, "bob", sender="anna"), SINCE)
    other_recipient = await client.reconcile(dm(sandbox, "bea", sender="alice"), SINCE)
    too_early = await client.reconcile(dm(sandbox, "bob"), "2999-01-01T00:00:00Z")

    assert other_sender.found is other_recipient.found is too_early.found is False


async def test_reconcile_pages_back(sandbox: Sandbox, client: GetXapiProvider) -> None:
    first = dm(sandbox, text="message 0")
    sent = await client.send(first)
    for n in range(1, 26):
        await client.send(dm(sandbox, text=f"message {n}"))

    result = await client.reconcile(first, SINCE)

    assert (result.found, result.message_id) == (True, sent.value)


async def test_reconcile_by_a_dropped_sender_says_why(
    sandbox: Sandbox, client: GetXapiProvider
) -> None:
    result = await client.reconcile(dm(sandbox, sender="suspended_sam"), SINCE)

    assert result.found is None and result.outcome is not None
    assert (result.outcome.action, result.outcome.code) == (
        Action.DROP_SENDER,
        "x_account_suspended",
    )


def test_conversation_id_puts_the_lower_id_first() -> None:
    assert conversation_id("99", "100") == "99-100"
    assert conversation_id("3012852462", "1345154135381794816") == (
        "3012852462-1345154135381794816"
    )


# -- lookups -------------------------------------------------------------------------------------


async def test_resolve_gives_the_numeric_id(client: GetXapiProvider) -> None:
    outcome = await client.resolve("@bob", auth("alice"))

    assert (outcome.action, outcome.value) == (Action.DONE, derive_user_id("bob"))


async def test_resolve_unknown_user_fails_the_row(client: GetXapiProvider) -> None:
    outcome = await client.resolve("nf_ghost", auth("alice"))

    assert (outcome.action, outcome.code, outcome.http_status) == (
        Action.FAIL_ROW,
        "user_not_found",
        404,
    )


async def test_resolve_of_a_suspended_user_fails_the_row_not_the_sender(
    client: GetXapiProvider,
) -> None:
    # "User has been suspended." is about the user looked up: a lookup carries no sender
    outcome = await client.resolve("banned_bo", auth("alice"))

    assert (outcome.action, outcome.code, outcome.http_status) == (
        Action.FAIL_ROW, "user_suspended", 403)


async def test_repr_shows_no_key(client: GetXapiProvider) -> None:
    assert API_KEY not in repr(client)
    assert "GetXapiProvider" in repr(client)


def test_a_history_message_without_created_at_or_before_since_is_never_ours() -> None:
    since = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    mine = {"senderId": "1", "recipientId": "2", "text": "Hi", "id": "m"}
    undated = [mine]
    earlier = [{**mine, "createdAt": "2026-11-30T11:59:59.000Z"}]
    later = [{**mine, "createdAt": "2026-11-30T12:00:01.000Z"}]

    def ours(item: JsonObject) -> bool:
        return item.get("text") == "Hi"

    assert search_messages(undated, since, ours) == (None, False)
    assert search_messages(earlier, since, ours) == (None, True)
    found, _ = search_messages(later, since, ours)
    assert found is not None and found.message_id == "m"
