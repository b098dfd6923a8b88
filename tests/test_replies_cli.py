"""``bulkdm replies`` end to end: the real CLI in a subprocess, the sandbox's answering people
(``reply_*``, ``stopper_*``, ``polite_*``) over 127.0.0.1 with two messages a history page, a
real checkpoint and a real ledger file, both providers."""

from __future__ import annotations

import csv
import io
import signal
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from bulkdm.ledger import open_ledger
from bulkdm.rates import Rate
from bulkdm.replies import replies_lock
from bulkdm.sandbox import Faults, Sandbox, SandboxConfig, running_sandbox
from bulkdm.timestamps import iso_utc
from tests.clikit import bulkdm, env_for, handoff_lines, kill_when, start, wait_for, write_campaign

PEOPLE: list[dict[str, object]] = [
    {"recipient_username": "reply_ann", "first_name": "Ann", "external_id": "00017"},
    {"recipient_username": "stopper_bob", "first_name": "Bob", "external_id": "c-2"},
    {"recipient_username": "polite_cy", "first_name": "Cy", "external_id": "c-3"},
    {"recipient_username": "quiet_dan", "first_name": "Dan", "external_id": "c-4"},
]
#: reply_ann writes three messages, the others one each; quiet_dan none
ANSWERS = 5
SMALL_PAGES = SandboxConfig(history_page_size=2, reply_after_ms=50)


def _url(sb: Sandbox, provider: str) -> str:
    return sb.xquik_url if provider == "xquik" else sb.getxapi_url


async def _sent_and_answered(sb: Sandbox, folder: Path, provider: str) -> Path:
    campaign = write_campaign(folder, PEOPLE, url=_url(sb, provider), provider=provider)
    done = await bulkdm("run", str(campaign), "--progress", "none")
    assert done.code == 0, done.stdout + done.stderr
    await wait_for(lambda: len(sb.replies) >= ANSWERS)
    return campaign


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_replies_are_recorded_once_and_stop_skips_the_person_in_a_later_campaign(
        tmp_path: Path, provider: str) -> None:
    async with running_sandbox(SMALL_PAGES) as sb:
        first = tmp_path / "a"
        first.mkdir()
        campaign = await _sent_and_answered(sb, first, provider)
        estimate = await bulkdm("replies", str(campaign), "--dry-run", "--json")
        assert estimate.code == 0, estimate.stderr
        assert orjson.loads(estimate.stdout)["conversations"] == 4
        synced = [await bulkdm("replies", str(campaign), "--json") for _ in range(3)]
        later = tmp_path / "b"
        later.mkdir()
        second = write_campaign(later, PEOPLE, url=_url(sb, provider), provider=provider)
        planned = await bulkdm("plan", str(second), "--json")
    assert [s.code for s in synced] == [0, 0, 0], synced[0].stderr
    results = [orjson.loads(s.stdout) for s in synced]
    assert [r["new_replies"] for r in results] == [ANSWERS, 0, 0]
    assert results[0]["new_opt_outs"] == 2  # STOP, and the polite answer ("stop" is a word)
    assert results[0]["pages"] > 4  # reply_ann's conversation spans pages
    records = handoff_lines(first / "camp.replies.jsonl")
    assert len(records) == ANSWERS and len({r["message_id"] for r in records}) == ANSWERS
    by_user: dict[object, list[dict[str, object]]] = {}
    for record in records:
        by_user.setdefault(record["username"], []).append(record)
    assert {u: len(r) for u, r in by_user.items()} == {"reply_ann": 3, "stopper_bob": 1,
                                                       "polite_cy": 1}
    bob = by_user["stopper_bob"][0]
    assert (bob["record_type"], bob["text"], bob["opt_out"], bob["line"]) == (
        "dm_reply", "STOP", True, 2)
    assert by_user["reply_ann"][0]["external_id"] == "00017"
    assert not any(r["opt_out"] for r in by_user["reply_ann"])
    assert all(isinstance(r["message_id"], str) and r["received_at"] for r in records)
    # campaign B, planned afterwards, skips both who opted out; no manual step
    report = orjson.loads(planned.stdout)
    assert planned.code == 0 and report["rows"]["skipped"] == 2, planned.stdout
    assert report["skipped_by_reason"] == {"opted_out": 2}


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_a_sync_killed_midway_records_every_reply_once_on_the_next(
        tmp_path: Path, provider: str) -> None:
    slow = SandboxConfig(history_page_size=1, reply_after_ms=20)
    async with running_sandbox(slow) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, provider)
        reads_before = len(sb.replies)
        # slow reads: the kill lands after the first reply is recorded, before the last
        sb.reconfigure(replace(slow, faults=Faults(latency_ms=150)))
        killed = await kill_when(await start("replies", str(campaign), env=env_for()),
                                 lambda: _answers_recorded(tmp_path) >= 1, timeout_s=60)
        assert killed.code == -signal.SIGKILL
        assert 1 <= _answers_recorded(tmp_path) < ANSWERS
        again = await bulkdm("replies", str(campaign), "--json")
        once_more = await bulkdm("replies", str(campaign), "--json")
        assert len(sb.replies) == reads_before
    assert again.code == 0, again.stderr
    assert orjson.loads(once_more.stdout)["new_replies"] == 0
    records = handoff_lines(tmp_path / "camp.replies.jsonl")
    assert sorted(str(r["username"]) for r in records) == [
        "polite_cy", "reply_ann", "reply_ann", "reply_ann", "stopper_bob"]
    assert len({r["message_id"] for r in records}) == ANSWERS


