"""The breakers end to end: the real CLI on the sandbox, whose ``closed_*`` users refuse DMs and
``protected_*`` users refuse everyone (bulkdm/sandbox/directory.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, env_for, handoff_lines, write_campaign


def _statuses(folder: Path) -> Counter[object]:
    return Counter(r["send_status"] for r in handoff_lines(folder / "camp.handoff.jsonl"))


async def test_an_account_refused_too_often_rests_within_the_sample_and_says_why(
    tmp_path: Path,
) -> None:
    # two of every three recipients refuse: over 30 % of the sample of 20
    rows = [{"recipient_username": f"closed_{i}" if i % 3 else f"open_{i}", "first_name": "x"}
            for i in range(60)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="100/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        pool = await bulkdm("accounts", "--sandbox")
    assert done.code == 4, done.stdout + done.stderr
    assert "refusal breaker: 7 of its last" in done.stdout  # the summary says why
    statuses = _statuses(tmp_path)
    assert statuses["failed"] + statuses["sent"] <= 20  # stopped within the breaker's sample
    assert "resting until" in pool.stdout and "refusal breaker" in pool.stdout  # for all campaigns


async def test_one_error_on_most_sends_stops_the_whole_run(tmp_path: Path) -> None:
    rows = [{"recipient_username": f"protected_{i}", "first_name": "x"} for i in range(60)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("s1", "s2"),
                                  sender_rate="100/1s")
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env_for(("s1", "s2")))
    assert done.code == 4, done.stdout + done.stderr
    assert "same-error breaker: x_account_protected on most of the last 10 sends" in done.stdout
    statuses = _statuses(tmp_path)
    assert 10 <= statuses["failed"] < 20 and statuses["sent"] == 0
