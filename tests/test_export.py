"""``bulkdm export`` end to end: the real CLI in a subprocess after a real run against the sandbox;
the files are read back with the libraries their users read them with (openpyxl, DuckDB)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import orjson
import pytest
from openpyxl import load_workbook

from bulkdm.checkpoint import Checkpoint
from bulkdm.sandbox import Faults, SandboxConfig, running_sandbox
from bulkdm.schema import MIGRATIONS, SCHEMA_VERSION
from bulkdm.workbook import xlsx_bytes
from tests.clikit import bulkdm, env_for, handoff_lines, wait_for, write_campaign

ROWS: list[dict[str, object]] = [
    {"recipient_id": "1893726451029384192", "external_id": "00123", "consent": "opted_in:2026-10-01",
     "text": "-20% today only, {first_name}", "first_name": "Amy"},
    {"recipient_username": "ben", "external_id": "9007199254740993", "consent": "form:42",
     "text": "=HYPERLINK(\"http://x\",\"y\") مرحبا 👋"},
    {"recipient_username": "cat", "first_name": "Cat", "text": '@team "quoted", a;b\nline two'},
    {"recipient_username": "nf_gone", "first_name": "Gil", "external_id": "c-4"},
]
ID_COLUMNS = ("message_id", "user_id", "external_id", "idempotency_key")


async def _sent_campaign(folder: Path) -> tuple[Path, dict[int, dict[str, object]]]:
    async with running_sandbox() as sb:
        campaign = write_campaign(folder, ROWS, url=sb.xquik_url)
        done = await bulkdm("run", str(campaign), "--progress", "none")
    assert done.code == 3, done.stdout + done.stderr  # one recipient does not exist
    records = {int(str(r["line"])): r for r in handoff_lines(folder / "camp.handoff.jsonl")}
    return campaign, records


async def test_xlsx_export_shows_every_id_and_text_exactly(tmp_path: Path) -> None:
    campaign, records = await _sent_campaign(tmp_path)
    out = tmp_path / "big.xlsx"
    done = await bulkdm("export", str(campaign), "--out", str(out))  # the format from the name
    assert done.code == 0, done.stderr
    book = load_workbook(out)
    assert book.sheetnames == ["dm_send"]
    sheet = book["dm_send"]
    assert sheet.freeze_panes == "A2"
    header = [c.value for c in sheet[1]]
    for cells in sheet.iter_rows(min_row=2):
        row = dict(zip(header, cells, strict=True))
        record = records[int(str(row["line"].value))]
        for column in ID_COLUMNS:
            if record[column] is not None:
                assert row[column].data_type == "s" and row[column].value == record[column]
        assert row["text"].data_type == "s" and row["text"].value == record["text"]
        assert row["consent"].value == record["consent"]
        assert isinstance(row["finished_at"].value, datetime)
        if record["send_status"] == "sent":
            assert isinstance(row["sent_at"].value, datetime)
            sent = datetime.fromisoformat(str(record["sent_at"])).replace(tzinfo=None)
            assert abs((row["sent_at"].value - sent).total_seconds()) < 0.001
    assert sheet.max_row == len(ROWS) + 1
    assert all(c.data_type != "f" for r in sheet.iter_rows() for c in r)  # nothing runs


async def test_crm_csv_loads_in_duckdb_with_ids_as_text_and_texts_exact(tmp_path: Path) -> None:
    campaign, records = await _sent_campaign(tmp_path)
    out = tmp_path / "crm.csv"
    done = await bulkdm("export", str(campaign), "--format", "csv", "--delimiter", ";",
                        "--out", str(out))
    assert done.code == 0, done.stderr
    assert not out.read_bytes().startswith(b"\xef\xbb\xbf")  # a BOM only when asked for
    types = dict.fromkeys((*ID_COLUMNS, "text", "consent"), "VARCHAR")
    with duckdb.connect() as db:
        relation = db.read_csv(str(out), header=True, sep=";", quotechar='"', escapechar='"',
                               dtype=types)
        names = relation.columns
        loaded = [dict(zip(names, values, strict=True)) for values in relation.fetchall()]
    assert len(loaded) == len(ROWS)
    for row in loaded:
        record = records[int(row["line"])]
        for column in (*ID_COLUMNS, "text", "consent"):
            assert row[column] == record[column], column
        assert str(row["text"]).encode() == str(record["text"]).encode()  # byte-identical
    assert {r["text"] for r in loaded} >= {"-20% today only, Amy", '@team "quoted", a;b\nline two'}


async def test_formula_safe_csv_and_bom_are_opt_in(tmp_path: Path) -> None:
    campaign, _ = await _sent_campaign(tmp_path)
    out = tmp_path / "sheet.csv"
    done = await bulkdm("export", str(campaign), "--out", str(out), "--bom", "--formula-safe")
    assert done.code == 0, done.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    texts = {r["text"] for r in csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))}
    assert "'-20% today only, Amy" in texts
    # a retry file's texts are sent as they are: the ' would go out too, so it was not added
    # (and the flag silently ignored); now the pair is refused, saying why
    retry = tmp_path / "retry.csv"
    refused = await bulkdm("export", str(campaign), "--status", "failed", "--as-campaign",
                           "--format", "csv", "--formula-safe", "--out", str(retry))
    assert refused.code == 1, refused.stdout + refused.stderr
    assert "'--formula-safe': cannot go with --as-campaign" in refused.stderr
    assert not retry.exists()


async def test_out_dash_writes_to_stdout(tmp_path: Path) -> None:
    campaign, records = await _sent_campaign(tmp_path)
    done = await bulkdm("export", str(campaign), "--out", "-", "--status", "sent", "failed")
    assert done.code == 0, done.stderr
    assert not (tmp_path / "-").exists()
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["line"] for r in lines) == sorted(records)
    assert "wrote 4 rows to stdout" in done.stderr


async def test_a_v3_checkpoint_gains_the_original_column(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("".join(step + ";" for step in MIGRATIONS[:3]) + "PRAGMA user_version = 3;")
        db.execute("INSERT INTO rows (line, state) VALUES (1, 'invalid')")
    checkpoint = await Checkpoint.open(path)
    try:
        assert await checkpoint.originals([1]) == {}
    finally:
        await checkpoint.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [r[1] for r in db.execute("PRAGMA table_info(rows)")]
    assert "original" in columns


async def test_retry_file_of_failed_rows_runs_with_the_readme_command(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"recipient_username": f"user{i}", "first_name": f"U{i}"} for i in range(3)]
    rows.append({"recipient_username": "@@bad", "first_name": "X"})  # invalid: not retried
    async with running_sandbox(SandboxConfig(faults=Faults(fail_rate=1.0))) as sb:
        # every send refused with a 503 until the rows give up: that would trip the same-error
        # breaker (a provider outage stops a run); this test is about the retry file
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, extra="same_error_sample = 0")
        first = await bulkdm("run", str(campaign), "--progress", "none")
        assert first.code == 3, first.stdout + first.stderr
        exported = await bulkdm("export", str(campaign), "--status", "failed", "--as-campaign")
        assert exported.code == 0, exported.stderr
        retry = tmp_path / "camp.retry.jsonl"
        assert f"run them with: bulkdm run {retry} --config {tmp_path / 'camp.toml'}" in (
            exported.stdout)
        alone = await bulkdm("run", str(retry), "--progress", "none")
        sb.reconfigure(SandboxConfig())
        again = await bulkdm("run", str(retry), "--config", str(tmp_path / "camp.toml"),
                             "--progress", "none")
        delivered = sorted(d.text for d in sb.ledger)
    assert alone.code == 1 and f"pass --config {tmp_path / 'camp.toml'}" in alone.stderr
    assert again.code == 0, again.stdout + again.stderr
    assert delivered == ["Hello U0", "Hello U1", "Hello U2"]
    assert len(handoff_lines(tmp_path / "camp.handoff.jsonl")) == 4  # the first run's file kept
    assert len(handoff_lines(tmp_path / "camp.retry.handoff.jsonl")) == 3


async def test_a_retry_file_of_skipped_rows_leaves_out_duplicates(tmp_path: Path) -> None:
    # a duplicate's recipient got the message of the earlier line: a retry file holding it
    # messaged them a second time (the new campaign has its own idempotency keys)
    rows: list[dict[str, object]] = [
        {"recipient_username": "amy", "first_name": "Amy", "consent": "form"},
        {"recipient_username": "bo", "first_name": "Bo"},
        {"recipient_username": "AMY", "first_name": "Amy again", "consent": "form"},
        # opted out: a retry file offered them for sending again (by a ledger maybe off)
        {"recipient_username": "zed", "first_name": "Zed", "consent": "form"},
    ]
    opted = await bulkdm("optouts", "--sandbox", "--add", "@zed", "--reason", "said stop")
    assert opted.code == 0, opted.stderr
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text().replace(
            "[campaign]\n", "[campaign]\nrequire_consent = true\n", 1))
        assert (await bulkdm("run", str(campaign), "--progress", "none")).code == 0
        exported = await bulkdm("export", str(campaign), "--status", "skipped", "--as-campaign")
        assert exported.code == 0, exported.stderr
        # a sent row is refused, saying why, not counted among the duplicates
        sent = await bulkdm("export", str(campaign), "--status", "sent", "skipped",
                            "--as-campaign", "--out", str(tmp_path / "sent.jsonl"))
        assert sent.code == 1 and "line 1 is sent" in sent.stderr, sent.stdout + sent.stderr
        retry = tmp_path / "camp.retry.jsonl"
        kept = [orjson.loads(line)["recipient_username"] for line in retry.read_bytes().splitlines()]
        again = await bulkdm("run", str(retry), "--config", str(tmp_path / "camp.toml"),
                             "--progress", "none")
        delivered = sorted(d.text for d in sb.ledger)
    assert kept == ["bo"]  # skipped for want of consent: provably not messaged
    assert "wrote 1 rows" in exported.stdout
    assert "left out 1 skipped duplicate(s)" in exported.stdout
    assert "left out 1 opted-out recipient(s)" in exported.stdout
    assert again.code == 0, again.stdout + again.stderr
    assert delivered == ["Hello Amy"]  # bo is skipped again (no consent); amy once


async def test_export_refuses_to_write_over_the_campaigns_own_files(tmp_path: Path) -> None:
    # an export over the checkpoint lost the record of what was sent (the next run planned a
    # new campaign: everyone messaged again); over the campaign or settings, its identity
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, [{"recipient_username": "amy", "first_name": "A"}],
                                  url=sb.xquik_url)
        assert (await bulkdm("run", str(campaign), "--progress", "none")).code == 0
        own = {name: (tmp_path / name).read_bytes()
               for name in ("camp.jsonl", "camp.toml", "camp.bulkdm.sqlite")}
        refused = {}
        for name in [*own, "camp.bulkdm.sqlite-wal"]:
            for extra in ((), ("--as-campaign",), ("--records", "replies")):
                done = await bulkdm("export", str(campaign), "--out", str(tmp_path / name), *extra)
                refused[(name, extra)] = (done.code, done.stderr)
        status = await bulkdm("status", str(campaign))
    assert {code for code, _ in refused.values()} == {1}
    assert "camp.jsonl is the campaign's campaign file; export to another file" in (
        refused[("camp.jsonl", ())][1])
    assert "is the campaign's checkpoint" in refused[("camp.bulkdm.sqlite", ("--as-campaign",))][1]
    assert all((tmp_path / name).read_bytes() == data for name, data in own.items())
    assert status.code == 0 and "sent" in status.stdout


async def test_export_refuses_the_handoff_and_replies_files_a_run_writes(tmp_path: Path) -> None:
    # an export over the handoff file while a run appended to it replaced the file: the run's
    # later records went to the old inode and the handoff file ended short
    handoff, answers = tmp_path / "crm" / "handoff.jsonl", tmp_path / "answers.jsonl"
    handoff.parent.mkdir()
    async with running_sandbox(SandboxConfig(reply_after_ms=10)) as sb:
        campaign = write_campaign(tmp_path, [{"recipient_username": "reply_amy",
                                              "first_name": "A"}], url=sb.xquik_url)
        ran = await bulkdm("run", str(campaign), "--out", str(handoff), "--progress", "none")
        assert ran.code == 0, ran.stdout + ran.stderr
        await wait_for(lambda: len(sb.replies) >= 1)
        assert (await bulkdm("replies", str(campaign), "--out", str(answers))).code == 0
        own = {path: path.read_bytes() for path in (handoff, answers)}
        refused = {(path.name, extra): await bulkdm("export", str(campaign), "--out", str(path),
                                                    *extra)
                   for path in (handoff, answers, tmp_path / "camp.handoff.jsonl")
                   for extra in ((), ("--records", "replies"))}
    assert {d.code for d in refused.values()} == {1}, [d.stderr for d in refused.values()]
    assert f"{handoff} is the campaign's handoff file; export to another file" in (
        refused[("handoff.jsonl", ())].stderr)
    assert f"{answers} is the campaign's replies file" in (
        refused[("answers.jsonl", ("--records", "replies"))].stderr)
    assert all(path.read_bytes() == data for path, data in own.items())
    assert not (tmp_path / "camp.handoff.jsonl").exists()


async def test_fix_file_of_invalid_rows_is_fixed_by_editing_one_field(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"recipient_username": "amy", "first_name": "Amy", "external_id": "c-1", "tier": "gold"},
        {"recipient_username": "ben", "text": "Hi {nickname}", "external_id": "c-2"},
        {"recipient_username": "@@bad", "first_name": "Cy", "external_id": "c-3"},
    ]
    settings = str(tmp_path / "camp.toml")
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url)
        with campaign.open("ab") as file:  # and a line that is not JSON
            file.write(b'{"recipient_username": "dot", "first_name": "Dot"\n')
        await bulkdm("run", str(campaign), "--progress", "none")
        fix = tmp_path / "fix.csv"
        exported = await bulkdm("export", str(campaign), "--status", "failed", "invalid",
                                "--as-campaign", "--out", str(fix))
        assert exported.code == 0, exported.stderr
        header, *lines = list(csv.reader(io.StringIO(fix.read_bytes().decode(), newline="")))
        assert header == ["recipient_username", "text", "external_id", "first_name",
                          "bulkdm_line", "bulkdm_error"]
        ben, cy, dot = (dict(zip(header, line, strict=True)) for line in lines)
        assert ben["text"] == "Hi {nickname}" and cy["first_name"] == "Cy"
        assert dot["bulkdm_line"] == '{"recipient_username": "dot", "first_name": "Dot"'
        ben["text"] = "Hi Ben"  # each fix is one field
        cy["recipient_username"] = "cy"
        with fix.open("w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, header, lineterminator="\r\n")
            writer.writeheader()
            writer.writerows([ben, cy])  # Dot is fixed in the JSONL fix file below
        again = await bulkdm("run", str(fix), "--config", settings, "--progress", "none")
        fix_jsonl = tmp_path / "dot.jsonl"
        assert (await bulkdm("export", str(campaign), "--status", "invalid", "--as-campaign",
                             "--out", str(fix_jsonl))).code == 0
        last = fix_jsonl.read_bytes().splitlines()[-1]
        assert last == b'{"recipient_username": "dot", "first_name": "Dot"'  # as it was written
        fix_jsonl.write_bytes(last + b"}\n")
        from_jsonl = await bulkdm("run", str(fix_jsonl), "--config", settings, "--progress", "none")
        texts = sorted(d.text for d in sb.ledger)
    assert again.code == 0, again.stdout + again.stderr
    assert from_jsonl.code == 0, from_jsonl.stdout + from_jsonl.stderr
    assert texts == ["Hello Amy", "Hello Cy", "Hello Dot", "Hi Ben"]
    fixed_records = handoff_lines(tmp_path / "fix.handoff.jsonl")
    assert sorted(str(r["external_id"]) for r in fixed_records) == ["c-2", "c-3"]
    # the first run's record of the row that only missed {nickname} still names its recipient
    (ben_record,) = [r for r in handoff_lines(tmp_path / "camp.handoff.jsonl")
                     if r["external_id"] == "c-2"]
    assert (ben_record["send_status"], ben_record["recipient_username"]) == ("invalid", "ben")
    assert ben_record["error"] == {"code": "missing_variable", "field": "nickname",
                                   "message": "the text uses {nickname} but the row has no "
                                              "'nickname' value"}


async def test_status_after_completion_lists_the_senders(tmp_path: Path) -> None:
    campaign, _ = await _sent_campaign(tmp_path)
    done = await bulkdm("status", str(campaign))
    assert done.code == 0, done.stderr
    assert "  sender alice: done, 3 sent, 0 left" in done.stdout.splitlines()
    as_json = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
    assert as_json["senders"] == [{"account": "alice", "sent": 3, "waiting": 0, "state": "done",
                                   "reason": None, "next_due_at": None}]
    # every state, 0 included: a script reading counts["failed"] got a KeyError
    assert as_json["counts"] == {"pending": 0, "sending": 0, "unknown": 0, "sent": 3,
                                 "failed": 1, "skipped": 0, "invalid": 0}
    assert "  failed 1, sent 3" in done.stdout.splitlines()  # the text: those there are


async def test_csv_flags_are_refused_for_other_formats_and_tsv_is_tabbed(tmp_path: Path) -> None:
    campaign, _ = await _sent_campaign(tmp_path)
    refused = await bulkdm("export", str(campaign), "--out", str(tmp_path / "x.xlsx"), "--bom")
    assert refused.code == 1
    assert refused.stderr == "error: command line, key '--bom': is for CSV exports, not xlsx\n"
    tsv = tmp_path / "x.tsv"
    assert (await bulkdm("export", str(campaign), "--out", str(tsv))).code == 0
    assert tsv.read_bytes().startswith(b"record_type\tsend_status\t")


def test_xlsx_of_no_rows_has_the_header_and_a_control_character_is_replaced() -> None:
    empty = load_workbook(io.BytesIO(b"".join(xlsx_bytes([]))))
    assert empty.sheetnames == ["dm_send"]
    assert next(empty["dm_send"].iter_rows(values_only=True))[:3] == (
        "record_type", "send_status", "message_id")
    record = {"record_type": "dm_send", "text": "bell\x07 and\ttab\nline", "line": 1}
    book = load_workbook(io.BytesIO(b"".join(xlsx_bytes([record]))))
    header, values = list(book["dm_send"].iter_rows(values_only=True))
    row = dict(zip(header, values, strict=True))
    assert row["text"] == "bell\ufffd and\ttab\nline" and row["line"] == 1


@pytest.mark.parametrize("command", [("status",), ("export", "--out", "-")])
async def test_a_reader_that_leaves_early_gets_no_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # `bulkdm status c.jsonl | head -3`: head exits, the next write fails with EPIPE, and
    # Python printed a BrokenPipeError traceback (at its exit, for a short output)
    campaign, _ = await _sent_campaign(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: every write fails
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bulkdm", command[0], str(campaign), *command[1:],
            stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env_for())
    finally:
        os.close(write_end)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 141
    assert stderr.decode() == ""


async def test_every_state_status_shows_can_be_exported(tmp_path: Path) -> None:
    # `status` counts `sending` rows (after a kill -9), and `export --status sending` was a
    # usage error: the rows status showed could not be listed
    from bulkdm.cli import build_parser
    from bulkdm.rows import RowState

    states = [state.value for state in RowState]
    assert build_parser().parse_args(["export", "c.jsonl", "--status", *states]).status == states
    campaign = write_campaign(tmp_path, [{"recipient_username": "amy", "first_name": "A"}],
                              url="http://127.0.0.1:9")
    assert (await bulkdm("plan", str(campaign))).code == 0
    done = await bulkdm("export", str(campaign), "--status", "sending", "--out", "-")
    status = orjson.loads((await bulkdm("status", str(campaign), "--json")).stdout)
    assert set(status["counts"]) == set(states)
    assert done.code == 0 and "wrote 0 rows to stdout" in done.stderr, done.stderr


async def test_an_invalid_recipients_row_keeps_its_consent(tmp_path: Path) -> None:
    # a bad username dropped the row's consent from its records (consent: null), though a row
    # invalid for any other reason kept it: the CRM lost the basis it had recorded
    rows: list[dict[str, object]] = [
        {"recipient_username": "bad user", "text": "hi", "consent": "opted_in:2026-10-01"},
        {"recipient_username": "ok_two", "text": "{missing}", "consent": "form:7"},
    ]
    campaign = write_campaign(tmp_path, rows, url="http://127.0.0.1:9")
    assert (await bulkdm("plan", str(campaign))).code == 3  # no row is valid
    done = await bulkdm("export", str(campaign), "--status", "invalid", "--out", "-")
    assert done.code == 0, done.stderr
    records = {r["line"]: r for r in map(orjson.loads, done.stdout.splitlines())}
    assert records[1]["error"]["code"] == "bad_username"
    assert (records[1]["consent"], records[2]["consent"]) == ("opted_in:2026-10-01", "form:7")
