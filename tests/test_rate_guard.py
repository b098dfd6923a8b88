"""The rate guard against jitter on the receiver's side: the sandbox stamps each delivery when its
handler runs, after a random delay of its own, and no sender's window may hold one too many."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bulkdm.errors import ConfigError
from bulkdm.providers import DmRequest, HttpClient, SenderAuth, XquikProvider
from bulkdm.rates import Rate
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.sandbox.faults import FaultDice
from bulkdm.secrets import Secret
from bulkdm.settings import RunSettings, load_settings
from tests.clikit import bulkdm, delivered, sandbox_process, windows_over, write_campaign
from tests.enginekit import open_engine, planned, run_engine, settings_for, write_plan

PER_SECOND = Rate(count=40, period_s=1.0)
SENDERS = ("alice", "bob", "cat")


async def _run_with_arrival_jitter(tmp_path: Path, guard: str | None) -> list[tuple[str, int]]:
    """``bulkdm run`` of 1,000 rows over three senders at 40/1s each, against a sandbox that
    stamps every delivery 0-50 ms after it arrived; the windows over 40 in its ledger."""
    rows = [{"recipient_id": 10_000 + i, "first_name": "X", "sender": SENDERS[i % 3]}
            for i in range(1000)]
    # the sandbox in a process of its own, as a provider is: in the test process, a full
    # collection of the heap the earlier tests left paused its stamps by more than the guard
    async with sandbox_process("--arrival-jitter", "50ms", "--seed", "11") as urls:
        # NORMAL: an intent commits without an fsync, so each send leaves as soon as its slot
        # is granted (a slow commit delays the send and adds a margin of its own)
        extra = 'synchronous = "NORMAL"' + ("" if guard is None else f'\nrate_guard = "{guard}"')
        # the engine's own windows are what is measured: the account ledger, which keeps its
        # windows with the default guard whatever the run's, is off
        extra += '\n\n[accounts]\nledger = "off"\n'
        campaign = write_campaign(tmp_path, rows, url=urls["xquik"], senders=SENDERS,
                                  sender_rate="40/1s", extra=extra)
        # A second, looser rate lets each sender send its 40 as fast as it can instead of one
        # every 25 ms, so every window fills from its start: the hardest case for the guard,
        # and one a loaded machine still reaches (at the smooth pace it falls a little behind
        # 40/s and no window ever fills)
        toml = campaign.with_suffix(".toml")
        toml.write_text(toml.read_text().replace('rate = "40/1s"', 'rate = ["40/1s", "400/1s"]'))
        done = await bulkdm("run", str(campaign), "--progress", "none", timeout_s=100)
        ledger = await delivered(urls["sandbox"])
    assert done.code == 0, done.stderr
    assert len(ledger) == 1000
    return windows_over(ledger, PER_SECOND)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_default_guard_holds_40_per_second_with_50ms_of_sandbox_jitter(
        tmp_path: Path) -> None:
    # about 10 s: no 1-second window of a sender holds more than 40 in the sandbox's ledger
    assert await _run_with_arrival_jitter(tmp_path, None) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_old_20ms_guard_lets_windows_overflow_under_the_same_jitter(
        tmp_path: Path) -> None:
    # the control: the same run with the guard the engine had before sees 41 or more
    assert len(await _run_with_arrival_jitter(tmp_path, "20ms")) > 0


async def test_the_sandbox_stamps_a_delivery_after_its_arrival_delay() -> None:
    faults = Faults(arrival_jitter_ms=300, seed=5)
    expected_s = FaultDice(faults).arrival_delay_s()  # the same seed draws the same delay
    assert expected_s > 0.05
    sent_at: list[float] = []
    async with running_sandbox(SandboxConfig(faults=faults)) as sb:
        http = HttpClient.open(concurrency=2, request_timeout_s=10.0)
        xquik = XquikProvider(http=http, base_url=sb.xquik_url, api_key=Secret("k"),
                              poll_timeout_s=5.0)
        try:
            request = DmRequest(recipient_id=sb.directory.register("amy"),
                                sender=SenderAuth(account="alice"), text="hi",
                                idempotency_key="k-1", on_sent=sent_at.append)
            assert (await xquik.send(request)).ok
        finally:
            await xquik.aclose()
        (delivery,) = sb.ledger
    # the stamp is the handler's, taken after the delay (1 ms for two clocks' rounding)
    assert delivery.at_s - sent_at[0] >= expected_s - 0.001
    assert delivery.at_s <= time.time()


def test_rate_guard_is_a_run_setting(tmp_path: Path) -> None:
    campaign = tmp_path / "c.jsonl"
    campaign.write_text("")
    config = tmp_path / "c.toml"
    config.write_text('[[senders]]\naccount = "a"\n')
    assert load_settings(campaign).run.rate_guard_s == pytest.approx(0.1)
    config.write_text('[[senders]]\naccount = "a"\n[run]\nrate_guard = "250ms"\n')
    assert load_settings(campaign).run.rate_guard_s == pytest.approx(0.25)
    config.write_text('[[senders]]\naccount = "a"\n[run]\nrate_guard = "-1s"\n')
    with pytest.raises(ConfigError, match="rate_guard"):
        load_settings(campaign)


@pytest.mark.parametrize(("guard_s", "window_s"), [(None, 10.2), (3.0, 13.0)])
async def test_the_engine_widens_its_windows_by_the_rate_guard(
        tmp_path: Path, guard_s: float | None, window_s: float) -> None:
    path = tmp_path / "c.sqlite"
    await write_plan(path, [planned(1, sender="alice", recipient_id="6000")])
    run = RunSettings(concurrency=4) if guard_s is None else RunSettings(rate_guard_s=guard_s)
    async with running_sandbox() as sb:
        settings = settings_for(sb, sender_rates=(Rate(count=1, period_s=10.0),), run=run)
        await run_engine(settings, path)
        stopped = asyncio.Event()
        stopped.set()
        async with open_engine(settings, path, stop=stopped) as engine:
            await engine.run()  # charges the limiters with the send, then stops at once
            next_slot_s = engine.next_slot_in_s("alice")
    # 10 s plus the guard (the default: 2 % of 10 s, as that is more than 100 ms), less the
    # time since the send
    assert window_s - 1.0 < next_slot_s <= window_s
