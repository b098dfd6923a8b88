"""``bulkdm optouts`` and the plan: opt-outs in the shared ledger skip rows of later plans; the
export is a suppression file the planner reads. The real CLI, a real ledger file."""

from __future__ import annotations

import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from bulkdm.planner import load_suppression
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from tests.clikit import (
    bulkdm,
    env_for,
    finish,
    handoff_lines,
    kill_when,
    start,
    wait_for,
    write_campaign,
)

LOOPBACK = "http://127.0.0.1:9"  # never called: plan reads no provider; the sandbox realm
ROWS: list[dict[str, object]] = [
    {"recipient_username": "Stopper_Ann", "first_name": "Ann"},
    {"recipient_id": "4242", "first_name": "Bo"},
    {"recipient_username": "carl", "first_name": "Carl"},
]


async def test_an_opt_out_added_by_hand_skips_the_row_at_plan_time(tmp_path: Path) -> None:
    added = await bulkdm("optouts", "--sandbox", "--add", "@stopper_ann", "--reason", "asked")
    assert added.code == 0, added.stderr
    assert (await bulkdm("optouts", "--sandbox", "--add", "4242", "--reason", "STOP")).code == 0
    no_reason = await bulkdm("optouts", "--sandbox", "--add", "carl")
    assert no_reason.code == 1 and "--reason" in no_reason.stderr
    campaign = write_campaign(tmp_path, ROWS, url=LOOPBACK)
    planned = await bulkdm("plan", str(campaign), "--json")
    assert planned.code == 0, planned.stderr
    assert '"opted_out":2' in planned.stdout.replace(" ", "")
    out = tmp_path / "skipped.jsonl"
    exported = await bulkdm("export", str(campaign), "--out", str(out))
    assert exported.code == 0, exported.stderr
    states = {r["line"]: (r["send_status"], r["error"]["code"])  # type: ignore[index]
              for r in handoff_lines(out)}
    assert states == {1: ("skipped", "opted_out"), 2: ("skipped", "opted_out")}


async def test_export_writes_a_suppression_file_and_remove_lifts_it(tmp_path: Path) -> None:
    for who in ("@Dana", "99"):
        assert (await bulkdm("optouts", "--add", who, "--reason", "STOP")).code == 0
    out = tmp_path / "optouts.txt"
    assert (await bulkdm("optouts", "--export", str(out))).code == 0
    suppression = load_suppression([out])
    assert suppression.usernames == {"dana"} and suppression.user_ids == {"99"}
    lifted = await bulkdm("optouts", "--remove", "dana", "--reason", "wrote to us again")
    assert lifted.code == 0 and "lifted 1" in lifted.stdout
    assert (await bulkdm("optouts", "--remove", "dana", "--reason", "again")).code == 1
    listed = await bulkdm("optouts", "--json")
    assert '"username":"dana"' not in listed.stdout and '"user_id":"99"' in listed.stdout
    # the live realm's opt-outs are not the sandbox's
    assert '"opt_outs":[]' in (await bulkdm("optouts", "--sandbox", "--json")).stdout


async def test_an_opt_out_added_while_a_slow_sender_waits_skips_the_row(tmp_path: Path) -> None:
    # a running campaign checks its rows against the shared opt-outs in groups just before
    # their sends; a slow sender's group waits for its slots (minutes at 500 a day), and an
    # opt-out added meanwhile must hold all the same
    rows = [{"recipient_username": "early_fan", "first_name": "E"},
            {"recipient_username": "late_stopper", "first_name": "L"}]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="1/8s")
        running = await start("run", str(campaign), "--progress", "none")
        await wait_for(lambda: len(sb.ledger) >= 1, process=running)
        added = await bulkdm("optouts", "--sandbox", "--add", "@late_stopper", "--reason",
                             "asked by email")
        done = await finish(running)
        delivered = [d.recipient_id for d in sb.ledger]
        early = sb.directory.register("early_fan")
    assert added.code == 0, added.stderr
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == [early]
    records = {r["recipient_username"]: r for r in handoff_lines(tmp_path / "camp.handoff.jsonl")}
    assert records["late_stopper"]["send_status"] == "skipped"
    assert records["late_stopper"]["error"]["code"] == "opted_out"  # type: ignore[index]