def _answers_recorded(folder: Path) -> int:
    import sqlite3

    path = folder / "camp.bulkdm.sqlite"
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
    except sqlite3.Error:
        return 0


async def test_the_csv_of_replies_loads_with_ids_as_text_and_status_counts_them(
        tmp_path: Path) -> None:
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, "xquik")
        assert (await bulkdm("replies", str(campaign))).code == 0
    out = tmp_path / "replies.csv"
    exported = await bulkdm("export", str(campaign), "--format", "csv", "--records", "replies",
                            "--out", str(out))
    assert exported.code == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert len(rows) == ANSWERS
    ann = [r for r in rows if r["username"] == "reply_ann"]
    assert ann[0]["external_id"] == "00017"  # as written, not a number
    assert all(r["message_id"].isdigit() and len(r["message_id"]) > 15 for r in rows)
    assert {r["opt_out"] for r in rows} == {"true", "false"}
    assert {r["record_type"] for r in rows} == {"dm_reply"}
    status = await bulkdm("status", str(campaign), "--json")
    replies = orjson.loads(status.stdout)["replies"]
    assert replies == {"replies": ANSWERS, "answered": 3, "opted_out": 2, "reply_rate": 0.75}


async def test_a_stop_read_in_campaign_a_skips_the_person_in_running_campaign_c(
        tmp_path: Path) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    a.mkdir()
    c.mkdir()
    stopper = [{"recipient_username": "stopper_zoe", "first_name": "Zoe"}]
    many = [{"recipient_username": f"fan_{i}", "first_name": "F"} for i in range(24)]
    async with running_sandbox(SMALL_PAGES) as sb:
        first = write_campaign(a, stopper, url=sb.xquik_url)
        assert (await bulkdm("run", str(first), "--progress", "none")).code == 0
        await wait_for(lambda: len(sb.replies) >= 1)
        # campaign C: 24 fans then stopper_zoe, at 4 DMs a second (about 6 s)
        running = await start("run", str(write_campaign(c, [*many, *stopper], url=sb.xquik_url,
                                                         sender_rate="4/1s")),
                              "--progress", "none")
        await wait_for(lambda: len(sb.ledger) >= 3)
        synced = await bulkdm("replies", str(first), "--json")
        done = await running.wait()
        zoe = [d for d in sb.ledger if d.recipient_id == sb.directory.register("stopper_zoe")]
    assert synced.code == 0 and orjson.loads(synced.stdout)["new_opt_outs"] == 1, synced.stdout
    assert done == 0
    assert len(zoe) == 1  # campaign A's DM only
    records = {r["recipient_username"]: r for r in handoff_lines(c / "camp.handoff.jsonl")}
    assert records["stopper_zoe"]["send_status"] == "skipped"
    assert records["stopper_zoe"]["error"]["code"] == "opted_out"  # type: ignore[index]


