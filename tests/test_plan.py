from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from bulkdm.checkpoint import Checkpoint, Expect, claim
from bulkdm.errors import CheckpointMismatchError
from bulkdm.keys import idempotency_key, key_scope, text_sha256
from bulkdm.planner import MAX_TEXT_CHARS, ensure_plan
from bulkdm.rates import Rate
from bulkdm.recipients import Recipient, RecipientProblem, parse_recipient
from bulkdm.report import estimate_cost, estimate_duration, human_duration, send_time_s
from bulkdm.rows import UNBOUND, RowRecord, RowState
from bulkdm.settings import (
    CampaignSettings,
    CostSettings,
    ProviderName,
    ProviderSettings,
    SenderSettings,
    Settings,
    load_settings,
)

#: the first bytes of a PNG file (the planner reads them to tell a picture from another file)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(8)
SETTINGS = """
[campaign]
name = "welcome"
template = "Hi {first_name}!"
suppression = ["dnc.txt"]
[provider]
base_url = "http://127.0.0.1:8787/api/v1"
[[senders]]
account = "one"
[[senders]]
account = "two"
"""


def jsonl(*rows: dict[str, object]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "c.toml").write_text(SETTINGS)
    (tmp_path / "dnc.txt").write_text("# never\n@Spam_Sam\n999  # by id\n")
    return tmp_path


@pytest.fixture
async def checkpoint(tmp_path: Path) -> AsyncIterator[Checkpoint]:
    opened = await Checkpoint.open(tmp_path / "c.bulkdm.sqlite")
    try:
        yield opened
    finally:
        await opened.close()


async def all_rows(checkpoint: Checkpoint) -> list[RowRecord]:
    return await checkpoint.rows_by_state(list(RowState), after_id=0, limit=10_000)


async def plan(
    workdir: Path, checkpoint: Checkpoint, data: bytes, extra: str = ""
) -> list[RowRecord]:
    campaign = workdir / "c.jsonl"
    campaign.write_bytes(data)
    (workdir / "c.toml").write_text(SETTINGS + extra)
    await ensure_plan(campaign, load_settings(campaign), checkpoint)
    return await all_rows(checkpoint)


# -- recipients -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "username", "expected"),
    [
        (None, "@Alice_1", Recipient(user_id=None, username="Alice_1")),
        ("00123", None, Recipient(user_id="123", username=None)),
        (
            "1234567890123456789",
            "alice",
            Recipient(user_id="1234567890123456789", username="alice"),
        ),
    ],
)
def test_recipients_are_canonical(
    user_id: str | None, username: str | None, expected: Recipient
) -> None:
    assert parse_recipient(user_id, username) == expected


def test_the_recipient_key_ignores_username_case_and_prefers_the_id() -> None:
    assert Recipient(user_id=None, username="ALICE").key == "u:alice"
    assert Recipient(user_id="7", username="alice").key == "id:7"


@pytest.mark.parametrize(
    ("user_id", "username", "field", "reason"),
    [
        (None, None, "recipient_username", "missing_recipient"),
        (None, "sixteen_chars_xx", "recipient_username", "bad_username"),
        (None, "bad-name", "recipient_username", "bad_username"),
        (None, "@", "recipient_username", "bad_username"),
        ("12a", None, "recipient_id", "bad_recipient_id"),
        ("0", None, "recipient_id", "bad_recipient_id"),
        ("18446744073709551616", None, "recipient_id", "bad_recipient_id"),
    ],
)
def test_bad_recipients_are_values(
    user_id: str | None, username: str | None, field: str, reason: str
) -> None:
    problem = parse_recipient(user_id, username)
    assert isinstance(problem, RecipientProblem)
    assert (problem.field, problem.reason) == (field, reason)


# -- planning ---------------------------------------------------------------------------------