def _state(checkpoint: Path) -> str | None:
    """The one row's state (None: not planned yet)."""
    try:
        with closing(sqlite3.connect(checkpoint)) as db:
            found = db.execute("SELECT state FROM rows").fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return None
    return None if found is None else str(found[0])


@pytest.mark.parametrize(("provider", "faults", "ends"), [
    # a 5xx: GetXAPI may still deliver it, so the row waits in doubt; the conversation then
    # proves it was not delivered, and the opt-out skips it instead of sending it
    ("getxapi", Faults(fail_rate=1.0), ("skipped", "opted_out")),
    # delivered, the answer cut: Xquik would replay the key; the conversation shows it sent
    ("xquik", Faults(drop_rate=1.0), ("sent", None)),
])
async def test_a_row_in_doubt_whose_recipient_opts_out_is_settled_not_sent(
    tmp_path: Path, provider: str, faults: Faults, ends: tuple[str, str | None],
) -> None:
    env = env_for(("s1",))
    async with running_sandbox(SandboxConfig(faults=faults)) as sb:
        url = sb.getxapi_url if provider == "getxapi" else sb.xquik_url
        campaign = write_campaign(tmp_path, [{"recipient_username": "doubt_dora",
                                              "first_name": "D"}],
                                  url=url, provider=provider, senders=("s1",))
        checkpoint = tmp_path / "camp.bulkdm.sqlite"
        await kill_when(await start("run", str(campaign), "--progress", "none", env=env),
                        lambda: checkpoint.exists() and _state(checkpoint) == "unknown")
        added = await bulkdm("optouts", "--sandbox", "--add", "@doubt_dora", "--reason", "STOP")
        sb.reconfigure(SandboxConfig())
        done = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        delivered = len(sb.ledger)
    assert added.code == 0, added.stderr
    assert done.code == 0, done.stdout + done.stderr
    [record] = handoff_lines(tmp_path / "camp.handoff.jsonl")
    error = record.get("error")
    assert (record["send_status"], error["code"] if isinstance(error, dict) else None) == ends
    assert delivered == (1 if ends[0] == "sent" else 0)  # never a DM after the opt-out


async def test_optouts_of_a_campaign_use_its_ledger_and_realm(tmp_path: Path) -> None:
    # `optouts` read only --ledger or the default: a campaign whose [accounts] ledger is its
    # team's added an opt-out where no plan of it looked, and the person was messaged
    campaign = write_campaign(tmp_path, ROWS, url=LOOPBACK,
                              extra='\n[accounts]\nledger = "team.sqlite"\n')
    added = await bulkdm("optouts", str(campaign), "--add", "@carl", "--reason", "by email")
    listed = await bulkdm("optouts", "--config", str(tmp_path / "camp.toml"), "--json")
    elsewhere = [await bulkdm("optouts", *flag, "--json") for flag in ((), ("--sandbox",))]
    exported = await bulkdm("optouts", str(campaign), "--export", str(tmp_path / "dnc.txt"))
    planned = await bulkdm("plan", str(campaign), "--json")
    lifted = await bulkdm("optouts", str(campaign), "--remove", "carl", "--reason", "came back")
    assert added.code == 0 and "(sandbox)" in added.stdout, added.stdout + added.stderr
    assert listed.code == 0, listed.stderr
    assert str(tmp_path / "team.sqlite") in listed.stdout and '"realm":"sandbox"' in listed.stdout
    assert '"username":"carl"' in listed.stdout
    assert all('"opt_outs":[]' in done.stdout for done in elsewhere)
    assert exported.code == 0 and load_suppression([tmp_path / "dnc.txt"]).usernames == {"carl"}
    assert '"opted_out":1' in planned.stdout.replace(" ", ""), planned.stdout
    assert lifted.code == 0 and "lifted 1" in lifted.stdout


