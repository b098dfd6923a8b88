"""The planner's bulk path: its shortcuts give the same values as the plain functions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkdm.checkpoint import Checkpoint, PlanMeta, RowParams, pending_params, row_params
from bulkdm.keys import idempotency_key, idempotency_keys, text_sha256
from bulkdm.recipients import Recipient, parse_recipient, recipient_values
from bulkdm.rows import PlannedRow, RowState

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