@pytest.mark.parametrize("provider", ["xquik", "getxapi"])
async def test_reads_refused_with_retry_after_are_waited_out_and_read_again(
        tmp_path: Path, provider: str) -> None:
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, provider)
        # the provider allows 3 reads a second: more than that get a 429 with Retry-After
        sb.reconfigure(replace(SMALL_PAGES, read_rates=(Rate(count=3, period_s=1.0),)))
        synced = await bulkdm("replies", str(campaign), "--json")
    assert synced.code == 0, synced.stderr
    result = orjson.loads(synced.stdout)
    assert (result["new_replies"], result["unread"]) == (ANSWERS, {})
    assert len(handoff_lines(tmp_path / "camp.replies.jsonl")) == ANSWERS


async def test_run_reads_replies_while_it_sends_with_sync_every(tmp_path: Path) -> None:
    quiet = [{"recipient_username": f"quiet_{i}", "first_name": "Q"} for i in range(6)]
    async with running_sandbox(SandboxConfig(reply_after_ms=10)) as sb:
        campaign = write_campaign(tmp_path, [*PEOPLE, *quiet], url=sb.xquik_url,
                                  sender_rate="5/1s", extra='\n[replies]\nsync_every = "100ms"\n')
        done = await bulkdm("run", str(campaign), "--progress", "none")
        answered = len(sb.replies)
    assert done.code == 0, done.stdout + done.stderr
    assert answered == ANSWERS
    records = handoff_lines(tmp_path / "camp.replies.jsonl")
    assert sorted(str(r["username"]) for r in records) == [
        "polite_cy", "reply_ann", "reply_ann", "reply_ann", "stopper_bob"]


async def test_one_reader_of_replies_at_a_time(tmp_path: Path) -> None:
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, "xquik")
        with replies_lock(tmp_path / "camp.bulkdm.sqlite"):
            refused = await bulkdm("replies", str(campaign))
        after = await bulkdm("replies", str(campaign), "--json")
    assert refused.code == 1 and "in use" in refused.stderr, refused.stderr
    assert not (tmp_path / "camp.replies.jsonl").exists() or after.code == 0
    assert orjson.loads(after.stdout)["new_replies"] == ANSWERS


async def test_replies_out_refuses_the_campaigns_own_files(tmp_path: Path) -> None:
    # `--out camp.bulkdm.sqlite` emptied the checkpoint (the next run messaged everyone again);
    # over the campaign, settings or handoff file it replaced them with replies
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, "xquik")
        own = ("camp.bulkdm.sqlite", "camp.jsonl", "camp.toml", "camp.handoff.jsonl")
        before = {name: (tmp_path / name).read_bytes() for name in own}
        refused = {name: await bulkdm("replies", str(campaign), "--out", str(tmp_path / name))
                   for name in (*own, "camp.bulkdm.sqlite-wal")}
        status = await bulkdm("status", str(campaign), "--json")
    assert {d.code for d in refused.values()} == {1}, [d.stderr for d in refused.values()]
    assert "camp.bulkdm.sqlite is the campaign's checkpoint; write replies to another file" in (
        refused["camp.bulkdm.sqlite"].stderr)
    assert "is the campaign's handoff file" in refused["camp.handoff.jsonl"].stderr
    assert "is the campaign's checkpoint's wal" in refused["camp.bulkdm.sqlite-wal"].stderr
    assert {name: (tmp_path / name).read_bytes() for name in own} == before
    assert orjson.loads(status.stdout)["counts"]["sent"] == len(PEOPLE)


async def test_two_campaigns_never_write_one_replies_file(tmp_path: Path) -> None:
    # a second campaign's sync truncated the file the first had written, and back again
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shared = tmp_path / "crm-inbox.jsonl"
    async with running_sandbox(SMALL_PAGES) as sb:
        first = await _sent_and_answered(sb, a, "xquik")
        second = write_campaign(b, [{"recipient_username": "reply_eve", "first_name": "Eve"}],
                                url=sb.xquik_url)
        assert (await bulkdm("run", str(second), "--progress", "none")).code == 0
        await wait_for(lambda: len(sb.replies) >= ANSWERS + 1)
        wrote = await bulkdm("replies", str(first), "--out", str(shared))
        written = shared.read_bytes()
        other = await bulkdm("replies", str(second), "--out", str(shared))
        kept = shared.read_bytes()
        again = await bulkdm("replies", str(first), "--out", str(shared), "--json")
        default = await bulkdm("replies", str(first), "--json")
    assert wrote.code == 0, wrote.stderr
    assert other.code == 1, other.stdout + other.stderr
    assert f"{shared} holds records that {b / 'camp.bulkdm.sqlite'} did not write" in (
        other.stderr)
    assert kept == written and len(handoff_lines(shared)) == ANSWERS
    assert again.code == 0 and orjson.loads(again.stdout)["written"] == 0, again.stderr
    # going back to the default file writes it whole, from the first reply
    assert default.code == 0 and orjson.loads(default.stdout)["written"] == ANSWERS
    assert len(handoff_lines(a / "camp.replies.jsonl")) == ANSWERS