async def test_optouts_of_a_campaign_without_a_ledger_say_where_it_is_off(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, ROWS, url=LOOPBACK, extra='\n[accounts]\nledger = "off"\n')
    refused = await bulkdm("optouts", str(campaign))
    missing = await bulkdm("optouts", str(tmp_path / "nope.jsonl"))
    assert refused.code == 1, refused.stdout + refused.stderr
    assert f"{tmp_path / 'camp.toml'}, key 'accounts.ledger': is off" in refused.stderr
    assert missing.code == 1 and "nope.jsonl: no such file" in missing.stderr


async def test_an_empty_handle_is_refused_not_taken_for_a_listing() -> None:
    # `optouts --add "$HANDLE"` with HANDLE unset listed the opt-outs and exited 0: a script
    # believed the opt-out recorded
    added = await bulkdm("optouts", "--sandbox", "--add", "", "--reason", "said stop")
    removed = await bulkdm("optouts", "--sandbox", "--remove", " ", "--reason", "back")
    assert added.code == 1 and "'' is neither an X username nor a user id" in added.stderr
    assert removed.code == 1 and "is neither" in removed.stderr, removed.stdout
    assert added.stdout == removed.stdout == ""


async def test_an_opt_out_by_username_stops_a_row_that_gives_the_person_by_id(
    tmp_path: Path,
) -> None:
    """``optouts --add @dana_x`` records a name; a CRM export gives dana by id. The run looks
    the name up once, keeps the id beside it in the ledger, and skips her row."""
    async with running_sandbox() as sb:
        dana, eli = sb.directory.register("dana_x"), sb.directory.register("eli_y")
        added = await bulkdm("optouts", "--sandbox", "--add", "@dana_x", "--reason", "asked")
        campaign = write_campaign(tmp_path, [{"recipient_id": dana, "first_name": "D"},
                                             {"recipient_id": eli, "first_name": "E"}],
                                  url=sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--progress", "none")
        listed = await bulkdm("optouts", "--sandbox", "--json")
        delivered = [d.recipient_id for d in sb.ledger]
    assert added.code == 0, added.stderr
    assert done.code == 0, done.stdout + done.stderr
    assert delivered == [eli]
    records = {r["user_id"]: r for r in handoff_lines(tmp_path / "camp.handoff.jsonl")}
    assert records[dana]["send_status"] == "skipped"
    assert records[dana]["error"]["code"] == "opted_out"  # type: ignore[index]
    [entry] = orjson.loads(listed.stdout)["opt_outs"]
    assert (entry["user_id"], entry["username"], entry["reason"]) == (dana, "dana_x", "asked")


async def test_an_opt_out_by_username_that_cannot_be_looked_up_stops_the_run(
    tmp_path: Path,
) -> None:
    """The provider answers no username lookup (here: nothing listens): the run cannot know
    @dana_x's id, so a row by id might be hers. It sends nothing, and says why (it sent the
    rows by id, dana's among them, with no word)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/api/v1"
    added = await bulkdm("optouts", "--sandbox", "--add", "@dana_x", "--reason", "asked")
    campaign = write_campaign(tmp_path, [{"recipient_id": "4242", "first_name": "D"}],
                              url=closed)
    done = await bulkdm("run", str(campaign), "--progress", "none")
    assert added.code == 0, added.stderr
    assert done.code == 4, done.stdout + done.stderr
    assert "the opt-out of @dana_x could not be looked up (connect_failed)" in done.stdout
    with closing(sqlite3.connect(tmp_path / "camp.bulkdm.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0  # none tried
