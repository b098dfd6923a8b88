"""The planner's bulk path: its shortcuts give the same values as the plain functions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import cast

import pytest

from bulkdm.campaign import RawRow, RowError
from bulkdm.checkpoint import (
    _PLAN_COLUMNS,
    Checkpoint,
    PlainValues,
    PlanMeta,
    PlanRow,
    PlanValues,
    RowParams,
    pending_params,
    pending_values,
    plain_as_bulk,
    row_params,
)
from bulkdm.keys import idempotency_key, idempotency_keys, text_sha256
from bulkdm.planner import Planner, Suppression
from bulkdm.recipients import Recipient, parse_recipient, recipient_values
from bulkdm.rows import PlannedRow, RowState
from bulkdm.settings import CampaignSettings, SenderSettings, Settings

META = PlanMeta(
    campaign="t",
    campaign_path="t.jsonl",
    campaign_sha256="c",
    settings_sha256="s",
    provider="xquik",
    created_at="2026-11-23T00:00:00Z",
)


@pytest.mark.parametrize("campaign", ["welcome", "spring sale ✿", ""])
def test_campaign_keys_equal_the_plain_keys(campaign: str) -> None:
    keys = idempotency_keys(campaign)
    for recipient, sender in [("u:alice", "one"), ("id:123", "two"), ("u:zoë", "@x")]:
        digest = text_sha256(f"Hi {recipient}")
        expected = idempotency_key(
            campaign=campaign, recipient_key=recipient, sender=sender, text_digest=digest
        )
        assert keys(recipient, sender, digest) == expected


def test_pending_params_equal_a_pending_planned_row() -> None:
    row = PlannedRow(
        line=7,
        state=RowState.PENDING,
        recipient_id="42",
        recipient_username="Ana",
        text="Hi Ana",
        text_sha256=text_sha256("Hi Ana"),
        sender="one",
        external_id="crm-7",
        media="/tmp/pic.png",
        consent="yes",
        idempotency_key="bdm1-x",
    )
    assert row.recipient_key is not None
    assert pending_params(
        7, "42", "Ana", row.recipient_key, "Hi Ana", text_sha256("Hi Ana"), "one", "crm-7",
        "/tmp/pic.png", "yes", "bdm1-x",
    ) == row_params(row)


@pytest.mark.parametrize(
    ("user_id", "username"),
    [
        (None, "@Alice_1"),
        ("00123", None),
        ("7", "alice"),
        (None, None),
        ("12a", None),
        ("0", "alice"),
        (None, "bad-name"),
        ("5", "sixteen_chars_xx"),
    ],
)
def test_recipient_values_agree_with_parse_recipient(
    user_id: str | None, username: str | None
) -> None:
    parsed = parse_recipient(user_id, username)
    values = recipient_values(user_id, username)
    if isinstance(parsed, Recipient):
        assert values == (parsed.user_id, parsed.username)
    else:
        assert values == parsed


def pending(line: int) -> RowParams:
    return pending_params(
        line, str(line), None, f"id:{line}", "Hi", text_sha256("Hi"), "one", None, None, None,
        f"bdm1-{line}",
    )


async def test_large_batches_are_stored_whole_and_in_order(tmp_path: Path) -> None:
    # 5,000 rows in one batch: more than one multi-row INSERT takes
    checkpoint = await Checkpoint.open(tmp_path / "c.sqlite")
    try:
        await checkpoint.write_plan_params(META, [[pending(n) for n in range(1, 5001)], []])
        rows = await checkpoint.rows_by_state(["pending"], after_id=0, limit=10_000)
    finally:
        await checkpoint.close()
    assert [(r.id, r.line, r.idempotency_key) for r in rows] == [
        (n, n, f"bdm1-{n}") for n in range(1, 5001)
    ]


async def test_a_plan_that_fails_midway_keeps_the_old_plan(tmp_path: Path) -> None:
    def failing() -> Iterator[list[RowParams]]:
        yield [pending(n) for n in range(1, 3)]
        yield [pending(n) for n in range(3, 5)]
        raise RuntimeError("the campaign file changed")

    checkpoint = await Checkpoint.open(tmp_path / "c.sqlite")
    try:
        await checkpoint.write_plan_params(META, [[pending(10)]])
        with pytest.raises(RuntimeError, match="changed"):
            await checkpoint.write_plan_params(META, failing())
        rows = await checkpoint.rows_by_state(["pending"], after_id=0, limit=10)
    finally:
        await checkpoint.close()
    assert [r.line for r in rows] == [10]


@pytest.mark.parametrize("mixed", [False, True])
async def test_plain_rows_store_the_columns_of_their_bulk_form(
    tmp_path: Path, mixed: bool
) -> None:
    # plain rows (7 values) with a full row between them, alone or in a batch that also holds
    # a pending row in the bulk form: every column as the bulk form gives it, in line order
    plain = [(1, "ana", "u:ana", "Hi Ana", "h1", "crm-1", "yes"),
             (3, "bo", "u:bo", "Hi Bo", "h3", "", "")]
    invalid = row_params(PlannedRow(line=2, state=RowState.INVALID, field="recipient_id",
                                    reason="bad_recipient_id", message="bad", original="{}"))
    other = pending_values(4, "42", None, "id:42", "Yo", "h4", "one", None, "/m.png", None, "k4")
    batch: list[PlanRow] = [plain[0], invalid, plain[1], *([other] if mixed else [])]
    checkpoint = await Checkpoint.open(tmp_path / "c.sqlite")
    try:
        await checkpoint.write_plan_params(META, [batch])
    finally:
        await checkpoint.close()
    expected = [plain_as_bulk(plain[0]), invalid, plain_as_bulk(plain[1]),
                *([other] if mixed else [])]
    with closing(sqlite3.connect(tmp_path / "c.sqlite")) as db:
        stored = db.execute(f"SELECT id, {', '.join(_PLAN_COLUMNS)} FROM rows ORDER BY id")
        full = [row if len(row) == len(_PLAN_COLUMNS) else row_params(_planned(cast(PlanValues, row)))
                for row in expected]
        assert stored.fetchall() == [(n, *row) for n, row in enumerate(full, 1)]


def _planned(values: PlanValues) -> PlannedRow:
    line, _, user_id, username, _, text, digest, sender, external_id, media, consent, key = values
    return PlannedRow(line=line, state=RowState.PENDING, recipient_id=user_id or None,
                      recipient_username=username or None, text=text, text_sha256=digest,
                      sender=sender or None, external_id=external_id or None,
                      media=media or None, consent=consent or None,
                      idempotency_key=key or None)


async def test_bulk_values_and_full_rows_store_the_same_columns(tmp_path: Path) -> None:
    # pending rows in the bulk form ("" for NULL) around a row in the full form, over two
    # batches: every column as row_params gives it, NULLs as NULL, the rows in line order
    args = [
        (1, None, "ana", "u:ana", "Hi", "h1", "one", None, None, None, "k1"),
        (2, "42", None, "id:42", "Hi", "h2", "two", "crm-2", "/m.png", "yes", "k2"),
        (4, "7", "bo", "id:7", "Yo", "h4", "one", None, None, "no", "k4"),
    ]
    invalid = row_params(PlannedRow(line=3, state=RowState.INVALID, field="recipient_id",
                                    reason="bad_recipient_id", message="bad", original="{}"))
    full: list[RowParams | PlanValues] = [
        pending_params(*args[0]), pending_params(*args[1]), invalid, pending_params(*args[2])]
    bulk: list[RowParams | PlanValues] = [
        pending_values(*args[0]), pending_values(*args[1]), invalid, pending_values(*args[2])]
    expected = [(n + 1, *row) for n, row in enumerate(full)]
    batches: dict[str, list[RowParams | PlanValues]] = {"full": full, "bulk": bulk}
    for name, batch in batches.items():
        path = tmp_path / f"{name}.sqlite"
        checkpoint = await Checkpoint.open(path)
        try:
            await checkpoint.write_plan_params(META, [batch[:1], batch[1:]])
        finally:
            await checkpoint.close()
        with closing(sqlite3.connect(path)) as db:
            stored = db.execute(f"SELECT id, {', '.join(_PLAN_COLUMNS)} FROM rows ORDER BY id")
            assert stored.fetchall() == expected, name


# -- the shortcut for plain rows ----------------------------------------------------------------

_ABSENT = object()
#: values each field of a row can take: plain ones, and every kind the full path treats apart
_ROW_FIELDS: dict[str, list[object]] = {
    "recipient_username": [_ABSENT, None, "Amy_1", "@amy", " amy ", "", " ", "not valid!",
                           "a" * 16, "zoë", 7],
    "recipient_id": [None, "123", "0", "00123", " 5 ", "", 123, 1.5],
    "text": [None, "", " ", "Hi {first_name}", "Hi {", "plain text"],
    "sender": [None, "one", "@one", "ONE", "nobody", "", " "],
    "media": [None, "", " ", "pic.png"],
    "external_id": [_ABSENT, None, "  crm-1 ", "", " ", 12, True, 1.5],
    "consent": [_ABSENT, None, " yes ", "", " ", 1],
    "first_name": [_ABSENT, None, "", " ", "\t", 3, True, 1.5, [], "x" * 10_001, " Ana "],
    "plan": [_ABSENT, None, ""],
}
PLAIN_ROW = (1, "ana", "u:ana", "Hi", "h1", "", "")
_PLAIN_ROW: dict[str, object] = {"recipient_username": "amy", "external_id": "crm-1",
                                 "consent": "yes", "first_name": "Ana", "plan": "Pro"}
_TEMPLATES = [None, "Hi {first_name}", "Hi {first_name}, your {plan} plan", "{first_name}",
              "Hi {first_name|there}", "Hello", " "]


def _rows() -> list[dict[str, object]]:
    """The plain row, and the plain row with one field and with two fields changed."""
    changes = [(key, value) for key, values in _ROW_FIELDS.items() for value in values]
    rows = [dict(_PLAIN_ROW)]
    for n, first in enumerate(changes):
        for second in [None, *changes[n + 1 :]]:
            row = dict(_PLAIN_ROW)
            for key, value in [first] if second is None else [first, second]:
                if value is _ABSENT:
                    row.pop(key, None)
                else:
                    row[key] = value
            rows.append(row)
    return rows


@pytest.mark.parametrize("template", _TEMPLATES)
@pytest.mark.parametrize(("suppress", "consent"), [(False, False), (True, False), (False, True)])
def test_the_plain_row_shortcut_gives_what_the_full_path_gives(
    template: str | None, suppress: bool, consent: bool
) -> None:
    # plan_batch takes a shortcut for plain rows: each row, plain or one or two fields away
    # from it, must plan exactly as plan_bulk plans it, however the campaign is set up
    settings = Settings(
        campaign=CampaignSettings(name="p", template=template, require_consent=consent),
        senders=(SenderSettings(account="one"), SenderSettings(account="two")),
    )
    planner = Planner(settings, campaign_dir=Path("."), suppression=Suppression(
        usernames=frozenset({"amy"} if suppress else set())))
    items: list[RawRow | RowError] = [RawRow(n, row) for n, row in enumerate(_rows(), 1)]
    items.insert(5, RowError(file="c.jsonl", line=5, field=None, reason="invalid_json",
                             message="malformed JSON"))
    planned = planner.plan_batch(items)
    bulk = [plain_as_bulk(cast(PlainValues, row)) if len(row) == len(PLAIN_ROW) else row
            for row in planned]
    assert bulk == [planner.plan_bulk(item) for item in items]
