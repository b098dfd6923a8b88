"""The Xquik client against the sandbox over real sockets: every endpoint and every error class."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bulkdm.outcomes import Action
from bulkdm.providers import DmRequest, SenderAuth, XquikProvider, open_provider
from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, Sandbox, SandboxConfig, derive_user_id, running_sandbox
from bulkdm.secrets import Secret
from bulkdm.settings import ProviderName, ProviderSettings

API_KEY = "xq_test_key_0123456789"
SINCE = "2000-01-01T00:00:00Z"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig()) as running:
        yield running


async def xquik(
    base_url: str,
    *,
    key: str = API_KEY,
    request_timeout_s: float = 10.0,
    poll_timeout_s: float = 10.0,
) -> XquikProvider:
    settings = ProviderSettings(
        name=ProviderName.XQUIK,
        base_url=base_url,
        request_timeout_s=request_timeout_s,
        poll_timeout_s=poll_timeout_s,
    )
    provider = await open_provider(settings, Secret(key), concurrency=4)
    assert isinstance(provider, XquikProvider)
    return provider


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[XquikProvider]:
    provider = await xquik(sandbox.xquik_url)
    yield provider
    await provider.aclose()


def dm(
    sandbox: Sandbox,
    recipient: str = "bob",
    *,
    sender: str = "alice",
    text: str = "hello there",
    key: str = "key-1",
    media_id: str | None = None,
) -> DmRequest:
    return DmRequest(
        recipient_id=sandbox.directory.register(recipient),
        sender=SenderAuth(account=sender),
        text=text,
        idempotency_key=key,
        media_id=media_id,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- sends ---------------------------------------------------------------------------------------


async def test_send_current_contract_is_done_with_ids(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    outcome = await client.send(dm(sandbox))

    assert [d.idempotency_key for d in sandbox.ledger] == ["key-1"]
    delivery = sandbox.ledger[0]
    assert outcome.action is Action.DONE
    assert outcome.value == delivery.message_id
    assert outcome.http_status == 200
    assert outcome.write_action_id and outcome.request_id and outcome.sent_at
    assert (delivery.sender, delivery.text) == ("alice", "hello there")


async def test_accepted_write_is_polled_to_terminal(sandbox: Sandbox) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(accept_rate=1.0, accept_polls=2)))
    provider = await xquik(sandbox.xquik_url)
    try:
        outcome = await provider.send(dm(sandbox))
    finally:
        await provider.aclose()

    assert outcome.action is Action.DONE
    assert outcome.value == sandbox.ledger[0].message_id
    assert outcome.write_action_id is not None


async def test_poll_out_of_time_is_verify_and_never_a_second_send(sandbox: Sandbox) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(accept_rate=1.0, accept_polls=1000)))
    provider = await xquik(sandbox.xquik_url, poll_timeout_s=0.5)
    try:
        first = await provider.send(dm(sandbox))
        replay = await provider.send(dm(sandbox))
    finally:
        await provider.aclose()

    assert (first.action, first.code) == (Action.VERIFY, "poll_timeout")
    assert first.write_action_id is not None and first.http_status == 202
    assert replay.write_action_id == first.write_action_id
    assert len(sandbox.ledger) == 1


async def test_legacy_answer_is_done(sandbox: Sandbox) -> None:
    sandbox.reconfigure(SandboxConfig(legacy=True))
    provider = await xquik(sandbox.xquik_url)
    try:
        outcome = await provider.send(dm(sandbox))
    finally:
        await provider.aclose()

    assert outcome.action is Action.DONE
    assert outcome.value == sandbox.ledger[0].message_id
    assert outcome.write_action_id is None


async def test_dropped_send_is_verify_then_replay_gives_the_same_message(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(drop_rate=1.0, seed=1)))
    dropped = await client.send(dm(sandbox))
    sandbox.reconfigure(SandboxConfig())
    replay = await client.send(dm(sandbox))

    assert (dropped.action, dropped.code, dropped.http_status) == (
        Action.VERIFY,
        "connection_lost",
        None,
    )
    assert replay.action is Action.DONE
    assert len(sandbox.ledger) == 1
    assert replay.value == sandbox.ledger[0].message_id


async def test_timeout_after_send_is_verify_and_replay_is_done(sandbox: Sandbox) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(latency_ms=600)))
    provider = await xquik(sandbox.xquik_url, request_timeout_s=0.2)
    try:
        late = await provider.send(dm(sandbox))
        sandbox.reconfigure(SandboxConfig())
        replay = await provider.send(dm(sandbox))
    finally:
        await provider.aclose()

    assert (late.action, late.code) == (Action.VERIFY, "timeout")
    assert replay.action is Action.DONE
    assert [d.message_id for d in sandbox.ledger] == [replay.value]


async def test_connection_refused_is_retry() -> None:
    provider = await xquik(f"http://127.0.0.1:{closed_port()}/api/v1")
    request = DmRequest(
        recipient_id="123", sender=SenderAuth(account="alice"), text="x", idempotency_key="k"
    )
    try:
        sent = await provider.send(request)
        looked_up = await provider.resolve("bob", request.sender)
    finally:
        await provider.aclose()

    assert (sent.action, sent.code) == (Action.RETRY, "connect_failed")
    assert (looked_up.action, looked_up.code) == (Action.RETRY, "connect_failed")


# -- refusals, one per class ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "sender", "action", "code", "status"),
    [
        ("closed_carol", "alice", Action.FAIL_ROW, "x_dm_not_allowed", 422),
        ("protected_pat", "alice", Action.FAIL_ROW, "x_account_protected", 422),
        ("nf_nobody", "alice", Action.FAIL_ROW, "x_target_not_found", 422),
        ("bob", "suspended_sam", Action.DROP_SENDER, "x_account_suspended", 422),
        ("bob", "reauth_rae", Action.DROP_SENDER, "account_needs_reauth", 403),
        ("bob", "restricted_rob", Action.DROP_SENDER, "account_restricted", 403),
        ("bob", "nosuch_ned", Action.DROP_SENDER, "account_not_found", 404),
    ],
)
async def test_refusals(
    sandbox: Sandbox,
    client: XquikProvider,
    recipient: str,
    sender: str,
    action: Action,
    code: str,
    status: int,
) -> None:
    outcome = await client.send(dm(sandbox, recipient, sender=sender))

    assert (outcome.action, outcome.code, outcome.http_status) == (action, code, status)
    assert outcome.request_id is not None
    assert sandbox.ledger == []


async def test_vip_sender_may_message_a_closed_recipient(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    outcome = await client.send(dm(sandbox, "closed_carol", sender="vip_vera"))

    assert outcome.action is Action.DONE


async def test_text_too_long_fails_the_row(sandbox: Sandbox, client: XquikProvider) -> None:
    outcome = await client.send(dm(sandbox, text="x" * 10_001))

    assert (outcome.action, outcome.code) == (Action.FAIL_ROW, "x_content_too_long")


async def test_daily_limit_rests_the_sender_for_a_day(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    outcomes = [
        await client.send(dm(sandbox, f"user{n}", sender="daily_dan", key=f"k{n}"))
        for n in range(4)
    ]

    assert [o.action for o in outcomes[:3]] == [Action.DONE] * 3
    assert (outcomes[3].action, outcomes[3].code) == (Action.REST_SENDER, "x_daily_limit")
    assert outcomes[3].retry_after_s == 86_400


async def test_x_throttle_rests_the_sender(sandbox: Sandbox, client: XquikProvider) -> None:
    sandbox.reconfigure(SandboxConfig(sender_rates=(Rate(count=1, period_s=60),)))
    first = await client.send(dm(sandbox, "bob", key="k1"))
    second = await client.send(dm(sandbox, "bea", key="k2"))

    assert first.action is Action.DONE
    assert (second.action, second.code) == (Action.REST_SENDER, "x_rate_limited")
    assert second.retry_after_s is not None and 1 <= second.retry_after_s <= 60


async def test_key_throttle_is_retry_with_the_same_key(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    sandbox.reconfigure(SandboxConfig(key_rates=(Rate(count=2, period_s=60),)))
    outcomes = [await client.send(dm(sandbox, f"u{n}", key=f"k{n}")) for n in range(3)]

    throttled = outcomes[2]
    assert (throttled.action, throttled.code) == (Action.RETRY, "rate_limit_exceeded")
    assert throttled.retry_after_s is not None and 1 <= throttled.retry_after_s <= 60
    assert throttled.new_key is False
    assert len(sandbox.ledger) == 2


async def test_spurious_429_is_retry(sandbox: Sandbox, client: XquikProvider) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(rate_limit_rate=1.0)))
    outcome = await client.send(dm(sandbox))

    assert (outcome.action, outcome.code, outcome.retry_after_s) == (
        Action.RETRY,
        "rate_limit_exceeded",
        1.0,
    )


async def test_server_failures_are_retry_and_not_delivered(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(fail_rate=1.0, seed=3)))
    outcomes = [await client.send(dm(sandbox, key=f"k{n}")) for n in range(8)]

    assert {o.action for o in outcomes} == {Action.RETRY}
    assert {(o.code, o.http_status) for o in outcomes} == {
        ("write_tracking_unavailable", 503),
        ("internal_error", 500),
    }
    assert sandbox.ledger == []


async def test_bad_api_key_stops_the_run(sandbox: Sandbox) -> None:
    provider = await xquik(sandbox.xquik_url, key="bad-key")
    try:
        sent = await provider.send(dm(sandbox))
        looked_up = await provider.resolve("bob", SenderAuth(account="alice"))
    finally:
        await provider.aclose()

    assert (sent.action, sent.code, sent.http_status) == (Action.STOP_RUN, "unauthenticated", 401)
    assert (looked_up.action, looked_up.code) == (Action.STOP_RUN, "unauthenticated")


async def test_out_of_credits_stops_the_run(sandbox: Sandbox, client: XquikProvider) -> None:
    sandbox.reconfigure(SandboxConfig(credits=10))
    first = await client.send(dm(sandbox, "bob", key="k1"))
    second = await client.send(dm(sandbox, "bea", key="k2"))

    assert first.action is Action.DONE
    assert (second.action, second.code, second.http_status) == (
        Action.STOP_RUN,
        "insufficient_credits",
        402,
    )


async def test_key_reused_with_other_text_stops_the_run_as_a_bug(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    await client.send(dm(sandbox, text="first"))
    outcome = await client.send(dm(sandbox, text="second"))

    assert (outcome.action, outcome.code, outcome.http_status) == (
        Action.STOP_RUN,
        "idempotency_conflict",
        409,
    )
    assert outcome.message is not None and "bulkdm bug" in outcome.message
    assert len(sandbox.ledger) == 1


# -- lookups -------------------------------------------------------------------------------------


async def test_resolve_gives_the_numeric_id(client: XquikProvider) -> None:
    outcome = await client.resolve("@bob", SenderAuth(account="alice"))

    assert (outcome.action, outcome.value) == (Action.DONE, derive_user_id("bob"))


@pytest.mark.parametrize(
    ("username", "code"), [("nf_ghost", "user_not_found"), ("no spaces!", "invalid_username")]
)
async def test_resolve_unknown_user_fails_the_row(
    client: XquikProvider, username: str, code: str
) -> None:
    outcome = await client.resolve(username, SenderAuth(account="alice"))

    assert (outcome.action, outcome.code) == (Action.FAIL_ROW, code)


async def test_slow_lookup_is_retry_not_verify(sandbox: Sandbox) -> None:
    sandbox.reconfigure(SandboxConfig(faults=Faults(latency_ms=600)))
    provider = await xquik(sandbox.xquik_url, request_timeout_s=0.2)
    try:
        outcome = await provider.resolve("bob", SenderAuth(account="alice"))
    finally:
        await provider.aclose()

    assert (outcome.action, outcome.code) == (Action.RETRY, "timeout")


# -- media ---------------------------------------------------------------------------------------


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "pic.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return path


@pytest.mark.parametrize("legacy", [False, True])
async def test_upload_then_send_carries_exactly_that_media(
    sandbox: Sandbox, client: XquikProvider, picture: Path, legacy: bool
) -> None:
    sandbox.reconfigure(SandboxConfig(legacy=legacy))
    uploaded = await client.upload_media(picture, SenderAuth(account="alice"), "media-key-1")
    assert uploaded.action is Action.DONE and uploaded.value is not None

    sent = await client.send(dm(sandbox, media_id=uploaded.value))

    assert sent.action is Action.DONE
    assert [(d.media_id, d.message_id) for d in sandbox.ledger] == [(uploaded.value, sent.value)]


async def test_upload_replay_gives_the_same_media_id(client: XquikProvider, picture: Path) -> None:
    sender = SenderAuth(account="alice")
    first = await client.upload_media(picture, sender, "media-key-1")
    again = await client.upload_media(picture, sender, "media-key-1")

    assert first.action is again.action is Action.DONE
    assert first.value == again.value


async def test_upload_of_a_missing_file_fails_the_row(
    client: XquikProvider, tmp_path: Path
) -> None:
    outcome = await client.upload_media(tmp_path / "gone.png", SenderAuth(account="a"), "k")

    assert (outcome.action, outcome.code) == (Action.FAIL_ROW, "media_unreadable")


async def test_upload_from_a_dropped_sender_drops_it(client: XquikProvider, picture: Path) -> None:
    outcome = await client.upload_media(picture, SenderAuth(account="reauth_rae"), "k")

    assert (outcome.action, outcome.code) == (Action.DROP_SENDER, "account_needs_reauth")


# -- reconcile -----------------------------------------------------------------------------------


async def test_reconcile_finds_a_sent_message(sandbox: Sandbox, client: XquikProvider) -> None:
    request = dm(sandbox)
    sent = await client.send(request)

    result = await client.reconcile(request, SINCE)

    assert (result.found, result.message_id) == (True, sent.value)
    assert result.sent_at is not None


async def test_reconcile_does_not_find_what_was_never_sent(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    await client.send(dm(sandbox))

    result = await client.reconcile(dm(sandbox, text="never sent"), SINCE)

    assert (result.found, result.outcome) == (False, None)


async def test_reconcile_ignores_messages_before_since(
    sandbox: Sandbox, client: XquikProvider
) -> None:
    request = dm(sandbox)
    await client.send(request)

    result = await client.reconcile(request, "2999-01-01T00:00:00Z")

    assert result.found is False


async def test_reconcile_pages_back(sandbox: Sandbox, client: XquikProvider) -> None:
    first = dm(sandbox, text="message 0", key="k0")
    sent = await client.send(first)
    for n in range(1, 26):
        await client.send(dm(sandbox, text=f"message {n}", key=f"k{n}"))

    result = await client.reconcile(first, SINCE)

    assert (result.found, result.message_id) == (True, sent.value)


async def test_reconcile_that_cannot_read_says_so(sandbox: Sandbox, client: XquikProvider) -> None:
    result = await client.reconcile(dm(sandbox, sender="restricted_rob"), SINCE)

    assert result.found is None
    assert result.outcome is not None
    assert (result.outcome.action, result.outcome.code) == (
        Action.DROP_SENDER,
        "account_restricted",
    )


async def test_repr_shows_no_key(client: XquikProvider) -> None:
    assert API_KEY not in repr(client)
    assert "XquikProvider" in repr(client)
