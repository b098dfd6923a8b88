"""What reading replies costs: Xquik a credit per history message, GetXAPI $0.001 a page."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson

from bulkdm.replies import SyncReport
from bulkdm.report import estimate_reads
from bulkdm.settings import (
    CampaignSettings,
    ProviderName,
    ProviderSettings,
    RepliesSettings,
    Settings,
)
from tests.clikit import bulkdm, write_campaign

XQUIK = Settings(campaign=CampaignSettings(name="c"))
GETXAPI = replace(XQUIK, provider=ProviderSettings(name=ProviderName.GETXAPI))


def test_xquik_reads_cost_a_credit_per_message_from_one_to_a_full_page() -> None:
    estimate = estimate_reads(XQUIK, conversations=100, senders=2)
    assert (estimate.pages, estimate.credits_low, estimate.credits_high) == (100, 100, 2000)
    assert estimate.usd_low == 100 * XQUIK.costs.xquik_credit_usd
    assert SyncReport(pages=7, results=12).cost(XQUIK) == (12, 12 * XQUIK.costs.xquik_credit_usd)


def test_getxapi_reads_cost_a_tenth_of_a_cent_a_page_plus_dm_list_per_sender() -> None:
    estimate = estimate_reads(GETXAPI, conversations=100, senders=2)
    assert (estimate.pages, estimate.credits_low, estimate.usd_low) == (102, None, 0.102)
    assert estimate_reads(GETXAPI, conversations=0, senders=2).usd_low == 0
    assert SyncReport(pages=7, results=12).cost(GETXAPI) == (None, 0.007)


async def test_plan_reports_what_a_sync_of_replies_costs(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(100 + i), "first_name": "x"} for i in range(3)]
    campaign = write_campaign(tmp_path, rows, url="http://127.0.0.1:9")
    planned = await bulkdm("plan", str(campaign), "--json")
    assert orjson.loads(planned.stdout)["reply_reads"]["credits_low"] == 3
    text = await bulkdm("plan", str(campaign))
    assert "replies         reading replies of 3 DMs" in text.stdout


def test_the_estimate_counts_a_runs_syncs_over_its_duration_on_the_schedule() -> None:
    syncing = replace(XQUIK, replies=RepliesSettings(sync_every_s=600))
    estimate = estimate_reads(syncing, conversations=3000, senders=1, run_s=6 * 86400)
    assert estimate.run is not None
    reads = estimate.run.conversations
    assert 3000 < reads < 90_000  # every sync reading every sent DM: about 1.3 million
    assert (estimate.run.credits_low, estimate.run.credits_high) == (reads, 20 * reads)
    assert estimate_reads(XQUIK, conversations=3000, senders=1, run_s=6 * 86400).run is None


async def test_plan_reports_what_the_runs_syncs_cost(tmp_path: Path) -> None:
    rows = [{"recipient_id": str(100 + i), "first_name": "x"} for i in range(30)]
    campaign = write_campaign(tmp_path, rows, url="http://127.0.0.1:9", sender_rate="10/1h",
                              extra='\n[replies]\nsync_every = "10m"\n')
    planned = orjson.loads((await bulkdm("plan", str(campaign), "--json")).stdout)
    run = planned["reply_reads"]["run"]
    assert planned["reply_reads"]["sync_every_s"] == 600
    assert planned["reply_reads"]["over_s"] == planned["duration"]["seconds"]
    assert run["conversations"] > 30 and run["credits_low"] == run["conversations"]
    text = (await bulkdm("plan", str(campaign))).stdout
    assert (f"the run's syncs (every 10m, over about {planned['duration']['human']}, old quiet "
            f"conversations less often): about {run['conversations']} conversation reads") in text
