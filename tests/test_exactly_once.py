"""Issue 14's holes in "no DM twice, none lost", each through the real CLI against the sandbox."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import Checkpoint, Expect, Finish
from bulkdm.engine import FinishReason
from bulkdm.outcomes import Action
from bulkdm.providers import DmRequest, SenderAuth, open_provider
from bulkdm.rates import Rate
from bulkdm.rows import RowState
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.secrets import Secret
from bulkdm.settings import ProviderName, ProviderSettings
from tests.clikit import (
    API_KEY,
    Done,
    bulkdm,
    env_for,
    finish,
    handoff_lines,
    start,
    write_campaign,
)
from tests.enginekit import open_engine, planned, settings_for, states, write_plan


@pytest.mark.parametrize("provider", ["getxapi", "xquik"])
async def test_a_dropped_senders_loop_never_claims_a_row_another_sender_has(
    tmp_path: Path, provider: str
) -> None:
    # reauth1 is dropped on its first send while its loop waits for its next 1/1s slot; its
    # rows move to steady, and the loop must not claim the one it was waiting on (GetXAPI sent
    # it twice; with Xquik the key kept the second DM out, but the handoff got 21 lines)
    rows = [{"recipient_id": str(60_000 + i), "first_name": "x"} for i in range(20)]
    async with running_sandbox(SandboxConfig()) as sb:
        url = sb.getxapi_url if provider == "getxapi" else sb.xquik_url
        campaign = write_campaign(tmp_path, rows, url=url, provider=provider,
                                  senders=("reauth1", "steady"))
        toml = tmp_path / "camp.toml"
        toml.write_text(toml.read_text(encoding="utf-8").replace(
            'account = "reauth1"\nrate = "1000/1s"', 'account = "reauth1"\nrate = "1/1s"'),
            encoding="utf-8")
        done = await bulkdm("run", str(campaign), "--progress", "none",
                            env=env_for(("reauth1", "steady")))
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert delivered == Counter(r["recipient_id"] for r in rows), delivered  # each once
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert sorted(r["line"] for r in lines) == list(range(1, 21))  # type: ignore[type-var]
    assert " 20 of 20" in done.stdout, done.stdout


def _set(campaign: Path, before: str, after: str) -> None:
    toml = campaign.with_suffix(".toml")
    text = toml.read_text(encoding="utf-8")
    assert before in text
    toml.write_text(text.replace(before, after, 1), encoding="utf-8")


async def test_a_send_x_confirms_slowly_is_never_sent_under_a_new_key(tmp_path: Path) -> None:
    # every send is answered 202 and confirmed (delivered) 8 s later; bulkdm polls for 2 s
    rows = [{"recipient_id": str(61_000 + i), "first_name": "x"} for i in range(5)]
    config = SandboxConfig(faults=Faults(accept_rate=1.0, accept_after_ms=8000))
    async with running_sandbox(config) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        _set(campaign, 'rate = "100000/1s"\n', 'rate = "100000/1s"\npoll_timeout = "2s"\n')
        _set(campaign, "max_attempts = 6", "max_attempts = 20")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        await asyncio.sleep(8.5)  # anything sent under a second key would be confirmed by now
        keys = {d.idempotency_key for d in sb.ledger}
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert delivered == Counter(r["recipient_id"] for r in rows), (delivered, keys)  # once each
    assert not any("-r" in (k or "") for k in keys), keys
    assert done.code == 0, done.stdout + done.stderr


async def test_reconciliation_never_takes_an_earlier_campaigns_dm_for_ours(tmp_path: Path) -> None:
    # a first campaign sends "Hello x" to ten recipients; a second one, with the same template,
    # meets 5xx answers and reads the conversations: the first campaign's DMs are not its own
    rows = [{"recipient_id": str(62_000 + i), "first_name": "x"} for i in range(16)]
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    async with running_sandbox() as sb:
        earlier = write_campaign(first, rows, url=sb.getxapi_url, provider="getxapi")
        assert (await bulkdm("run", str(earlier), "--progress", "none")).code == 0
        sb.reconfigure(SandboxConfig(faults=Faults(fail_rate=0.5, seed=3)))
        campaign = write_campaign(second, rows, url=sb.getxapi_url, provider="getxapi")
        # the sandbox shares this machine's clock; the default allowance (5 s) would also
        # cover the first campaign, sent a moment ago
        _set(campaign, 'settle_after = "50ms"', 'settle_after = "50ms"\nclock_skew = "100ms"')
        # half the sends fail: eight 503s in ten answers could trip the same-error breaker by
        # chance (an outage stops a run); this test is about reading the conversations
        _set(campaign, "concurrency = 8", "concurrency = 8\nsame_error_sample = 0")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
        ids = {d.message_id for d in sb.ledger[len(rows):]}
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == Counter(r["recipient_id"] for r in rows + rows), delivered  # two each
    lines = handoff_lines(second / "camp.handoff.jsonl")
    assert {r["message_id"] for r in lines} == ids  # the second campaign's own DMs


async def test_a_row_that_may_have_been_delivered_is_settled_before_it_fails(
    tmp_path: Path,
) -> None:
    # each send is either refused with a 5xx (not delivered) or delivered and cut off; with
    # max_attempts = 2, a row whose last attempt was cut off must be looked up, not failed
    # 24 rows: each has both kinds of history (refused twice; refused, then delivered) with
    # odds of 1 in 4, so a run without one of them is a 1-in-1000 event
    rows = [{"recipient_id": str(63_000 + i), "first_name": "x"} for i in range(24)]
    config = SandboxConfig(faults=Faults(fail_rate=0.5, drop_rate=1.0, seed=4))
    async with running_sandbox(config) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.getxapi_url, provider="getxapi")
        _set(campaign, "max_attempts = 6", "max_attempts = 2")
        # every answer is a 503 or a cut connection, on purpose: that would trip the same-error
        # breaker (an outage stops a run); this test is about settling before failing
        _set(campaign, "concurrency = 8", "concurrency = 8\nsame_error_sample = 0")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert set(delivered.values()) == {1}, delivered
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    status = {str(r["user_id"]): r["send_status"] for r in lines}
    assert {u for u, s in status.items() if s == "sent"} == set(delivered), done.stdout
    failed = {u for u, s in status.items() if s == "failed"}
    assert failed and failed == {r["recipient_id"] for r in rows} - set(delivered)
    assert "outcome_unknown" not in done.stdout
    # what the retry recipe exports are the rows the conversation shows were never delivered
    retry = tmp_path / "retry.jsonl"
    exported = await bulkdm("export", str(campaign), "--status", "failed", "--as-campaign",
                            "--out", str(retry))
    assert exported.code == 0, exported.stderr
    assert {orjson.loads(line)["recipient_id"] for line in retry.read_bytes().splitlines()} == failed


async def test_a_retry_export_leaves_out_rows_that_may_have_been_delivered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.bulkdm.sqlite"
    await write_plan(path, [planned(1, sender="a", recipient_id="1"),
                            planned(2, sender="a", recipient_id="2")])
    checkpoint = await Checkpoint.open(path)
    try:
        pending = Expect(state=RowState.PENDING, sender="a")
        for row_id, reason in ((1, "outcome_unknown"), (2, "http_503")):
            done = Finish(state=RowState.FAILED, reason=reason)
            assert await checkpoint.submit([cp.finish(
                row_id=row_id, seq=checkpoint.next_seq(), done=done, finished_at="now",
                expect=pending)])
    finally:
        await checkpoint.close()
    retry = tmp_path / "retry.jsonl"
    exported = await bulkdm("export", str(path), "--status", "failed", "--as-campaign",
                            "--out", str(retry))
    assert exported.code == 0, exported.stderr
    assert [orjson.loads(line)["recipient_id"] for line in retry.read_bytes().splitlines()] == ["2"]
    assert "left out 1 failed row(s) with reason outcome_unknown" in exported.stdout


def _dead_url(provider: ProviderName) -> str:
    """A base URL where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}" + ("/api/v1" if provider is ProviderName.XQUIK else "")