async def test_replies_that_read_nothing_exit_4_and_say_so(tmp_path: Path) -> None:
    # with the provider unreachable, `replies` printed "read 1 conversations" and exited 0: a
    # script took the sync for done
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = write_campaign(tmp_path, [{"recipient_username": "stopper_ida",
                                              "first_name": "I"}], url=sb.xquik_url)
        assert (await bulkdm("run", str(campaign), "--progress", "none")).code == 0
    synced = await bulkdm("replies", str(campaign))  # the sandbox is gone
    as_json = await bulkdm("replies", str(campaign), "--json")
    assert synced.code == 4, synced.stdout + synced.stderr
    assert "could not read any conversation (connect_failed 1)" in synced.stdout
    assert as_json.code == 4 and orjson.loads(as_json.stdout)["unread"] == {"connect_failed": 1}


def test_the_sandbox_command_sets_when_people_answer_and_the_page_size() -> None:
    from bulkdm.sandbox.cli import build_config, parse_args

    config = build_config(parse_args(["--reply-after", "1s", "--history-page-size", "2"]))
    assert (config.reply_after_ms, config.history_page_size) == (1000.0, 2)
    assert build_config(parse_args([])).history_page_size == 20


async def test_answers_to_a_dm_xquik_confirmed_late_are_all_read(tmp_path: Path) -> None:
    """Xquik answers 202 and the write action completes later (sent_at is its completedAt,
    after the DM and its answers): the read still reaches the DM, so no answer (and no STOP)
    is taken for older than the DM and left unread for good."""
    people = [{"recipient_username": "stopper_lou", "first_name": "L"},
              {"recipient_username": "reply_may", "first_name": "M"}]
    late = SandboxConfig(faults=Faults(accept_rate=1.0, latency_ms=700), reply_after_ms=50)
    async with running_sandbox(late) as sb:
        campaign = write_campaign(tmp_path, people, url=sb.xquik_url)
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "[retry]\n", '[retry]\nclock_skew = "0s"\n'), encoding="utf-8")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        await wait_for(lambda: len(sb.replies) >= 4)
        synced = await bulkdm("replies", str(campaign), "--json")
    assert done.code == 0, done.stdout + done.stderr
    sent_at = {r["recipient_username"]: r["sent_at"]
               for r in handoff_lines(tmp_path / "camp.handoff.jsonl")}
    answered = min(d.at_s for d in sb.replies)
    assert all(str(at) > iso_utc(answered) for at in sent_at.values())  # confirmed after answers
    result = orjson.loads(synced.stdout)
    assert (result["new_replies"], result["new_opt_outs"]) == (4, 1), synced.stdout


async def test_a_later_campaigns_dm_takes_the_answers_after_it(tmp_path: Path) -> None:
    """Spring, then autumn, write to the same person from the same account; each campaign's
    replies are the answers to its own DM, once (not autumn's answers again in spring's)."""
    spring, autumn = tmp_path / "spring", tmp_path / "autumn"
    spring.mkdir()
    autumn.mkdir()
    async with running_sandbox(SMALL_PAGES) as sb:
        first = write_campaign(spring, [{"recipient_username": "reply_kim", "text": "Spring?"}],
                               url=sb.xquik_url)
        assert (await bulkdm("run", str(first), "--progress", "none")).code == 0
        await wait_for(lambda: len(sb.replies) >= 3)
        early = await bulkdm("replies", str(first), "--json")  # one sync before autumn
        second = write_campaign(autumn, [{"recipient_username": "reply_kim", "text": "Autumn?"}],
                                url=sb.xquik_url)
        assert (await bulkdm("run", str(second), "--progress", "none")).code == 0
        await wait_for(lambda: len(sb.replies) >= 6)
        synced = [await bulkdm("replies", str(c), "--json") for c in (first, second)]
    assert orjson.loads(early.stdout)["new_replies"] == 3, early.stdout
    assert [orjson.loads(s.stdout)["new_replies"] for s in synced] == [0, 3], synced
    spring_ids = {r["message_id"] for r in handoff_lines(spring / "camp.replies.jsonl")}
    autumn_ids = {r["message_id"] for r in handoff_lines(autumn / "camp.replies.jsonl")}
    assert len(spring_ids) == len(autumn_ids) == 3 and not spring_ids & autumn_ids


