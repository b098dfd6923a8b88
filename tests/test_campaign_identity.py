"""A new campaign named like an earlier one gets its own keys and says so; the same
checkpoint keeps its keys. The real CLI, the sandbox's Xquik (which replays a known key)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bulkdm.checkpoint import Checkpoint
from bulkdm.keys import idempotency_key, key_scope
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, handoff_lines, write_campaign

ROWS: list[dict[str, object]] = [{"recipient_id": str(65_000 + i), "first_name": "x"}
                                 for i in range(3)]


def test_an_identity_changes_the_key_and_none_keeps_the_old_one() -> None:
    parts = {"recipient_key": "id:1", "sender": "a", "text_digest": "d"}
    old = idempotency_key(campaign="camp", **parts)
    assert idempotency_key(campaign=key_scope("camp", None), **parts) == old
    assert idempotency_key(campaign=key_scope("camp", "c0ffee"), **parts) != old


async def test_a_new_campaign_with_an_old_name_sends_and_warns(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    async with running_sandbox() as sb:
        first = write_campaign(first_dir, ROWS, url=sb.xquik_url)
        second = write_campaign(second_dir, ROWS, url=sb.xquik_url)  # the same name, "camp"
        done = await bulkdm("run", str(first), "--progress", "none")
        assert done.code == 0, done.stdout + done.stderr
        planned = await bulkdm("plan", str(second))
        again = await bulkdm("run", str(second), "--progress", "none")
        resumed = await bulkdm("run", str(second), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert "note: the name 'camp' was used before" in planned.stdout, planned.stdout
    assert str(first_dir) in planned.stdout
    assert again.code == 0 and resumed.code == 0, again.stdout + again.stderr
    assert "was used before" not in again.stdout  # said once, by the plan that made it
    assert delivered == Counter({str(r["recipient_id"]): 2 for r in ROWS})
    first_keys = {r["idempotency_key"] for r in handoff_lines(first_dir / "camp.handoff.jsonl")}
    second_keys = {r["idempotency_key"] for r in handoff_lines(second_dir / "camp.handoff.jsonl")}
    assert len(second_keys) == 3 and not first_keys & second_keys


async def test_a_replan_keeps_the_identity_and_says_nothing(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, ROWS, url="http://127.0.0.1:9/api/v1")
    first = await bulkdm("plan", str(campaign))
    checkpoint = await Checkpoint.open(tmp_path / "camp.bulkdm.sqlite")
    before = await checkpoint.plan_meta()
    await checkpoint.close()
    campaign.write_bytes(campaign.read_bytes() + b'{"recipient_id": "66000", "first_name": "y"}\n')
    second = await bulkdm("plan", str(campaign))
    checkpoint = await Checkpoint.open(tmp_path / "camp.bulkdm.sqlite")
    after = await checkpoint.plan_meta()
    await checkpoint.close()
    assert first.code == second.code == 0, first.stderr + second.stderr
    # no note but the warm-up's (alice is new to the ledger): nothing about the identity
    notes = [line for line in (first.stdout + second.stdout).splitlines()
             if line.startswith("note:") and not line.startswith("note: warm-up:")]
    assert "plan replaced" in second.stdout and notes == [], notes
    assert before is not None and after is not None and before.campaign_id == after.campaign_id
