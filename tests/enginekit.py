"""Builders shared by the engine tests: plans written straight into a real checkpoint file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

from bulkdm.checkpoint import Checkpoint, PlanMeta
from bulkdm.engine import Engine, RunReport
from bulkdm.keys import idempotency_key, text_sha256
from bulkdm.policies.jitter import Draw
from bulkdm.providers import SenderAuth, open_provider
from bulkdm.rates import Rate
from bulkdm.rows import PlannedRow, RowState
from bulkdm.sandbox import Sandbox
from bulkdm.secrets import Secret
from bulkdm.settings import (
    CampaignSettings,
    ProviderName,
    ProviderSettings,
    RetrySettings,
    RunSettings,
    SenderSettings,
    Settings,
)

FAST = (Rate(count=1000, period_s=1.0),)


def settings_for(
    sandbox: Sandbox,
    *,
    provider: ProviderName = ProviderName.XQUIK,
    senders: Sequence[str] = ("alice",),
    sender_rates: tuple[Rate, ...] = FAST,
    key_rates: tuple[Rate, ...] = FAST,
    run: RunSettings | None = None,
    retry: RetrySettings | None = None,
) -> Settings:
    url = sandbox.xquik_url if provider is ProviderName.XQUIK else sandbox.getxapi_url
    return Settings(
        campaign=CampaignSettings(name="t"),
        provider=ProviderSettings(name=provider, base_url=url, rates=key_rates,
                                  read_rates=FAST, request_timeout_s=2.0, poll_timeout_s=5.0),
        senders=tuple(SenderSettings(account=a, rates=sender_rates, daily_cap=None)
                      for a in senders),
        retry=retry or RetrySettings(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05,
                                     settle_after_s=0.05),
        run=run or RunSettings(concurrency=8),
    )


def planned(line: int, *, sender: str, recipient_id: str | None = None,
            username: str | None = None, text: str = "hello") -> PlannedRow:
    row = PlannedRow(line=line, state=RowState.PENDING, recipient_id=recipient_id,
                     recipient_username=username, text=text, text_sha256=text_sha256(text),
                     sender=sender)
    key = idempotency_key(campaign="t", recipient_key=row.recipient_key or "", sender=sender,
                          text_digest=row.text_sha256 or "")
    return replace(row, idempotency_key=key)


async def write_plan(path: Path, rows: Sequence[PlannedRow]) -> None:
    checkpoint = await Checkpoint.open(path)
    try:
        meta = PlanMeta(campaign="t", campaign_path="t.jsonl", campaign_sha256="c",
                        settings_sha256="s", provider="xquik", created_at="2026-11-23T00:00:00Z")
        await checkpoint.write_plan(meta, [list(rows)])
    finally:
        await checkpoint.close()


@contextlib.asynccontextmanager
async def open_engine(
    settings: Settings, path: Path, *, stop: asyncio.Event | None = None,
    draw: Draw | None = None,
) -> AsyncIterator[Engine]:
    """An engine over the checkpoint at ``path``, for a test that watches it while it runs."""
    checkpoint = await Checkpoint.open(path)
    provider = await open_provider(settings.provider, Secret("test-key"), concurrency=8)
    auths = {s.account: SenderAuth(account=s.account, auth_token=Secret(f"tok-{s.account}"))
             for s in settings.senders}
    try:
        yield Engine(settings=settings, checkpoint=checkpoint, provider=provider, auths=auths,
                     stop=stop or asyncio.Event(), draw=draw)
    finally:
        await provider.aclose()
        await checkpoint.close()


async def run_engine(settings: Settings, path: Path, *, stop: asyncio.Event | None = None) -> RunReport:
    async with open_engine(settings, path, stop=stop) as engine:
        return await engine.run()


async def states(path: Path) -> dict[int, tuple[str, str | None]]:
    """line -> (state, reason)"""
    checkpoint = await Checkpoint.open(path)
    try:
        rows = await checkpoint.rows_by_state([s.value for s in RowState], after_id=0, limit=10**6)
        return {r.line: (r.state.value, r.reason) for r in rows}
    finally:
        await checkpoint.close()
