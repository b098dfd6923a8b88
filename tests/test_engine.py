from __future__ import annotations

from collections import Counter
from pathlib import Path

from bulkdm.engine import FinishReason
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.settings import ProviderName
from tests.enginekit import planned, run_engine, settings_for, states, write_plan


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
