"""One timestamp form everywhere: RFC 3339, UTC, milliseconds, ``Z`` (as Xquik writes them)."""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkdm.sandbox import running_sandbox
from bulkdm.timestamps import iso_utc, normalize_iso, parse_iso
from tests.clikit import bulkdm, handoff_lines, write_campaign

FORM = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

ROWS: list[dict[str, object]] = [
    {"recipient_username": "amy", "first_name": "Amy"},  # sent
    {"recipient_username": "nf_gone", "first_name": "Gil"},  # failed: no such user
    {"recipient_username": "AMY", "first_name": "Amy again"},  # skipped: duplicate
    {"recipient_username": "dee", "text": ""},  # invalid: empty text
]


def test_iso_utc_writes_the_one_form() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_764_470_795.9109) == "2025-11-30T02:46:35.910Z"


@pytest.mark.parametrize(("given", "expected"), [
    ("2026-11-30T02:46:35.910Z", "2026-11-30T02:46:35.910Z"),
    ("2026-11-30T02:46:35+00:00", "2026-11-30T02:46:35.000Z"),
    ("2026-11-30T04:46:35.910123+02:00", "2026-11-30T02:46:35.910Z"),
    ("2026-11-30T02:46:35", "2026-11-30T02:46:35.000Z"),  # no offset: UTC
    ("yesterday", None),
    ("", None),
    (None, None),
    (1764470795, None),
])
def test_normalize_iso_brings_any_form_to_the_one_form(given: object, expected: str | None) -> None:
    assert normalize_iso(given) == expected


def the_long_way(value: object) -> str | None:
    """normalize_iso without its fast path: parse, to a float, format."""
    when = parse_iso(value)
    return None if when is None else iso_utc(when.timestamp())


@settings(max_examples=300, deadline=None, database=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_a_canonical_timestamp_comes_back_as_the_long_way_gives_it(when: datetime) -> None:
    text = when.isoformat(timespec="milliseconds") + "Z"
    assert normalize_iso(text) == the_long_way(text)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet="0123456789-:.TZ+ ", min_size=20, max_size=26) | st.text())
def test_any_text_is_normalized_as_the_long_way_does(text: str) -> None:
    assert normalize_iso(text) == the_long_way(text)


@pytest.mark.parametrize(
    "text",
    ["2026-11-30T10:30:47.874Z", "2026-02-29T10:30:47.874Z", "2026-11-30T24:00:00.000Z",
     "2026-11-30T10:30:47,874Z", "2026-11-30 10:30:47.874Z", "2026-11-30T10:30:47.874+00:00",
     "2026-11-30T10:30:47.87４Z", "9999-12-31T23:59:59.999Z", "1066-10-14T09:00:00.999Z", None, 7],
)
def test_timestamps_near_the_canonical_form(text: object) -> None:
    assert normalize_iso(text) == the_long_way(text)
    assert normalize_iso(iso_utc(1_796_000_000.123)) == "2026-11-30T00:53:20.123Z"


def test_a_timestamp_already_in_the_one_form_comes_back_as_it_is() -> None:
    # the fast path itself (the same answer the long way is asserted above): the very string,
    # not a new one parsed and formatted again
    text = "2026-11-30T10:30:47.874Z"
    assert normalize_iso(text) is text
    assert normalize_iso("1066-10-14T09:00:00.999Z") is not None


def test_parse_iso_reads_what_iso_utc_writes() -> None:
    when = parse_iso(iso_utc(1_764_470_795.25))
    assert when is not None and when.timestamp() == 1_764_470_795.25


async def test_every_timestamp_of_a_run_has_the_one_form(tmp_path: Path) -> None:
    async with running_sandbox() as sb:
        campaign = write_campaign(tmp_path, ROWS, url=sb.xquik_url)
        ran = await bulkdm("run", str(campaign), "--progress", "none")
        csv_out = tmp_path / "out.csv"
        exported = await bulkdm("export", str(campaign), "--format", "csv", "--out",
                                str(csv_out))
        status = await bulkdm("status", str(campaign), "--json")
    assert ran.code == 3, ran.stderr  # finished, with a failed and an invalid row
    assert exported.code == 0 and status.code == 0, exported.stderr + status.stderr
    records = handoff_lines(tmp_path / "camp.handoff.jsonl")
    assert sorted(str(r["send_status"]) for r in records) == [
        "failed", "invalid", "sent", "skipped"]
    stamps = [(r["send_status"], name, r[name]) for r in records
              for name in ("sent_at", "finished_at") if r.get(name) is not None]
    assert {(state, name) for state, name, _ in stamps} >= {
        ("sent", "sent_at"), ("sent", "finished_at"), ("failed", "finished_at"),
        ("skipped", "finished_at"), ("invalid", "finished_at")}
    for state, name, value in stamps:
        assert FORM.fullmatch(str(value)), f"{state} row: {name} = {value!r}"
    with csv_out.open(newline="", encoding="utf-8") as file:
        cells = [(k, v) for row in csv.DictReader(file) for k, v in row.items()
                 if k.endswith("_at") and v]
    assert len(cells) == len(stamps)
    assert all(FORM.fullmatch(v) for _, v in cells), cells
    for sender in orjson.loads(status.stdout)["senders"]:
        assert sender["next_due_at"] is None or FORM.fullmatch(sender["next_due_at"])
