"""Which files a campaign gets: one naming rule for every command, and a handoff file that
another campaign's checkpoint never rewrites. The real CLI, the sandbox over 127.0.0.1."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from bulkdm.naming import beside, campaign_stem, checkpoint_of
from bulkdm.sandbox import Sandbox, running_sandbox
from tests.clikit import bulkdm, handoff_lines, kill_when, start, write_campaign


def _campaign(folder: Path, name: str, rows: list[dict[str, object]], url: str) -> Path:
    """``NAME.jsonl`` and ``NAME.toml`` in ``folder``, written by :func:`write_campaign`."""
    scratch = folder / f"_{name}"
    scratch.mkdir()
    written = write_campaign(scratch, rows, url=url)
    campaign = written.rename(folder / f"{name}.jsonl")
    (scratch / "camp.toml").rename(folder / f"{name}.toml")
    return campaign


def test_the_name_is_the_file_name_without_its_last_suffix() -> None:
    assert campaign_stem(Path("c.retry.jsonl")) == "c.retry"
    assert campaign_stem(Path("c.retry.bulkdm.sqlite")) == "c.retry"
    assert beside(Path("d/c.retry.jsonl"), ".handoff.jsonl") == Path("d/c.retry.handoff.jsonl")
    assert checkpoint_of(Path("c.retry.jsonl")) == Path("c.retry.bulkdm.sqlite")
    assert checkpoint_of(Path("x.db")) == Path("x.db")


async def test_a_two_dot_campaign_has_its_own_handoff_status_and_export(tmp_path: Path) -> None:
    first_rows: list[dict[str, object]] = [
        {"recipient_id": str(61_000 + i), "first_name": "a"} for i in range(10)]
    retry_rows: list[dict[str, object]] = [
        {"recipient_id": str(62_000 + i), "first_name": "b"} for i in range(2)]
    async with running_sandbox() as sb:
        first = _campaign(tmp_path, "c", first_rows, sb.xquik_url)
        retry = _campaign(tmp_path, "c.retry", retry_rows, sb.xquik_url)
        done = await bulkdm("run", str(first), "--progress", "none")
        assert done.code == 0, done.stdout + done.stderr
        handoff = tmp_path / "c.handoff.jsonl"
        before = handoff.read_bytes()
        again = await bulkdm("run", str(retry), "--progress", "none")
        assert again.code == 0, again.stdout + again.stderr
    assert handoff.read_bytes() == before and len(handoff_lines(handoff)) == 10
    assert len(handoff_lines(tmp_path / "c.retry.handoff.jsonl")) == 2
    status = await bulkdm("status", str(retry))
    assert status.code == 0 and ": 2 rows" in status.stdout, status.stdout
    exported = await bulkdm("export", str(retry))
    assert exported.code == 0, exported.stderr
    assert len(handoff_lines(tmp_path / "c.retry.export.jsonl")) == 2


async def test_another_campaigns_handoff_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"recipient_id": str(63_000 + i), "first_name": "a"}
                                     for i in range(3)]
    async with running_sandbox() as sb:
        first = _campaign(tmp_path, "c", rows, sb.xquik_url)
        other = _campaign(tmp_path, "d", rows[:1], sb.xquik_url)
        assert (await bulkdm("run", str(first), "--progress", "none")).code == 0
        handoff = tmp_path / "c.handoff.jsonl"
        before = handoff.read_bytes()
        refused = await bulkdm("run", str(other), "--out", str(handoff), "--progress", "none")
        delivered = len(sb.ledger)
    assert refused.code == 1, refused.stdout + refused.stderr
    assert "did not write" in refused.stderr and "--out" in refused.stderr
    assert handoff.read_bytes() == before
    assert delivered == 3  # refused before anything was sent


async def test_a_checkpoint_may_go_back_to_a_handoff_file_it_wrote(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"recipient_id": str(67_000 + i), "first_name": "a"}
                                     for i in range(2)]
    other = tmp_path / "other.jsonl"
    async with running_sandbox() as sb:
        campaign = _campaign(tmp_path, "c", rows, sb.xquik_url)
        first = await bulkdm("run", str(campaign), "--out", str(other), "--progress", "none")
        second = await bulkdm("run", str(campaign), "--progress", "none")
        third = await bulkdm("run", str(campaign), "--out", str(other), "--progress", "none")
    assert (first.code, second.code, third.code) == (0, 0, 0), third.stderr
    assert len(handoff_lines(other)) == len(handoff_lines(tmp_path / "c.handoff.jsonl")) == 2


async def test_a_replan_before_any_send_keeps_its_handoff_file(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"recipient_username": "bad name!", "first_name": "a"}]
    campaign = _campaign(tmp_path, "c", rows, "http://127.0.0.1:9/api/v1")
    first = await bulkdm("run", str(campaign), "--progress", "none")
    assert first.code == 3, first.stdout + first.stderr  # nothing to send: one invalid row
    campaign.write_bytes(b'{"recipient_username": "also bad!", "first_name": "b"}\n'
                         b'{"recipient_username": "bad again!", "first_name": "c"}\n')
    again = await bulkdm("run", str(campaign), "--progress", "none")
    assert again.code == 3, again.stdout + again.stderr
    lines = handoff_lines(tmp_path / "c.handoff.jsonl")
    assert [(r["line"], r["send_status"]) for r in lines] == [(1, "invalid"), (2, "invalid")]


async def test_an_empty_campaign_file_stops_a_script_before_run(tmp_path: Path) -> None:
    # an export that went wrong upstream leaves an empty file: "rows read 0" and exit 0 let a
    # script go on to `run`, which then "completed" having sent nothing
    write_campaign(tmp_path, [], url="http://127.0.0.1:9/api/v1")
    settings = str(tmp_path / "camp.toml")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_bytes(b"recipient_username,first_name\r\n")
    empty_jsonl = await bulkdm("plan", str(tmp_path / "camp.jsonl"))
    empty_csv = await bulkdm("plan", str(tmp_path / "empty.csv"), "--config", settings)
    header_only = await bulkdm("plan", str(tmp_path / "header.csv"), "--config", settings)
    assert empty_jsonl.code == 3 and "rows read       0" in empty_jsonl.stdout
    assert empty_csv.code == 1
    assert empty_csv.stderr == (f"error: {tmp_path / 'empty.csv'}: the file is empty: a CSV "
                                "campaign starts with a header row naming its columns "
                                "(recipient_username or recipient_id)\n")
    assert header_only.code == 3, header_only.stderr


async def _copied_mid_campaign(sb: Sandbox, original: Path, copy: Path, *,
                               first_id: int) -> Path:
    """A GetXAPI campaign of 8 rows in ``original`` (a folder), killed after 2 DMs, and its
    folder copied to ``copy``: the campaign file in ``original``."""
    rows: list[dict[str, object]] = [{"recipient_id": str(first_id + i), "first_name": "a"}
                                     for i in range(8)]
    campaign = write_campaign(original, rows, url=sb.getxapi_url, provider="getxapi",
                              sender_rate="2/1s")
    await kill_when(await start("run", str(campaign), "--progress", "none"),
                    lambda: len(sb.ledger) >= 2)
    shutil.copytree(original, copy)
    return campaign


async def test_a_copy_of_a_campaigns_folder_is_refused_while_the_original_is_there(
    tmp_path: Path,
) -> None:
    """A folder copied in the middle of a campaign (after a kill -9), both copies run: each
    sent the rows left, so those recipients got the DM twice (GetXAPI has no idempotency)."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    async with running_sandbox() as sb:
        campaign = await _copied_mid_campaign(sb, original, copy, first_id=68_000)
        finished = await bulkdm("run", str(campaign), "--progress", "none")
        copied = await bulkdm("run", str(copy / "camp.jsonl"), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert finished.code == 0, finished.stdout + finished.stderr
    assert copied.code == 1, copied.stdout + copied.stderr
    assert f"is a copy of the campaign at {original.resolve() / 'camp.bulkdm.sqlite'}" \
        in copied.stderr, copied.stderr
    assert set(delivered.values()) == {1} and len(delivered) == 8


async def test_a_moved_folder_goes_on_when_its_handoff_file_starts_with_many_unsent_rows(
    tmp_path: Path,
) -> None:
    """The rows skipped at the plan come first in the handoff file, with no idempotency key:
    past a thousand of them the moved folder's own handoff file was refused as another
    campaign's (QA)."""
    rows: list[dict[str, object]] = [{"recipient_id": str(69_000 + i), "first_name": "a"}
                                     for i in range(1_100)]
    rows.append({"recipient_id": "69999", "first_name": "a", "consent": "opted_in:2026-10-01"})
    active, archive = tmp_path / "active", tmp_path / "archive"
    active.mkdir()
    async with running_sandbox() as sb:
        campaign = write_campaign(active, rows, url=sb.xquik_url)
        settings = active / "camp.toml"
        settings.write_text(settings.read_text().replace(
            'name = "camp"\n', 'name = "camp"\nrequire_consent = true\n', 1))
        first = await bulkdm("run", str(campaign), "--progress", "none")
        active.rename(archive)
        again = await bulkdm("run", str(archive / "camp.jsonl"), "--progress", "none")
    assert first.code == 0, first.stdout + first.stderr
    assert again.code == 0, again.stdout + again.stderr
    assert len(handoff_lines(archive / "camp.handoff.jsonl")) == 1_101


async def test_a_copy_made_after_the_plan_and_before_any_run_is_refused(tmp_path: Path) -> None:
    """Planned, then the folder copied: both copies would send every row."""
    rows: list[dict[str, object]] = [{"recipient_id": str(68_500 + i), "first_name": "a"}
                                     for i in range(3)]
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    async with running_sandbox() as sb:
        campaign = write_campaign(original, rows, url=sb.xquik_url)
        planned = await bulkdm("plan", str(campaign))
        shutil.copytree(original, copy)
        copied = await bulkdm("run", str(copy / "camp.jsonl"), "--progress", "none")
        first = await bulkdm("run", str(campaign), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert planned.code == 0 and first.code == 0, planned.stdout + first.stdout + first.stderr
    assert copied.code == 1 and "is a copy of the campaign at" in copied.stderr, copied.stderr
    assert set(delivered.values()) == {1} and len(delivered) == 3


async def test_a_copy_whose_original_was_renamed_is_refused_once_the_other_ran(
    tmp_path: Path,
) -> None:
    """Copied mid-campaign, then the original renamed (archived): no original at its old
    place, so both copies went on and each sent the rows left (QA). The account ledger keeps
    which checkpoint of the campaign ran last; the other copy is refused."""
    original, copy, archived = tmp_path / "original", tmp_path / "copy", tmp_path / "archived"
    original.mkdir()
    async with running_sandbox() as sb:
        await _copied_mid_campaign(sb, original, copy, first_id=68_700)
        original.rename(archived)
        first = await bulkdm("run", str(copy / "camp.jsonl"), "--progress", "none")
        second = await bulkdm("run", str(archived / "camp.jsonl"), "--progress", "none")
        delivered = Counter(d.recipient_id for d in sb.ledger)
    assert first.code == 0, first.stdout + first.stderr
    assert second.code == 1, second.stdout + second.stderr
    assert "that another copy has run since" in second.stderr, second.stderr
    assert set(delivered.values()) == {1} and len(delivered) == 8
