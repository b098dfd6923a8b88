"""Jitter end to end: the real CLI on the sandbox. One campaign, two senders at the same pace,
sending side by side (the same load on both): alice with ``jitter = "100%"``, bob without.
The gaps are measured from the sandbox's ledger (its delivery stamps). The assertions leave a
wide margin for a loaded machine: they count gaps well over the pace, never exact timings."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path

from bulkdm.rates import Rate
from bulkdm.sandbox import Delivery, running_sandbox
from tests.clikit import bulkdm, windows_over, write_campaign

PACE_S = 0.3
RATE = Rate(count=100, period_s=30.0)  # the pace, 0.3 s; its window holds far more than a test
ROWS = 32


def _gaps(ledger: Sequence[Delivery], sender: str) -> list[float]:
    times = sorted(d.at_s for d in ledger if d.sender == sender)
    return [b - a for a, b in itertools.pairwise(times)]


async def test_a_jittered_sender_spreads_its_gaps_and_keeps_every_limit(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(70_000 + i), "first_name": "x",
             "sender": "alice" if i % 2 else "bob"} for i in range(2 * ROWS)]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("alice", "bob"),
                                  sender_rate=str(RATE))
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'account = "alice"\n', 'account = "alice"\njitter = "100%"\n'))
        plan = await bulkdm("plan", str(campaign))
        done = await bulkdm("run", str(campaign), "--progress", "none", timeout_s=120.0)
        ledger = list(sb.ledger)
    assert done.code == 0, done.stdout + done.stderr
    assert "alice: jitter 100%" in plan.stdout, plan.stdout
    assert len(ledger) == 2 * ROWS
    alice, bob = _gaps(ledger, "alice"), _gaps(ledger, "bob")
    # never sooner than the limiter allows, jitter or not. The stamps are the sandbox's, taken
    # on arrival: one request held up on a loaded machine lands close to the next (CI saw one
    # gap under 0.6 of the pace). A jitter that let sends leave before the limiter's slot would
    # make about 9 of 31 gaps that short (u < -0.4); one or none by chance: p < 0.001.
    assert windows_over(ledger, RATE) == []
    short = [sum(1 for gap in gaps if gap < PACE_S * 0.6) for gaps in (alice, bob)]
    assert max(short) <= 1, (short, alice, bob)
    # without jitter the gaps are even: the pace
    assert statistics.median(bob) < PACE_S * 1.1, bob
    # with 100 %, a gap is the pace times 1 + u (u in [-1, 1], clamped at 0): over 1.25 times
    # the pace in 37.5 % of them (about 12 of 31; 5 or fewer: p = 0.009 by chance)
    spread = sum(1 for gap in alice if gap > PACE_S * 1.25)
    even = sum(1 for gap in bob if gap > PACE_S * 1.25)  # only the machine's own delays
    assert spread >= 5 and spread >= even + 3, (alice, bob)
    assert max(alice) < PACE_S * 2 + 0.5, alice
