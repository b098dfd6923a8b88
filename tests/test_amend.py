"""``--amend``: an edited campaign file or settings applied to the running campaign. Sent rows
are never sent again; unsent rows follow the file. The real CLI in a subprocess, the sandbox
over 127.0.0.1, a real checkpoint file."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import orjson

from bulkdm.runlock import RunLock
from bulkdm.sandbox import running_sandbox
from tests.clikit import bulkdm, env_for, handoff_lines, kill_when, start, write_campaign


def _rows(count: int, base: int) -> list[dict[str, object]]:
    return [{"recipient_id": str(base + i), "text": f"Hello {i}", "external_id": f"c-{i}"}
            for i in range(count)]


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


async def test_an_edit_after_a_run_is_refused_then_amended_without_resending(
    tmp_path: Path,
) -> None:
    rows = _rows(10, 70_000)
    env = env_for(("s1",))
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.getxapi_url, provider="getxapi",
                                  senders=("s1",))
        first = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        assert first.code == 0, first.stdout + first.stderr
        edited = [dict(r) for r in rows]
        edited[3]["text"] = "Hello 3, with the typo fixed"
        new_row: dict[str, object] = {"recipient_id": "70999", "text": "Hi new",
                                      "external_id": "c-new"}
        _write(campaign, [new_row, *edited])  # a line inserted on top shifts every line
        refused = await bulkdm("run", str(campaign), "--progress", "none", env=env)
        amended = await bulkdm("run", str(campaign), "--amend", "--progress", "none", env=env)
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert refused.code == 1
    assert "--amend" in refused.stderr and "new --checkpoint" not in refused.stderr
    assert amended.code == 0, amended.stdout + amended.stderr
    assert "amend: 1 added, 0 changed" in amended.stdout, amended.stdout
    assert "line 5 (external_id c-3): sent; its recipient, text or media changed" \
        in amended.stdout
    assert delivered == Counter({**{str(r["recipient_id"]): 1 for r in rows}, "70999": 1})
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert len(lines) == 11 and {r["send_status"] for r in lines} == {"sent"}
    # every record names its row's line in the edited file, those sent before the edit too
    assert {r["external_id"]: r["line"] for r in lines} \
        == {"c-new": 1, **{f"c-{i}": i + 2 for i in range(10)}}


async def test_amend_mid_campaign_replans_only_unsent_rows(tmp_path: Path) -> None:
    rows = _rows(8, 71_000)
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="4/1s")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "[campaign]\n", '[campaign]\nsuppression = ["optout.txt"]\n'), encoding="utf-8")
        optout = tmp_path / "optout.txt"
        optout.write_text("# opted out\n", encoding="utf-8")
        stopped = await kill_when(await start("run", str(campaign), "--progress", "none"),
                                  lambda: len(sb.ledger) >= 2, signum=signal.SIGINT)
        assert stopped.code == 4, stopped.stdout + stopped.stderr
        sent = {str(d.recipient_id) for d in sb.ledger}
        unsent = [r for r in rows if r["recipient_id"] not in sent]
        assert len(unsent) >= 4
        changed, removed, opted_out = unsent[0], unsent[1], unsent[2]
        sent_row = next(r for r in rows if r["recipient_id"] in sent)
        edited = [dict(r, text="Hello again") if r is changed or r is sent_row else r
                  for r in rows if r is not removed]
        _write(campaign, [{"recipient_id": "71999", "text": "Hi new"}, *edited])
        optout.write_text(f"{opted_out['recipient_id']}\n", encoding="utf-8")
        refused = await bulkdm("plan", str(campaign))
        planned = await bulkdm("plan", str(campaign), "--amend")
        done = await bulkdm("run", str(campaign), "--progress", "none")
        ledger = list(sb.ledger)
    assert refused.code == 1 and "--amend" in refused.stderr, refused.stderr
    assert planned.code == 0, planned.stderr
    summary = ("amend: 1 added, 2 changed (planned again), 1 removed (now skipped), 1 newly "
               "suppressed")
    assert summary in planned.stdout, planned.stdout
    assert f"(external_id {sent_row['external_id']}): sent" in planned.stdout
    assert done.code == 0, done.stdout + done.stderr
    delivered = Counter(str(d.recipient_id) for d in ledger)
    expected = {str(r["recipient_id"]) for r in rows} - {removed["recipient_id"],
                                                          opted_out["recipient_id"]}
    assert delivered == Counter(expected | {"71999"})  # each once; none of the two
    texts = {str(d.recipient_id): d.text for d in ledger}
    assert texts[str(changed["recipient_id"])] == "Hello again"
    assert texts[str(sent_row["recipient_id"])] == sent_row["text"]  # not sent again
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    by_id = {r["external_id"]: r for r in lines}
    assert len(lines) == len(by_id) == 9  # every row once: 8 planned (one removed, still shown) + 1 added
    assert by_id[removed["external_id"]]["error"]["code"] == "removed"  # type: ignore[index]
    assert by_id[opted_out["external_id"]]["error"]["code"] == "suppressed"  # type: ignore[index]


async def test_an_opt_out_added_mid_campaign_applies_at_once(tmp_path: Path) -> None:
    rows = _rows(6, 72_000)
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="3/1s")
        settings = tmp_path / "camp.toml"
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "[campaign]\n", '[campaign]\nsuppression = ["optout.txt"]\n'), encoding="utf-8")
        optout = tmp_path / "optout.txt"
        optout.write_text("", encoding="utf-8")
        stopped = await kill_when(await start("run", str(campaign), "--progress", "none"),
                                  lambda: len(sb.ledger) >= 2, signum=signal.SIGINT)
        assert stopped.code == 4, stopped.stdout + stopped.stderr
        sent = {d.recipient_id for d in sb.ledger}
        opted_out = next(str(r["recipient_id"]) for r in rows if r["recipient_id"] not in sent)
        optout.write_text(f"{opted_out}  # asked to stop\n", encoding="utf-8")
        refused = await bulkdm("run", str(campaign), "--progress", "none")
        amended = await bulkdm("run", str(campaign), "--amend", "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert refused.code == 1 and "the settings changed" in refused.stderr, refused.stderr
    assert "--amend" in refused.stderr
    assert amended.code == 0, amended.stdout + amended.stderr
    assert "1 changed (planned again)" in amended.stdout, amended.stdout
    assert "1 newly suppressed" in amended.stdout
    assert delivered == Counter({str(r["recipient_id"]) for r in rows} - {opted_out})
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert len(lines) == 6
    assert [r["error"]["code"] for r in lines if r["user_id"] == opted_out] == ["suppressed"]  # type: ignore[index]


async def test_a_fixed_invalid_row_is_sent_and_the_handoff_file_rewritten(tmp_path: Path) -> None:
    rows = _rows(3, 73_000)
    broken = [*rows[:1], {**rows[1], "recipient_id": "not-an-id"}, *rows[2:]]
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, broken, url=sb.xquik_url)
        first = await bulkdm("run", str(campaign), "--progress", "none")
        assert first.code == 3, first.stdout + first.stderr  # done, with an invalid row
        _write(campaign, rows)
        amended = await bulkdm("run", str(campaign), "--amend", "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert amended.code == 0, amended.stdout + amended.stderr
    assert "0 added, 1 changed" in amended.stdout, amended.stdout
    assert delivered == Counter(str(r["recipient_id"]) for r in rows)
    lines = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert sorted((r["external_id"], r["send_status"]) for r in lines) == [
        ("c-0", "sent"), ("c-1", "sent"), ("c-2", "sent")]  # the stale "invalid" line is gone


async def test_plan_amend_waits_for_no_run(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, _rows(2, 74_000), url="http://127.0.0.1:9/api/v1")
    with RunLock(tmp_path / "camp.bulkdm.sqlite"):  # as a run holds it
        refused = await bulkdm("plan", str(campaign), "--amend")
        looked = await bulkdm("plan", str(campaign))  # not an amend: as before
    assert refused.code == 1 and "in use by another run" in refused.stderr, refused.stderr
    assert looked.code == 0, looked.stderr


async def test_the_report_counts_a_removed_row_apart(tmp_path: Path) -> None:
    rows = _rows(3, 75_000)
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, sender_rate="1/1s")
        stopped = await kill_when(await start("run", str(campaign), "--progress", "none"),
                                  lambda: len(sb.ledger) >= 1, signum=signal.SIGINT)
        assert stopped.code == 4, stopped.stdout + stopped.stderr
        sent = {d.recipient_id for d in sb.ledger}
        _write(campaign, [r for r in rows if r["recipient_id"] in sent])
        planned = await bulkdm("plan", str(campaign), "--amend", "--json")
    assert planned.code == 0, planned.stderr
    report = orjson.loads(planned.stdout)
    assert report["status"] == "amended"
    assert report["rows"]["read"] == len(sent) and report["rows"]["removed"] == 3 - len(sent)
    assert report["rows"]["skipped"] == 0 and report["invalid_by_reason"] == {}


async def test_a_sent_rows_sender_removed_from_the_settings_is_said_as_such(
    tmp_path: Path,
) -> None:
    """A row pinned to s2 was sent; s2 then left the settings: the amend kept the row, saying
    its recipient, text or media changed, which it had not (QA)."""
    rows = [{**r, "sender": "s2"} for r in _rows(2, 75_000)] + _rows(2, 75_100)
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, rows, url=sb.xquik_url, senders=("s1", "s2"))
        first = await bulkdm("run", str(campaign), "--progress", "none",
                             env=env_for(("s1", "s2")))
        settings = tmp_path / "camp.toml"
        text = settings.read_text()
        settings.write_text(text[:text.index('[[senders]]\naccount = "s2"')])
        amended = await bulkdm("plan", str(campaign), "--amend")
    assert first.code == 0, first.stdout + first.stderr
    assert "line 1 (external_id c-0): sent; its line is now invalid (sender: " \
        in amended.stdout, amended.stdout
    assert "its recipient, text or media changed" not in amended.stdout, amended.stdout