async def test_a_lifted_opt_out_stays_lifted_when_the_stop_is_read_again(tmp_path: Path) -> None:
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, "xquik")
        first = await bulkdm("replies", str(campaign), "--json")
        lifted = await bulkdm("optouts", "--sandbox", "--remove", "@stopper_bob", "--reason",
                              "wrote to us again")
        again = await bulkdm("replies", str(campaign), "--json")
        listed = await bulkdm("optouts", "--sandbox", "--json")
    assert orjson.loads(first.stdout)["new_opt_outs"] == 2, first.stdout
    assert lifted.code == 0, lifted.stderr
    assert again.code == 0, again.stderr
    names = {o["username"] for o in orjson.loads(listed.stdout)["opt_outs"]}
    assert names == {"polite_cy"}, listed.stdout  # stopper_bob's old STOP did not come back


async def test_a_stop_answering_a_dm_in_doubt_opts_the_person_out(tmp_path: Path) -> None:
    """GetXAPI delivers the DM late and never answers: the row waits in doubt (``unknown``)
    for its conversation to be read an hour later, and the run pauses. Its DM was delivered
    and answered STOP: ``replies`` reads that conversation too, and the opt-out holds."""
    late = SandboxConfig(faults=Faults(late_rate=1.0, late_ms=100), reply_after_ms=50)
    async with running_sandbox(late) as sb:
        campaign = write_campaign(tmp_path, [{"recipient_username": "stopper_gil",
                                              "first_name": "G"}],
                                  url=sb.getxapi_url, provider="getxapi",
                                  extra='max_rest_wait = "1s"')
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            'settle_after = "50ms"', 'settle_after = "1h"').replace(
            "[provider]\n", '[provider]\nrequest_timeout = "1s"\n'), encoding="utf-8")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        status = await bulkdm("status", str(campaign), "--json")
        await wait_for(lambda: len(sb.replies) >= 1)
        synced = await bulkdm("replies", str(campaign), "--json")
        listed = await bulkdm("optouts", "--sandbox", "--json")
    assert done.code == 4, done.stdout + done.stderr  # paused: the row waits to be settled
    assert orjson.loads(status.stdout)["counts"]["unknown"] == 1, status.stdout
    assert len(sb.ledger) == 1  # it was delivered
    assert orjson.loads(synced.stdout)["new_opt_outs"] == 1, synced.stdout
    assert [o["username"] for o in orjson.loads(listed.stdout)["opt_outs"]] == ["stopper_gil"]


async def test_replies_after_the_settings_respell_the_senders_account(tmp_path: Path) -> None:
    """The settings' ``alice`` written ``ALICE`` (the same handle; the amend kept every row):
    replies read no conversation ('sender_not_configured', exit 4) and the STOPs were never
    recorded (QA)."""
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, tmp_path, "xquik")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace('account = "alice"',
                                                         'account = "ALICE"'))
        amended = await bulkdm("plan", str(campaign), "--amend")
        synced = await bulkdm("replies", str(campaign), "--json")
        status = await bulkdm("status", str(campaign))
    assert amended.code == 0, amended.stdout + amended.stderr
    assert synced.code == 0, synced.stdout + synced.stderr
    result = orjson.loads(synced.stdout)
    assert result["new_replies"] == ANSWERS and result["new_opt_outs"] == 2, result
    # one account, one line
    assert "sender ALICE:" in status.stdout and "sender alice:" not in status.stdout, \
        status.stdout