async def _bounded(*args: str, env: dict[str, str], timeout_s: float) -> Done:
    """The CLI's result, or a failure (after killing it) if it runs longer than ``timeout_s``."""
    process = await start(*args, env=env)
    try:
        return await finish(process, timeout_s=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"bulkdm {' '.join(args)} still ran after {timeout_s} s") from None


USERNAMES = [{"recipient_username": f"user{i}", "first_name": "x"} for i in range(3)]


async def test_username_rows_with_a_revoked_key_stop_the_run_with_the_reason(
    tmp_path: Path,
) -> None:
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, USERNAMES, url=sb.xquik_url)
        env = {**env_for(), "XQUIK_API_KEY": "bad-revoked-key"}
        done = await _bounded("run", str(campaign), "--progress", "none", env=env, timeout_s=20)
        assert sb.ledger == []
    assert done.code == 4, done.stdout + done.stderr
    assert "unauthenticated" in done.stdout
    assert "bad-revoked-key" not in done.stdout + done.stderr


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_a_run_with_nothing_listening_stops_with_the_rows_pending(
    tmp_path: Path, provider: str
) -> None:
    url = _dead_url(ProviderName(provider))
    campaign = write_campaign(tmp_path, USERNAMES, url=url, provider=provider)
    done = await _bounded("run", str(campaign), "--progress", "plain", env=env_for(),
                          timeout_s=30)
    assert done.code == 5, done.stdout + done.stderr  # the same-error breaker: an outage
    assert "alice: username lookup failed (" in done.stdout + done.stderr  # the display says why
    assert "same-error breaker: connect_failed" in done.stdout
    assert "pending        3" in done.stdout, done.stdout


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_without_the_breaker_a_lookup_that_never_works_fails_its_rows(
    tmp_path: Path, provider: str
) -> None:
    url = _dead_url(ProviderName(provider))
    campaign = write_campaign(tmp_path, USERNAMES, url=url, provider=provider,
                              extra="same_error_sample = 0")
    done = await _bounded("run", str(campaign), "--progress", "plain", env=env_for(),
                          timeout_s=30)
    assert done.code == 3, done.stdout + done.stderr
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert [r["send_status"] for r in lines] == ["failed"] * 3
    assert all("username lookup gave up" in str(r["error"]) for r in lines), lines


