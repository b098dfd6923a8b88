from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path

from bulkdm.engine import FinishReason
from bulkdm.policies.jitter import Jitter
from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.settings import DmNotAllowedPolicy, ProviderName, RunSettings
from tests.enginekit import open_engine, planned, run_engine, settings_for, states, write_plan


async def test_sends_each_row_once_and_records_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    rows = [planned(i + 1, sender="alice", recipient_id=str(1000 + i)) for i in range(20)]
    rows += [planned(21, sender="alice", username="bob"), planned(22, sender="alice", username="nf_x"),
             planned(23, sender="alice", username="closed_y")]
    await write_plan(path, rows)
    async with running_sandbox() as sb:
        report = await run_engine(settings_for(sb), path)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert report.finish_reason is FinishReason.COMPLETED
    assert len(delivered) == 21 and set(delivered.values()) == {1}
    result = await states(path)
    assert result[22] == ("failed", "user_not_found")
    assert result[23] == ("failed", "x_dm_not_allowed")
    assert all(result[i][0] == "sent" for i in range(1, 22))


async def test_drops_then_replay_delivers_once(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i + 1, sender="alice", recipient_id=str(5000 + i))
                            for i in range(30)])
    config = SandboxConfig(faults=Faults(drop_rate=0.3, fail_rate=0.1, rate_limit_rate=0.03, seed=3))
    async with running_sandbox(config) as sb:
        report = await run_engine(settings_for(sb), path)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert report.finish_reason is FinishReason.COMPLETED, report
    assert len(delivered) == 30 and set(delivered.values()) == {1}


async def test_getxapi_reconciles_dropped_sends(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i + 1, sender="alice", recipient_id=str(7000 + i))
                            for i in range(30)])
    config = SandboxConfig(faults=Faults(drop_rate=0.3, seed=5))
    async with running_sandbox(config) as sb:
        report = await run_engine(settings_for(sb, provider=ProviderName.GETXAPI), path)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert report.finish_reason is FinishReason.COMPLETED, report
    assert len(delivered) == 30 and set(delivered.values()) == {1}
    assert all(state == "sent" for state, _ in (await states(path)).values())


async def test_getxapi_waits_for_a_late_delivery_before_it_looks_and_sends_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i + 1, sender="alice", recipient_id=str(7100 + i))
                            for i in range(3)])
    # the provider delivers each DM 1.5 s after it arrives; the client gives up after 0.3 s.
    # Looked up before that, a DM is not in the conversation yet and would be sent again.
    config = SandboxConfig(faults=Faults(late_rate=1.0, late_ms=1500))
    async with running_sandbox(config) as sb:
        base = settings_for(sb, provider=ProviderName.GETXAPI)
        settings = replace(base, provider=replace(base.provider, request_timeout_s=0.3),
                           retry=replace(base.retry, settle_after_s=2.0))
        async with open_engine(settings, path) as engine:
            run = asyncio.create_task(engine.run())
            for _ in range(100):  # until all three wait to settle (about 0.3 s)
                if engine.counts["unknown"] == 3 and engine.senders[0].note:
                    break
                await asyncio.sleep(0.02)
            waiting_note = engine.senders[0].note
            report = await run
        await asyncio.sleep(1.6)  # a second send would be delivered by now
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert report.finish_reason is FinishReason.COMPLETED, report
    assert delivered == {str(7100 + i): 1 for i in range(3)}
    assert set((await states(path)).values()) == {("sent", "reconciled")}
    # the progress display says why the sender sends nothing meanwhile, and the note goes after
    assert waiting_note is not None and "unknown outcomes settling" in waiting_note
    assert engine.senders[0].note is None


async def test_a_sender_needing_reauth_hands_its_rows_to_a_healthy_one(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i + 1, sender="reauth_a" if i % 2 else "alice",
                                    recipient_id=str(9000 + i)) for i in range(10)])
    async with running_sandbox() as sb:
        report = await run_engine(settings_for(sb, senders=("alice", "reauth_a")), path)
        senders = Counter(d.sender for d in sb.ledger)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert report.finish_reason is FinishReason.COMPLETED
    assert senders == {"alice": 10}
    assert len(delivered) == 10 and set(delivered.values()) == {1}