async def test_a_campaign_folder_moved_between_runs_goes_on_with_its_own_files(
        tmp_path: Path) -> None:
    """The folder moved (or synced to another machine) after a run and a replies sync: the next
    run and sync take the handoff and replies files they wrote for their own (both refused them
    as another campaign's, as they were recorded under the old folder)."""
    active, archive = tmp_path / "active", tmp_path / "archive"
    active.mkdir()
    async with running_sandbox(SMALL_PAGES) as sb:
        campaign = await _sent_and_answered(sb, active, "xquik")
        first = await bulkdm("replies", str(campaign), "--json")
        handoff = (active / "camp.handoff.jsonl").read_bytes()
        active.rename(archive)
        resumed = await bulkdm("run", str(archive / "camp.jsonl"), "--progress", "none")
        synced = await bulkdm("replies", str(archive / "camp.jsonl"), "--json")
    assert first.code == 0 and orjson.loads(first.stdout)["new_replies"] == ANSWERS
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert (archive / "camp.handoff.jsonl").read_bytes() == handoff
    assert synced.code == 0, synced.stdout + synced.stderr
    assert orjson.loads(synced.stdout)["new_replies"] == 0
    assert len(handoff_lines(archive / "camp.replies.jsonl")) == ANSWERS


async def test_replies_of_a_campaign_folder_moved_since_its_run(tmp_path: Path) -> None:
    """The campaign folder archived (moved) after its run: ``replies`` finds the settings and
    writes the replies file beside the campaign where it is now (it looked for the folder the
    plan was made in, which no longer exists, and crashed)."""
    active, archive = tmp_path / "active", tmp_path / "archive"
    active.mkdir()
    async with running_sandbox(SMALL_PAGES) as sb:
        await _sent_and_answered(sb, active, "xquik")
        active.rename(archive)
        synced = await bulkdm("replies", str(archive / "camp.jsonl"), "--json")
        by_checkpoint = await bulkdm("replies", str(archive / "camp.bulkdm.sqlite"), "--json")
    assert synced.code == 0, synced.stdout + synced.stderr
    assert orjson.loads(synced.stdout)["new_replies"] == ANSWERS
    assert len(handoff_lines(archive / "camp.replies.jsonl")) == ANSWERS
    assert by_checkpoint.code == 0, by_checkpoint.stdout + by_checkpoint.stderr
    assert not active.exists()


async def test_a_ledger_that_cannot_record_an_opt_out_stops_a_run_with_sync_every(
        tmp_path: Path) -> None:
    """The run reads replies while it sends; the ledger refuses the STOP's opt-out (a real
    SQLite error, from a trigger). The error ended the run as a crash of its task group
    (exit 1, 'error: ...', no summary, no resume command, the last run not recorded); it now
    stops as any ledger failure does, and the next run, the ledger mended, records the
    opt-out and sends the rest, each once."""
    ledger = tmp_path / "ledger.sqlite"
    await (await open_ledger(str(ledger), now_s=0.0)).close()
    with closing(sqlite3.connect(ledger)) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON opt_outs BEGIN "
                   "SELECT RAISE(ABORT, 'opt-outs refused'); END")
        db.commit()
    rows = [{"recipient_username": "stopper_bob", "first_name": "B"},
            *({"recipient_username": f"quiet_{i}", "first_name": "Q"} for i in range(20))]
    env = {**env_for(), "BULKDM_LEDGER": str(ledger)}
    async with running_sandbox(SandboxConfig(reply_after_ms=10)) as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="5/1s",
                                  extra='\n[replies]\nsync_every = "100ms"\n')
        stopped = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        status = await bulkdm("status", str(campaign), "--json")
        with closing(sqlite3.connect(ledger)) as db:
            db.execute("DROP TRIGGER refuse")
            db.commit()
        resumed = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        listed = await bulkdm("optouts", "--ledger", str(ledger), "--sandbox", "--json")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert stopped.code == 4, stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stderr and "error:" not in stopped.stderr, stopped.stderr
    stops = [line for line in stopped.stderr.splitlines() if line.startswith("bulkdm: stopped: ")]
    assert len(stops) == 1 and "the account ledger failed: opt-outs refused" in stops[0], stops
    assert "run the same command to resume" in stops[0]
    assert "To resume: bulkdm run " in stopped.stdout, stopped.stdout
    assert orjson.loads(status.stdout)["last_run"]["finish_reason"] == "interrupted"
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert len(delivered) == len(rows) and set(delivered.values()) == {1}
    names = {o["username"] for o in orjson.loads(listed.stdout)["opt_outs"]}
    assert names == {"stopper_bob"}, listed.stdout