async def test_unknown_rows_whose_conversation_cannot_be_read_end_and_say_why(
    tmp_path: Path,
) -> None:
    # rows a crash left in flight, and a provider that no longer answers: each conversation
    # read fails; the rows end as outcome_unknown (never sent again) and the sender says why
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i, sender="alice", recipient_id=str(64_000 + i))
                            for i in (1, 2)])
    await in_flight(path, "alice")
    async with running_sandbox() as sb:
        base = settings_for(sb, provider=ProviderName.GETXAPI)
    settings = replace(base, provider=replace(base.provider, base_url=_dead_url(
        ProviderName.GETXAPI)))
    async with open_engine(settings, path) as engine:
        report = await asyncio.wait_for(engine.run(), timeout=30)
        note = engine.senders[0].note
    assert report.finish_reason is FinishReason.COMPLETED, report
    assert {s for s, _ in (await states(path)).values()} == {"failed"}
    assert {r for _, r in (await states(path)).values()} == {"outcome_unknown"}
    assert note is not None and note.startswith("conversation read failed"), note


async def test_a_sender_out_in_an_earlier_run_is_tried_again(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(65_000 + i), "first_name": "x"} for i in range(5)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.getxapi_url, provider="getxapi")
        # the token of a session X logged out (the sandbox answers 401 to reauth* tokens)
        broken = await bulkdm("run", str(campaign), "--progress", "none",
                              env={**env_for(), "TOK_ALICE": "tok-reauth-alice"})
        assert broken.code == 4 and sb.ledger == [], broken.stdout
        fixed = await bulkdm("run", str(campaign), "--progress", "none")  # re-authorised
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert fixed.code == 0, fixed.stdout + fixed.stderr
    assert delivered == Counter(r["recipient_id"] for r in rows)