async def test_next_sender_policy_retries_a_refusal_from_another_account(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="alice", username="closed_zed")])
    async with running_sandbox() as sb:
        settings = settings_for(sb, senders=("alice", "vip_b"),
                                run=RunSettings(concurrency=4,
                                                on_dm_not_allowed=DmNotAllowedPolicy.NEXT_SENDER))
        report = await run_engine(settings, path)
        assert [d.sender for d in sb.ledger] == ["vip_b"]
    assert report.finish_reason is FinishReason.COMPLETED
    assert (await states(path))[1] == ("sent", None)


async def test_daily_limit_rests_the_sender_and_pauses_the_run(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(i + 1, sender="daily_d", recipient_id=str(8000 + i))
                            for i in range(6)])
    async with running_sandbox() as sb:
        report = await run_engine(settings_for(sb, senders=("daily_d",),
                                               run=RunSettings(concurrency=1)), path)
        assert len(sb.ledger) == 3
    assert report.finish_reason is FinishReason.PAUSED
    assert report.detail is not None and "x_daily_limit" in report.detail
    assert Counter(state for state, _ in (await states(path)).values()) == {"sent": 3, "pending": 3}


async def test_bad_api_key_stops_the_run_and_sends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="alice", recipient_id="1")])
    async with running_sandbox(SandboxConfig(valid_api_keys=frozenset({"another"}))) as sb:
        report = await run_engine(settings_for(sb), path)
        assert sb.ledger == []
    assert report.finish_reason is FinishReason.STOPPED_BY_PROVIDER
    assert report.detail is not None and "unauthenticated" in report.detail
    assert (await states(path))[1][0] == "pending"


async def test_a_restart_charges_the_api_key_with_the_media_uploads_of_the_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    await write_plan(path, [replace(planned(1, sender="alice", recipient_id="6100"),
                                    media=str(image))])
    # room for the upload and the send in 10 minutes (the first rate keeps them close together)
    key_rates = (Rate(count=1000, period_s=1.0), Rate(count=2, period_s=600.0))
    async with running_sandbox() as sb:
        report = await run_engine(settings_for(sb, key_rates=key_rates), path)
        assert report.finish_reason is FinishReason.COMPLETED and len(sb.ledger) == 1
        stopped = asyncio.Event()
        stopped.set()
        async with open_engine(settings_for(sb, key_rates=key_rates), path,
                               stop=stopped) as engine:
            await engine.run()
            assert engine.next_slot_in_s("alice") > 590


async def test_a_restart_charges_the_limiter_with_recorded_sends(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="alice", recipient_id="6000")])
    slow = (Rate(count=1, period_s=600.0),)
    async with running_sandbox() as sb:
        await run_engine(settings_for(sb, sender_rates=slow), path)
        stopped = asyncio.Event()
        stopped.set()
        async with open_engine(settings_for(sb, sender_rates=slow), path, stop=stopped) as engine:
            await engine.run()
            assert engine.next_slot_in_s("alice") > 590


async def test_a_jittered_senders_next_slot_counts_its_drawn_gap(tmp_path: Path) -> None:
    # the display's "next slot in" and its state: a sender waiting out its jittered gap said
    # "ready" and a next slot of 0 while nothing could leave
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="alice", recipient_id="6200")])
    async with running_sandbox() as sb:
        base = settings_for(sb, sender_rates=(Rate(count=1, period_s=20.0),))
        settings = replace(base, senders=(replace(base.senders[0], jitter=Jitter(share=1.0)),))
        await run_engine(settings, path)
        stopped = asyncio.Event()
        stopped.set()
        async with open_engine(settings, path, stop=stopped,
                               draw=lambda low, high: high) as engine:
            await engine.run()
            # the limiter's pace allows the next send 20 s after the first; the draw (u = 1)
            # doubles that gap
            assert engine.next_slot_in_s("alice") > 30
