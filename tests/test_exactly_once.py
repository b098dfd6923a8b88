"""Issue 14's holes in "no DM twice, none lost", each through the real CLI against the sandbox."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bulkdm.sandbox import SandboxConfig, running_sandbox
from tests.clikit import bulkdm, env_for, handoff_lines, write_campaign


async def test_a_dropped_senders_loop_never_claims_a_row_another_sender_has(tmp_path: Path) -> None:
    # reauth1 is dropped on its first send while its loop waits for its next 1/1s slot; its
    # rows move to steady, and the loop must not claim the one it was waiting on
    rows = [{"recipient_id": str(60_000 + i), "first_name": "x"} for i in range(20)]
    async with running_sandbox(SandboxConfig()) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.getxapi_url, provider="getxapi",
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