async def test_an_out_senders_unknown_rows_stay_with_it_when_nothing_settles_them(
    tmp_path: Path,
) -> None:
    # reauth1's five rows were in flight when a run died. Its replays (same key) are refused
    # for its account, which says nothing of the first sends (a provider may look at the
    # account before the key), and its conversation cannot be read: the rows stay unknown with
    # it, for a run after it is re-authorised. Moving them to steady sent them again under
    # steady's keys whenever the first sends had been delivered (QA: 12 in 200)
    path = tmp_path / "c.sqlite"
    mine = [planned(i, sender="reauth1", recipient_id=str(66_000 + i)) for i in range(1, 6)]
    theirs = [planned(i, sender="steady", recipient_id=str(66_000 + i)) for i in range(6, 11)]
    await write_plan(path, mine + theirs)
    await in_flight(path, "reauth1")
    async with running_sandbox() as sb:
        base = settings_for(sb, senders=("reauth1", "steady"))
        slow = replace(base.senders[0], rates=(Rate(count=2, period_s=1.0),))
        settings = replace(base, senders=(slow, base.senders[1]))
        async with open_engine(settings, path) as engine:
            report = await asyncio.wait_for(engine.run(), timeout=30)
        delivered = Counter(d.recipient_id for d in sb.ledger)
        senders = {d.sender for d in sb.ledger}
    assert report.finish_reason is FinishReason.PAUSED, report
    assert report.detail is not None
    assert report.detail.count("its unknown rows wait to be settled (account_needs_reauth)") == 1
    assert delivered == Counter(str(66_000 + i) for i in range(6, 11))
    assert senders == {"steady"}
    result = await states(path)
    assert {result[i][0] for i in range(1, 6)} == {"unknown"}


async def test_rows_in_doubt_of_a_sender_removed_from_the_settings_say_how_to_settle_them(
    tmp_path: Path,
) -> None:
    # a run died with s_b's sends in flight, then s_b was taken out of the settings: its rows
    # can be settled only by its own key and conversation, so every later run paused on them
    # and said only "the next run settles them", which no run ever did
    async with running_sandbox() as sb:
        campaign, settings, both = await _s_b_dropped_in_flight(tmp_path, sb.xquik_url,
                                                                first_id=67_000, each=3)
        done = await bulkdm("run", str(campaign), "--amend", "--progress", "none")
        delivered = [d.recipient_id for d in sb.ledger]
        status = await bulkdm("status", str(campaign))
        settings.write_text(both)  # s_b named again: its run settles its rows
        again = await bulkdm("run", str(campaign), "--amend", "--progress", "none")
        status_again = await bulkdm("status", str(campaign))
        delivered_again = Counter(d.recipient_id for d in sb.ledger)
    assert sorted(delivered) == ["67000", "67001", "67002"]  # s_b's never sent by s_a
    assert done.code == 4, done.stdout + done.stderr
    assert ("  3 of them were sent by s_b, which the settings no longer name: add s_b back to "
            "settle them (no other account sends them)") in done.stdout.splitlines()
    # status said "paused, next now" of s_b, which no run would send, and "paused" of s_a,
    # which had nothing left (QA)
    assert status.stdout.splitlines()[-2:] == [
        "  sender s_a: done, 3 sent, 0 left",
        ("  sender s_b: removed (the settings no longer name it: add it back to settle its 3 "
         "row(s) in doubt), 0 sent, 3 left")], status.stdout
    assert again.code == 0, again.stdout + again.stderr
    assert delivered_again == Counter(str(67_000 + i) for i in range(6))
    assert status_again.stdout.splitlines()[-1] == "  sender s_b: done, 3 sent, 0 left", \
        status_again.stdout