async def test_a_valid_row_is_planned_with_its_key_and_sender(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    [row] = await plan(
        workdir,
        checkpoint,
        jsonl(
            {
                "recipient_username": "@Ana",
                "first_name": "Ana",
                "external_id": 77,
                "consent": "opted_in:2026-10-01",
                "sender": "one",
            }
        ),
    )
    digest = text_sha256("Hi Ana!")
    assert (row.line, row.state, row.recipient_username, row.recipient_id) == (
        1,
        RowState.PENDING,
        "Ana",
        None,
    )
    assert (row.text, row.text_sha256, row.sender) == ("Hi Ana!", digest, "one")
    assert (row.external_id, row.consent) == ("77", "opted_in:2026-10-01")
    meta = await checkpoint.plan_meta()
    assert meta is not None and len(meta.campaign_id) == 32  # the campaign's identity
    assert row.idempotency_key == idempotency_key(
        campaign=key_scope("welcome", meta.campaign_id), recipient_key="u:ana", sender="one",
        text_digest=digest,
    )


async def test_a_row_without_a_sender_column_is_planned_unbound(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    """Late binding: the account (and the key, which names it) is chosen at the claim."""
    wanted: list[dict[str, object]] = [{"recipient_username": f"u{i}", "first_name": "A"}
                                       for i in range(4)]
    rows = await plan(workdir, checkpoint, jsonl(*wanted))
    assert [(r.state, r.sender, r.idempotency_key, r.bound_by_claim) for r in rows] == \
        [(RowState.PENDING, None, None, False)] * 4
    assert await checkpoint.sender_counts() == {UNBOUND: 4}


async def test_a_19_digit_id_given_as_a_json_number_is_kept_exact(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    rows = await plan(
        workdir,
        checkpoint,
        jsonl({"recipient_id": 1234567890123456789, "first_name": "A"})
        + b'{"recipient_id": 1.5e18, "first_name": "B"}\n',
    )
    assert rows[0].recipient_id == "1234567890123456789"
    assert (rows[1].state, rows[1].field, rows[1].reason) == (
        RowState.INVALID,
        "recipient_id",
        "bad_recipient_id",
    )


async def test_emoji_and_right_to_left_text_are_stored_unchanged(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    text = "مرحبا {first_name}! 🎉 שלום 👩🏽‍💻"
    [row] = await plan(
        workdir,
        checkpoint,
        jsonl({"recipient_username": "farah", "first_name": "فرح", "text": text}),
    )
    assert row.text == "مرحبا فرح! 🎉 שלום 👩🏽‍💻"
    assert row.text_sha256 == text_sha256(row.text)


async def test_unpinned_rows_are_left_unbound_and_pinned_ones_stay(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    rows = await plan(
        workdir,
        checkpoint,
        jsonl(
            {"recipient_username": "a1", "first_name": "A"},
            {"recipient_username": "a2", "first_name": "A", "sender": "@two"},
            {"recipient_username": "bad name", "first_name": "A"},
            {"recipient_username": "a3", "first_name": "A"},
            {"recipient_username": "a4", "first_name": "A"},
            {"recipient_username": "a5", "first_name": "A", "sender": "three"},
        ),
    )
    assert [(r.line, r.sender) for r in rows] == [
        (1, None),
        (2, "two"),
        (3, None),
        (4, None),
        (5, None),
        (6, None),
    ]
    assert [r.idempotency_key is None for r in rows[:2]] == [True, False]
    assert (rows[5].state, rows[5].field, rows[5].reason) == (
        RowState.INVALID,
        "sender",
        "unknown_sender",
    )


async def test_duplicates_suppression_and_consent_are_skipped(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    rows = await plan(
        workdir,
        checkpoint,
        jsonl(
            {"recipient_username": "ana", "first_name": "A", "consent": "yes"},
            {"recipient_username": "spam_sam", "first_name": "S", "consent": "yes"},
            {"recipient_id": 999, "first_name": "N", "consent": "yes"},
            {"recipient_username": "@ANA", "first_name": "A", "consent": "yes"},
            {"recipient_username": "bo", "first_name": "B"},
            {"recipient_id": "5", "recipient_username": "cy", "first_name": "C", "consent": "x"},
            {"recipient_id": "5", "first_name": "C", "consent": "x"},
        ),
        extra="",
    )
    got = [(r.line, r.state, r.reason, r.duplicate_of_line) for r in rows]
    assert got == [
        (1, RowState.PENDING, None, None),
        (2, RowState.SKIPPED, "suppressed", None),
        (3, RowState.SKIPPED, "suppressed", None),
        (4, RowState.SKIPPED, "duplicate", 1),
        (5, RowState.PENDING, None, None),
        (6, RowState.PENDING, None, None),
        (7, RowState.SKIPPED, "duplicate", 6),
    ]


async def test_rows_without_consent_are_skipped_when_consent_is_required(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    campaign = workdir / "c.jsonl"
    campaign.write_bytes(
        jsonl(
            {"recipient_username": "ana", "first_name": "A", "consent": "opted_in:2026-10-01"},
            {"recipient_username": "bo", "first_name": "B", "consent": " "},
        )
    )
    settings = load_settings(campaign, overrides={"campaign.require_consent": True})
    report = await ensure_plan(campaign, settings, checkpoint)
    rows = await all_rows(checkpoint)
    assert [(r.state, r.field, r.reason) for r in rows] == [
        (RowState.PENDING, None, None),
        (RowState.SKIPPED, "consent", "no_consent"),
    ]
    assert (report.rows.no_consent, report.skipped_by_reason) == (1, {"no_consent": 1})


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"recipient_username": "ana"}, "first_name", "missing_variable"),
        ({"recipient_username": "ana", "text": "Hi {user.name}"}, "text", "bad_placeholder"),
        ({"recipient_username": "ana", "text": "Hi {items[0]}"}, "text", "bad_placeholder"),
        (
            {"recipient_username": "ana", "text": "   ", "first_name": "  "},
            "first_name",
            "missing_variable",
        ),
        ({"recipient_username": "ana", "text": "{x}", "x": " \t"}, "x", "missing_variable"),
        (
            {"recipient_username": "ana", "text": "x" * (MAX_TEXT_CHARS + 1)},
            "text",
            "text_too_long",
        ),
        ({"recipient_username": "ana", "text": 5}, "text", "bad_field"),
        (
            {"recipient_username": "ana", "first_name": "A", "media": "missing.png"},
            "media",
            "media_not_found",
        ),
        ({"recipient_username": "no way", "first_name": "A"}, "recipient_username", "bad_username"),
        ({"first_name": "A"}, "recipient_username", "missing_recipient"),
    ],
)
async def test_invalid_rows_name_the_field_and_reason(
    workdir: Path, checkpoint: Checkpoint, row: dict[str, object], field: str, reason: str
) -> None:
    rows = await plan(
        workdir,
        checkpoint,
        jsonl({"recipient_username": "ok", "first_name": "O"}, row | {"external_id": "E9"}),
    )
    assert rows[0].state is RowState.PENDING
    assert (rows[1].line, rows[1].state, rows[1].field, rows[1].reason) == (
        2,
        RowState.INVALID,
        field,
        reason,
    )
    assert rows[1].external_id == "E9"  # carried to the output even for an invalid row
    assert rows[1].message


async def test_text_of_exactly_the_limit_is_valid(workdir: Path, checkpoint: Checkpoint) -> None:
    [row] = await plan(
        workdir, checkpoint, jsonl({"recipient_username": "ana", "text": "é" * MAX_TEXT_CHARS})
    )
    assert row.state is RowState.PENDING


async def test_media_is_resolved_beside_the_campaign_and_refused_on_getxapi(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    (workdir / "pic.png").write_bytes(PNG)
    data = jsonl({"recipient_username": "ana", "first_name": "A", "media": "pic.png"})
    [row] = await plan(workdir, checkpoint, data)
    assert row.media == str((workdir / "pic.png").resolve())
    [row] = await plan(workdir, checkpoint, data, extra="")
    (workdir / "c.toml").write_text(SETTINGS.replace("[provider]", '[provider]\nname = "getxapi"'))
    await ensure_plan(workdir / "c.jsonl", load_settings(workdir / "c.jsonl"), checkpoint)
    [row] = await all_rows(checkpoint)
    assert (row.state, row.field, row.reason) == (RowState.INVALID, "media", "media_unsupported")


@pytest.mark.parametrize("other", [
    {},  # plain rows only: the totals come from the row counts
    {"recipient_id": "42"},
    {"recipient_username": "cid", "recipient_id": "43"},
    {"media": "pic.png"},
    {"text": "Own text with media", "media": "pic.png"},
])
async def test_the_plan_report_counts_lookups_and_uploads_as_the_rows_say(
    workdir: Path, checkpoint: Checkpoint, other: dict[str, object]
) -> None:
    # the planner may skip reading the pending rows for these totals (plain rows need a
    # lookup each and no upload); a row with an id or media must still be counted
    (workdir / "pic.png").write_bytes(PNG)
    rows: list[dict[str, object]] = [
        {"recipient_username": f"user_{n}", "first_name": "A"} for n in range(5)]
    campaign = workdir / "c.jsonl"
    campaign.write_bytes(jsonl(*rows, {"recipient_username": "user_0", "first_name": "A"},
                               {"recipient_username": "dee", "first_name": "D", **other}))
    settings = load_settings(campaign)
    report = await ensure_plan(campaign, settings, checkpoint)
    totals = await checkpoint.plan_totals(senders=len(settings.senders))
    assert (report.rows.pending, report.cost.lookups, report.cost.media_uploads) == (
        totals.pending, totals.lookups, totals.media_uploads)
    assert (totals.pending, totals.lookups, totals.media_uploads) == (
        6, 5 if "recipient_id" in other else 6, 1 if "media" in other else 0)


async def test_a_picture_of_rows_bound_to_no_sender_is_counted_once_for_each_sender_that_may_send_it(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    # a media id belongs to the account that uploaded it: three unbound rows with one picture,
    # spread over two senders, upload it twice (the plan said once: its cost and a spend cap's
    # forecast were short)
    (workdir / "pic.png").write_bytes(PNG)
    (workdir / "other.png").write_bytes(PNG)
    campaign = workdir / "c.jsonl"
    unbound: list[dict[str, object]] = [
        {"recipient_username": f"user_{n}", "first_name": "A", "media": "pic.png"}
        for n in range(3)]
    campaign.write_bytes(jsonl(*unbound))
    settings = load_settings(campaign)
    report = await ensure_plan(campaign, settings, checkpoint)
    assert report.cost.media_uploads == 2
    # one row bound to "one" with the picture: the unbound ones may need it from "two" only;
    # a picture on a single unbound row is one upload whichever sender takes it
    campaign.write_bytes(jsonl(
        {"recipient_username": "bound", "first_name": "B", "media": "pic.png", "sender": "one"},
        *unbound, {"recipient_username": "solo", "first_name": "S", "media": "other.png"}))
    report = await ensure_plan(campaign, settings, checkpoint)
    assert report.cost.media_uploads == 3


async def test_a_malformed_line_in_the_middle_leaves_the_rest_planned(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    data = (
        jsonl({"recipient_username": "a1", "first_name": "A"})
        + b'{"recipient_username": "a2",\n'
        + jsonl({"recipient_username": "a3", "first_name": "A"})
    )
    rows = await plan(workdir, checkpoint, data)
    assert [(r.line, r.state, r.reason) for r in rows] == [
        (1, RowState.PENDING, None),
        (2, RowState.INVALID, "invalid_json"),
        (3, RowState.PENDING, None),
    ]


async def test_csv_from_a_spreadsheet_is_planned(workdir: Path, checkpoint: Checkpoint) -> None:
    campaign = workdir / "c.csv"
    campaign.write_bytes(
        b"\xef\xbb\xbfrecipient_username;recipient_id;first_name;text\r\n"
        b'ana;;Ana;"Hi {first_name};\r\nsee you"\r\n'
        b";1234567890123456789;Bo;\r\n"
        b"spam_sam;;Sam;\r\n"
    )
    (workdir / "c.toml").write_text(SETTINGS)
    report = await ensure_plan(campaign, load_settings(campaign), checkpoint)
    rows = await all_rows(checkpoint)
    assert [(r.line, r.state, r.recipient_id, r.text) for r in rows] == [
        (2, RowState.PENDING, None, "Hi Ana;\r\nsee you"),
        (4, RowState.PENDING, "1234567890123456789", "Hi Bo!"),
        (5, RowState.SKIPPED, None, "Hi Sam!"),
    ]
    assert report.rows.suppressed == 1


# -- plan twice -------------------------------------------------------------------------------


async def test_planning_twice_keeps_the_plan_and_changes_replace_it(
    workdir: Path, checkpoint: Checkpoint
) -> None:
    campaign = workdir / "c.jsonl"
    campaign.write_bytes(jsonl({"recipient_username": "ana", "first_name": "A"}))
    settings = load_settings(campaign)
    assert (await ensure_plan(campaign, settings, checkpoint)).status == "planned"
    before = await all_rows(checkpoint)
    assert (await ensure_plan(campaign, settings, checkpoint)).status == "unchanged"
    assert await all_rows(checkpoint) == before
    campaign.write_bytes(
        jsonl(
            {"recipient_username": "ana", "first_name": "A"},
            {"recipient_username": "bo", "first_name": "B"},
        )
    )
    report = await ensure_plan(campaign, settings, checkpoint)
    assert (report.status, report.rows.read) == ("replaced", 2)


@pytest.mark.parametrize(
    ("change", "named"), [("campaign", "the campaign file"), ("settings", "the settings")]
)
async def test_a_change_after_sending_began_is_refused(
    workdir: Path, checkpoint: Checkpoint, change: str, named: str
) -> None:
    campaign = workdir / "c.jsonl"
    campaign.write_bytes(jsonl({"recipient_username": "ana", "first_name": "A"}))
    await ensure_plan(campaign, load_settings(campaign), checkpoint)
    [row] = await all_rows(checkpoint)
    await checkpoint.submit(
        claim(row_id=row.id, attempt=1, sender="one", key="k", key_rotation=0, at_s=1.0,
              expect=Expect(state=row.state, sender=row.sender))
    )
    if change == "campaign":
        campaign.write_bytes(jsonl({"recipient_username": "ana", "first_name": "Ann"}))
    else:
        (workdir / "c.toml").write_text(SETTINGS.replace("Hi {first_name}!", "Hello {first_name}!"))
    with pytest.raises(CheckpointMismatchError, match=f"{named} changed") as caught:
        await ensure_plan(campaign, load_settings(campaign), checkpoint)
    # the way out it names keeps the campaign's state; a new checkpoint would send it all again
    assert "--amend" in str(caught.value) and "new --checkpoint" not in str(caught.value)
    assert [r.state for r in await all_rows(checkpoint)] == [RowState.SENDING]


# -- estimates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "windows", "seconds"),
    [
        (0, [Rate(count=15, period_s=900)], 0.0),
        (1, [Rate(count=15, period_s=900)], 0.0),
        (15, [Rate(count=15, period_s=900)], 14 * 60.0),  # spread: one a minute
        (16, [Rate(count=15, period_s=900)], 900.0),
        (500, [Rate(count=15, period_s=900), Rate(count=500, period_s=86400)], 499 * 60.0),
        (501, [Rate(count=15, period_s=900), Rate(count=500, period_s=86400)], 86400.0),
    ],
)
def test_send_time_is_the_slowest_window(count: int, windows: list[Rate], seconds: float) -> None:
    assert send_time_s(count, windows) == seconds


def test_the_duration_is_the_slowest_sender_or_the_shared_key() -> None:
    settings = Settings(
        campaign=CampaignSettings(name="c"),
        provider=ProviderSettings(rates=(Rate(count=10, period_s=60.0),)),
        senders=(
            SenderSettings(account="a", daily_cap=None),
            SenderSettings(account="b", daily_cap=None),
        ),
    )
    slow_sender = estimate_duration(settings, {"a": 31, "b": 1})
    assert (slow_sender.seconds, slow_sender.bound_by, slow_sender.human) == (
        2 * 900.0,
        "sender a",
        "30m",
    )
    fast = (Rate(count=100, period_s=60.0),)
    fast_senders = replace(settings, senders=tuple(replace(s, rates=fast) for s in settings.senders))
    busy_key = estimate_duration(fast_senders, {"a": 15, "b": 16})
    assert (busy_key.seconds, busy_key.bound_by) == (3 * 60.0, "api key")


def test_costs_follow_the_provider_price_list() -> None:
    xquik = Settings(
        campaign=CampaignSettings(name="c"), costs=CostSettings(xquik_credit_usd=0.001)
    )
    cost = estimate_cost(xquik, dms=100, media_uploads=3, lookups=40)
    assert (cost.credits, cost.usd) == (100 * 10 + 3 * 10 + 40, 1.07)
    getxapi = Settings(
        campaign=CampaignSettings(name="c"), provider=ProviderSettings(name=ProviderName.GETXAPI)
    )
    cost = estimate_cost(getxapi, dms=100, media_uploads=0, lookups=40)
    assert (cost.credits, cost.usd) == (None, 0.24)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.2, "1m"), (93784, "1d 2h 3m 4s"), (7200, "2h")]
)
def test_durations_read_like_a_person_writes_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# -- the CLI ----------------------------------------------------------------------------------


def bulkdm(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    return subprocess.run(
        [sys.executable, "-m", "bulkdm", *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def many_invalid(workdir: Path, count: int) -> Path:
    campaign = workdir / "c.jsonl"
    rows: list[dict[str, object]] = [
        {"recipient_username": f"user_{n}", "first_name": "U"} for n in range(5)
    ]
    rows += [{"recipient_username": f"bad name {n}", "first_name": "U"} for n in range(count)]
    campaign.write_bytes(jsonl(*rows))
    return campaign


def test_cli_plan_prints_the_report_and_needs_no_api_key(workdir: Path) -> None:
    many_invalid(workdir, 25)
    result = bulkdm("plan", "c.jsonl", cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == "campaign welcome (c.jsonl, provider xquik), new plan"
    assert "rows read       30" in lines
    assert "invalid         25  bad_username 25" in lines
    assert "per sender      one 3, two 2" in lines
    assert "invalid rows (first 20 of 25; --errors lists all):" in lines
    assert sum(line.startswith("  c.jsonl:") for line in lines) == 20
    assert (
        "  c.jsonl:6  recipient_username  bad_username  'bad name 0' is not an X username"
        in result.stdout
    )
    assert (workdir / "c.bulkdm.sqlite").is_file()


def test_cli_plan_errors_lists_all_and_json_is_one_object(workdir: Path) -> None:
    many_invalid(workdir, 25)
    result = bulkdm(
        "plan", "c.jsonl", "--errors", "--json", "--checkpoint", "other.sqlite", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["status"] == "planned"
    assert report["checkpoint_path"] == "other.sqlite"
    assert report["rows"] == {
        "read": 30,
        "valid": 5,
        "invalid": 25,
        "skipped": 0,
        "pending": 5,
        "duplicates": 0,
        "suppressed": 0,
        "no_consent": 0,
        "removed": 0,
    }
    assert report["invalid_by_reason"] == {"bad_username": 25}
    assert report["senders"] == {"one": 3, "two": 2}
    assert report["cost"] == {
        "provider": "xquik",
        "dms": 5,
        "media_uploads": 0,
        "lookups": 5,
        "credits": 55,
        "usd": 0.00825,
    }
    assert report["duration"]["seconds"] == 120.0  # three rows of one sender, a minute apart
    assert len(report["invalid_rows"]) == 25
    assert report["invalid_rows"][0] == {
        "line": 6,
        "field": "recipient_username",
        "reason": "bad_username",
        "message": "'bad name 0' is not an X username (1-15 letters, digits or _)",
    }
    assert report["invalid_rows_cut"] is False
    again = bulkdm("plan", "c.jsonl", "--json", "--checkpoint", "other.sqlite", cwd=workdir)
    unchanged = orjson.loads(again.stdout)
    assert unchanged["status"] == "unchanged"
    # without --errors the list stops at 20, and says so (a script could not tell before)
    assert len(unchanged["invalid_rows"]) == 20 and unchanged["invalid_rows_cut"] is True


def test_cli_bad_settings_exit_1_with_the_key_and_file(workdir: Path) -> None:
    many_invalid(workdir, 1)
    (workdir / "c.toml").write_text(SETTINGS + "[run]\nconcurency = 4\n")
    result = bulkdm("plan", "c.jsonl", cwd=workdir)
    assert result.returncode == 1
    assert result.stderr == (
        "error: c.toml, key 'run.concurency': unknown key; did you mean 'concurrency'?\n"
    )
    assert result.stdout == ""


def test_cli_a_missing_campaign_exits_1(workdir: Path) -> None:
    result = bulkdm("plan", "nope.jsonl", "--config", "c.toml", cwd=workdir)
    assert result.returncode == 1
    assert result.stderr == "error: nope.jsonl: no such file\n"


def test_cli_usage_errors_exit_2(workdir: Path) -> None:
    result = bulkdm("plan", cwd=workdir)
    assert result.returncode == 2
    assert "the following arguments are required: campaign" in result.stderr
    assert bulkdm("launch", cwd=workdir).returncode == 2


def test_cli_flags_override_the_settings_file(workdir: Path) -> None:
    campaign = workdir / "c.csv"
    campaign.write_text("recipient_username|first_name\nana|Ana\n")
    result = bulkdm("plan", "c.csv", "--delimiter", "|", "--name", "flagged", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert (report["campaign"], report["rows"]["pending"]) == ("flagged", 1)


def test_the_example_campaigns_plan(tmp_path: Path) -> None:
    examples = Path(__file__).parent.parent / "campaigns"
    for name in ("welcome.jsonl", "support.csv"):
        result = bulkdm(
            "plan",
            str(examples / name),
            "--json",
            "--checkpoint",
            str(tmp_path / f"{name}.sqlite"),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert report["rows"]["invalid"] > 0 and report["rows"]["duplicates"] == 1
        assert report["rows"]["suppressed"] >= 1 and report["rows"]["pending"] >= 5


def test_a_replan_while_another_connection_reads_the_checkpoint_is_stored(
    tmp_path: Path,
) -> None:
    """``status`` (or any script) reading the checkpoint while ``plan`` stores a plan: SQLite
    refuses the switch to the rollback journal the bulk load prefers, busy timeout or not, and
    the plan failed ('database is locked'). It goes through the WAL instead."""
    campaign = tmp_path / "c.jsonl"
    settings = tmp_path / "c.toml"
    settings.write_text('[campaign]\nname = "c"\ntemplate = "Hi {n}"\n[provider]\nname = '
                        '"xquik"\nbase_url = "http://127.0.0.1:9/api/v1"\n[[senders]]\n'
                        'account = "a"\nrate = "1/1s"\n', encoding="utf-8")
    env = {**os.environ, "XQUIK_API_KEY": "k"}
    for count in (3, 5):  # a plan, then the edited file planned again (nothing sent yet)
        campaign.write_bytes(b"".join(orjson.dumps({"recipient_id": str(100 + i), "n": i})
                                      + b"\n" for i in range(count)))
        if count == 5:
            reader = sqlite3.connect(tmp_path / "c.bulkdm.sqlite")
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM rows").fetchall()  # a read transaction, open
        done = subprocess.run([sys.executable, "-m", "bulkdm", "plan", str(campaign)],
                              capture_output=True, text=True, env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    reader.close()
    with closing(sqlite3.connect(tmp_path / "c.bulkdm.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 5
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_by_id_unchecked_against_usernames_in_a_suppression_file_are_named(
    tmp_path: Path,
) -> None:
    """A suppression file of usernames and a campaign of ids: the plan cannot tell who is
    who, and says so (the rows were planned to send as if checked)."""
    (tmp_path / "dnc.txt").write_text("@quiet_dan\n", encoding="utf-8")
    (tmp_path / "c.toml").write_text(
        '[campaign]\nname = "c"\ntemplate = "Hi"\nsuppression = ["dnc.txt"]\n[provider]\n'
        'name = "xquik"\nbase_url = "http://127.0.0.1:9/api/v1"\n[[senders]]\naccount = "a"\n'
        'rate = "1/1s"\n', encoding="utf-8")
    campaign = tmp_path / "c.jsonl"
    campaign.write_bytes(b'{"recipient_id": "42"}\n{"recipient_username": "ann"}\n')
    done = subprocess.run([sys.executable, "-m", "bulkdm", "plan", str(campaign)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "XQUIK_API_KEY": "k"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "suppression: 1 entries name a username only, and 1 rows give a user id only" \
        in done.stdout, done.stdout