async def test_an_amend_alone_that_drops_or_names_again_a_sender_with_rows_in_doubt_shows_in_status(
    tmp_path: Path,
) -> None:
    # the run's end recorded the removed sender; `plan --amend` alone left status saying
    # "ready, next now" of rows no run would send, and, once the sender was named again by
    # an amend, "removed" of a sender the next run would use (QA)
    async with running_sandbox() as sb:
        campaign, settings, both = await _s_b_dropped_in_flight(tmp_path, sb.xquik_url,
                                                                first_id=67_100, each=2)
        dropped = await bulkdm("plan", str(campaign), "--amend")
        status = await bulkdm("status", str(campaign))
        settings.write_text(both.replace('account = "s_b"', 'account = "S_B"'))  # any case
        named = await bulkdm("plan", str(campaign), "--amend")
        status_named = await bulkdm("status", str(campaign))
    assert dropped.code == 0 and named.code == 0, dropped.stderr + named.stderr
    assert ("  sender s_b: removed (the settings no longer name it: add it back to settle its 2 "
            "row(s) in doubt), 0 sent, 2 left") in status.stdout.splitlines(), status.stdout
    # the amend respells its rows as the settings now do; a run settles them first
    assert "  sender S_B: ready, 0 sent, 2 left" in status_named.stdout.splitlines(), \
        status_named.stdout


async def _s_b_dropped_in_flight(tmp_path: Path, url: str, *, first_id: int,
                                 each: int) -> tuple[Path, Path, str]:
    # a planned campaign, `each` rows pinned to s_a and as many to s_b, whose s_b rows a run
    # left in flight, then s_b taken out of the settings: the campaign, its settings file and
    # the settings' text with both senders
    rows = [{"recipient_id": str(first_id + i), "first_name": "x",
             "sender": "s_a" if i < each else "s_b"} for i in range(2 * each)]
    campaign = write_campaign(tmp_path, rows, url=url, senders=("s_a", "s_b"))
    assert (await bulkdm("plan", str(campaign))).code == 0
    await in_flight(campaign.with_suffix(".bulkdm.sqlite"), "s_b")
    settings = tmp_path / "camp.toml"
    both = settings.read_text()
    settings.write_text(both.replace('[[senders]]\naccount = "s_b"\nrate = "1000/1s"\n', ""))
    return campaign, settings, both


async def test_a_row_in_doubt_is_replayed_naming_its_account_as_its_first_request_did(
    tmp_path: Path,
) -> None:
    # a run died with bob's first DM delivered and its answer lost; then the settings spelled
    # the account Bob (a handle is case-insensitive). The replay named the account as the
    # settings did, under a key whose first request named it bob: Xquik answers a key reused
    # for another request 409, and every run stopped there with the campaign's rows unsent (QA)
    rows = [{"recipient_id": str(68_000 + i), "first_name": "x", "sender": "bob"}
            for i in range(4)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("bob",))
        assert (await bulkdm("plan", str(campaign))).code == 0
        path = campaign.with_suffix(".bulkdm.sqlite")
        await in_flight(path, "bob")
        await _deliver_first_row(path, sb.xquik_url, account="bob")
        _set(campaign, 'account = "bob"', 'account = "Bob"')
        done = await bulkdm("run", str(campaign), "--amend", "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == Counter(r["recipient_id"] for r in rows)  # each once, none lost
    assert {state for state, _ in (await states(path)).values()} == {"sent"}


async def _deliver_first_row(path: Path, url: str, *, account: str) -> None:
    """The request of row 1's claim, as it left before its run died (the answer never read)."""
    checkpoint = await Checkpoint.open(path)
    try:
        [row] = await checkpoint.rows_by_ids([1])
    finally:
        await checkpoint.close()
    provider = await open_provider(ProviderSettings(name=ProviderName.XQUIK, base_url=url),
                                   Secret(API_KEY), concurrency=1)
    try:
        outcome = await provider.send(DmRequest(
            recipient_id=row.recipient_id or "", sender=SenderAuth(account=account),
            text=row.text or "", idempotency_key=row.idempotency_key or ""))
    finally:
        await provider.aclose()
    assert outcome.action is Action.DONE, outcome


async def in_flight(path: Path, sender: str) -> None:
    """Leave ``sender``'s due rows claimed and not answered, as a run killed mid-send does."""
    checkpoint = await Checkpoint.open(path)
    try:
        for row in await checkpoint.due_rows(sender, after_id=0, now_s=1e12, limit=10):
            assert await checkpoint.submit(cp.claim(
                row_id=row.id, attempt=1, sender=sender, key=row.idempotency_key or "",
                key_rotation=0, at_s=1.0, expect=Expect(state=row.state, sender=sender)))
    finally:
        await checkpoint.close()
