from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import orjson
import pytest

from bulkdm.campaign import MAX_LINE_BYTES, CampaignReader, RawRow, RowError, file_sha256
from bulkdm.errors import CampaignFileError


def read_all(path: Path, delimiter: str | None = None) -> list[RawRow | RowError]:
    with CampaignReader(path, delimiter=delimiter) as reader:
        items = list(reader)
        assert reader.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    return items


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- JSONL ------------------------------------------------------------------------------------


def test_jsonl_rows_keep_their_line_numbers_across_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        b'{"recipient_username": "ana", "first_name": "Ana"}\n\n   \n{"recipient_id": "42"}\n',
    )
    assert read_all(path) == [
        RawRow(line=1, fields={"recipient_username": "ana", "first_name": "Ana"}),
        RawRow(line=4, fields={"recipient_id": "42"}),
    ]


def test_a_malformed_json_line_in_the_middle_is_one_row_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        b'{"recipient_username": "ana"}\n{"recipient_username": "bob",\n{"recipient_id": 7}\n',
    )
    first, bad, last = read_all(path)
    assert first == RawRow(line=1, fields={"recipient_username": "ana"})
    assert isinstance(bad, RowError)
    assert (bad.file, bad.line, bad.field, bad.reason) == (str(path), 2, None, "invalid_json")
    assert bad.message.startswith("malformed JSON at character")
    assert last == RawRow(line=3, fields={"recipient_id": 7})


def test_a_19_digit_json_number_stays_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", b'{"recipient_id": 1234567890123456789}\n')
    [row] = read_all(path)
    assert isinstance(row, RawRow)
    assert row.fields["recipient_id"] == 1234567890123456789
    assert str(row.fields["recipient_id"]) == "1234567890123456789"


@pytest.mark.parametrize(
    ("line", "reason", "field"),
    [
        (b'{"text": "a\x00b"}', "nul_byte", "text"),
        (b'{"text": "a\\u0000b"}', "nul_byte", "text"),
        (b'{"text": "caf\xe9"}', "invalid_utf8", "text"),
        (b'{"recipient_id": "1", "first_name": "Zo\xeb"}', "invalid_utf8", "first_name"),
        (b'{"text": "caf\xe9"', "invalid_utf8", None),  # and not JSON: no field to name
        (b'["not", "an", "object"]', "not_an_object", None),
        (b"42", "not_an_object", None),
    ],
)
def test_bad_jsonl_lines_are_row_errors_and_reading_goes_on(
    tmp_path: Path, line: bytes, reason: str, field: str | None
) -> None:
    path = write(tmp_path / "c.jsonl", line + b'\n{"recipient_id": "1"}\n')
    bad, good = read_all(path)
    assert isinstance(bad, RowError)
    assert (bad.line, bad.field, bad.reason) == (1, field, reason)
    assert good == RawRow(line=2, fields={"recipient_id": "1"})


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b'{"recipient_id": "1", "first_name": "Ana", "first_name": "Bo"}', "first_name"),
        (b'{"recipient_id" : "1", "recipient_id": "2"}', "recipient_id"),  # spaced key
        (b'{"recipient_id":"1",\t"recipient_id"\t:"2"}', "recipient_id"),
        (b'{"recipient_id": "1", "text": "say \\"hi\\"", "text": "x"}', "text"),  # escapes
        (b'{"recipient_id": "1", "vars": {"a": 1, "a": 2}}', "a"),  # in a nested object
    ],
)
def test_a_key_given_twice_is_a_row_error_not_the_last_value_kept(
    tmp_path: Path, line: bytes, field: str
) -> None:
    # orjson (and JSON itself) keep the last value in silence: the row's first one was lost
    path = write(tmp_path / "c.jsonl", line + b'\n{"recipient_id": "1"}\n')
    bad, good = read_all(path)
    assert isinstance(bad, RowError), bad
    assert (bad.line, bad.field, bad.reason) == (1, field, "repeated_key")
    assert f"{field!r} is given more than once" in bad.message
    assert good == RawRow(line=2, fields={"recipient_id": "1"})


@pytest.mark.parametrize(
    "fields",
    [
        {"recipient_id": "1", "consent": "opted_in:2026-10-01", "link": "https://x.com/a"},
        {"recipient_id": "1", "vars": {"plan": "Pro", "seats": 3}},
        {"recipient_id": "1", "text": 'he said "a": "b"\nbye'},
    ],
)
def test_rows_with_colons_nesting_or_escapes_in_their_values_are_read_whole(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    for text in (orjson.dumps(fields), json.dumps(fields, separators=(",", " : ")).encode()):
        path = write(tmp_path / "c.jsonl", text + b"\n")
        assert read_all(path) == [RawRow(line=1, fields=fields)]


def test_an_over_long_line_is_a_row_error_and_the_next_line_is_read(tmp_path: Path) -> None:
    fits = b'{"text": "' + b"a" * (MAX_LINE_BYTES - 12) + b'"}'
    assert len(fits) == MAX_LINE_BYTES
    too_long = b'{"text": "' + b"b" * (3 * MAX_LINE_BYTES) + b'"}'
    path = write(tmp_path / "c.jsonl", fits + b"\r\n" + too_long + b'\n{"recipient_id": "5"}')
    ok, bad, last = read_all(path)
    assert isinstance(ok, RawRow) and ok.line == 1
    assert isinstance(bad, RowError)
    assert (bad.line, bad.reason) == (2, "line_too_long")
    assert last == RawRow(line=3, fields={"recipient_id": "5"})


def test_a_long_line_ending_in_carriage_returns_is_one_line(tmp_path: Path) -> None:
    # 1 MiB of content then "\r\r\n": a line that fits. Read with readline(limit), its "\n"
    # fell past the limit and counted as one more line, so every later line was off by one
    fits = b'{"text": "' + b"a" * (MAX_LINE_BYTES - 12) + b'"}'
    path = write(tmp_path / "c.jsonl", fits + b"\r\r\n" + b'{"recipient_id": "5"}\n')
    first, second = read_all(path)
    assert isinstance(first, RawRow) and first.line == 1
    assert second == RawRow(line=2, fields={"recipient_id": "5"})


def test_malformed_json_is_described_the_same_with_or_without_a_last_newline(
    tmp_path: Path,
) -> None:
    # lines are split without their "\n"; the position in the message still counts it
    ended, last = read_all(write(tmp_path / "c.jsonl", b'{"a"\n{"a"'))
    assert isinstance(ended, RowError) and isinstance(last, RowError)
    assert ended.message == "malformed JSON at character 6: unexpected end of data"
    assert last.message == "malformed JSON at character 5: unexpected end of data"


def test_batches_hold_the_items_of_the_file_in_order(tmp_path: Path) -> None:
    # several chunks of lines, one line longer than the limit across chunks, CRLF, blank and
    # invalid lines, and a last line without a newline: the same items as one by one
    record = orjson.dumps({"recipient_username": "ana", "text": "x" * 150})
    too_long = b'{"text": "' + b"b" * (MAX_LINE_BYTES + 10) + b'"}'
    lines = [record] * 3000 + [too_long, b"", b"[1]", b"{bad"] + [record + b"\r"] * 3000
    path = write(tmp_path / "c.jsonl", b"\xef\xbb\xbf" + b"\n".join([*lines, record]))
    with CampaignReader(path) as reader:
        batches = list(reader.batches())
        assert reader.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    items = [item for batch in batches for item in batch]
    assert len(batches) > 2
    assert items == read_all(path)
    assert [item.line for item in items] == [n for n in range(1, 6006) if n != 3002]
    assert [(item.line, item.reason) for item in items if isinstance(item, RowError)] == [
        (3001, "line_too_long"), (3003, "not_an_object"), (3004, "invalid_json")]


def test_a_byte_order_mark_before_jsonl_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", b'\xef\xbb\xbf{"recipient_id": "1"}\n')
    assert read_all(path) == [RawRow(line=1, fields={"recipient_id": "1"})]


def test_memory_stays_flat_while_streaming_a_large_file(tmp_path: Path) -> None:
    record = orjson.dumps({"recipient_username": "user_name", "text": "x" * 200}) + b"\n"
    path = write(tmp_path / "big.jsonl", record * 100_000)  # about 23 MB
    tracemalloc.start()
    try:
        with CampaignReader(path) as reader:
            count = sum(1 for _ in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 2_000_000, f"peak {peak} bytes: the reader holds more than a few rows"


# -- CSV --------------------------------------------------------------------------------------

EXCEL_CSV = (
    b"\xef\xbb\xbfrecipient_username;text;external_id\r\n"
    b'ana;"Hi Ana,\r\nsee you; soon";E1\r\n'
    b'bob;"He said ""hi"", then left";E2\r\n'
)


def test_csv_with_bom_crlf_quoted_newlines_and_semicolons(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", EXCEL_CSV)
    assert read_all(path) == [
        RawRow(
            line=2,
            fields={
                "recipient_username": "ana",
                "text": "Hi Ana,\r\nsee you; soon",
                "external_id": "E1",
            },
        ),
        RawRow(
            line=4,
            fields={
                "recipient_username": "bob",
                "text": 'He said "hi", then left',
                "external_id": "E2",
            },
        ),
    ]


def test_a_quote_left_open_is_an_error_not_rows_swallowed_in_silence(tmp_path: Path) -> None:
    # '"Al' opens a quote that the next quote closes: bob and carl became part of alice's
    # first_name, one valid row where there were three, and nothing said so
    path = write(tmp_path / "c.csv", b'recipient_username,first_name\nalice,"Al\nbob,Bo\n'
                                     b'carl,Ca"\ndan,Da\n')
    first, dan = read_all(path)
    assert isinstance(first, RowError)
    assert (first.line, first.field, first.reason) == (2, "first_name", "open_quote")
    assert "'bob,Bo'" in first.message
    assert dan == RawRow(line=5, fields={"recipient_username": "dan", "first_name": "Da"})


def test_a_text_that_swallowed_rows_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", b'recipient_username,first_name,text\n'
                                     b'ana,Ana,"Hi\nbob,Bo,Hello\n1234,Cy,Hey"\n')
    [row] = read_all(path)
    assert isinstance(row, RowError) and (row.field, row.reason) == ("text", "open_quote")


@pytest.mark.parametrize(("header", "text"), [
    ("recipient_username,first_name,text", "Hi,\nthanks for writing, Ana"),  # 2 cells: no row
    ("recipient_username,first_name,text", "Hi\nsee you, soon, ok"),  # "see you": no handle
    ("recipient_username,text", "Hi,\nthanks,the team"),  # 2 columns: a text is not judged
])
def test_a_text_over_lines_with_commas_is_kept(tmp_path: Path, header: str, text: str) -> None:
    width = header.count(",") + 1
    cells = ["ana", "Ana", f'"{text}"'] if width == 3 else ["ana", f'"{text}"']
    path = write(tmp_path / "c.csv", f"{header}\n{','.join(cells)}\n".encode())
    [row] = read_all(path)
    assert isinstance(row, RawRow) and row.fields["text"] == text


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_the_csv_delimiter_is_sniffed_from_the_header(tmp_path: Path, separator: str) -> None:
    header = separator.join(["recipient_username", "first_name", "text"])
    row = separator.join(["ana", "Ana", '"Hi, {first_name}; ok"'])
    path = write(tmp_path / "c.csv", f"{header}\n{row}\n".encode())
    assert read_all(path) == [
        RawRow(
            line=2,
            fields={
                "recipient_username": "ana",
                "first_name": "Ana",
                "text": "Hi, {first_name}; ok",
            },
        )
    ]


def test_an_explicit_delimiter_wins_over_sniffing(tmp_path: Path) -> None:
    # the header has more commas than pipes; --delimiter "|" still splits on pipes
    path = write(tmp_path / "c.csv", b"recipient_username|text\nana|Hi, you, there\n")
    assert read_all(path, delimiter="|") == [
        RawRow(line=2, fields={"recipient_username": "ana", "text": "Hi, you, there"})
    ]


def test_bad_csv_records_are_row_errors_and_the_rest_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        b"recipient_username,text\n"
        b"ana,caf\xe9\n"  # Latin-1, not UTF-8
        b"bob,a\x00b\n"
        b"cid,hi,extra\n"
        b"\n"
        b"dee," + b"x" * (MAX_LINE_BYTES + 1) + b"\n"
        b'eve,"two\nlines"\n',
    )
    items = read_all(path)
    # a bad byte's error names its column (it said "-"), as a bad value's does
    assert [(i.line, i.reason, i.field) for i in items if isinstance(i, RowError)] == [
        (2, "invalid_utf8", "text"),
        (3, "nul_byte", "text"),
        (4, "wrong_field_count", None),
        (6, "line_too_long", None),
    ]
    assert items[-1] == RawRow(line=7, fields={"recipient_username": "eve", "text": "two\nlines"})


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"recipient_username,text,text\n", "the header names text more than once"),
        (b"recipient_username,,text\n", "empty column name"),
        (b"recipient_\xff,text\n", "line 1: the header row is unusable"),
    ],
)
def test_an_unusable_csv_header_stops_the_command(
    tmp_path: Path, header: bytes, message: str
) -> None:
    path = write(tmp_path / "c.csv", header + b"a,b,c\n")
    with pytest.raises(CampaignFileError, match=message), CampaignReader(path) as reader:
        list(reader)


@pytest.mark.parametrize(
    ("data", "delimiter", "message"),
    [
        # Excel's "Unicode Text": the csv module's own words were about universal-newline mode
        ("recipient_username\tfirst_name\r\nana\tAna\r\n".encode("utf-16"), None,
         'the file is UTF-16 \\(Excel\'s "Unicode Text"\\); save it as "CSV UTF-8"'),
        (b"recipient_username,first_name\rana,Ana\r", None, "its lines end in CR alone"),
        # the wrong separator: the hint said to rename a column
        (b"recipient_username;first_name\nana;Ana\n", ",",
         "the header splits into columns at ';', not ',': pass --delimiter ';'"),
        (b"recipient_username\tfirst_name\nana\tAna\n", ";", "pass --delimiter 'tab'"),
        (b"Recipient Username,first_name\nana,Ana\n", None,
         "rename 'Recipient Username' to 'recipient_username'"),
    ],
)
def test_a_csv_header_that_cannot_be_read_says_what_to_do(
    tmp_path: Path, data: bytes, delimiter: str | None, message: str
) -> None:
    path = write(tmp_path / "c.csv", data)
    with pytest.raises(CampaignFileError, match=message):
        read_all(path, delimiter)


def test_an_empty_csv_file_is_an_error_for_the_file(tmp_path: Path) -> None:
    # a CSV campaign needs its header; an empty one is an export gone wrong, not "no rows"
    with pytest.raises(CampaignFileError, match="the file is empty"):
        read_all(write(tmp_path / "c.csv", b""))


@pytest.mark.parametrize("name", ["campaign.txt", "missing.jsonl"])
def test_a_file_that_cannot_be_a_campaign_is_an_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "campaign.txt").write_text("x")
    with pytest.raises(CampaignFileError):
        CampaignReader(tmp_path / name)


def test_file_sha256_matches_the_streaming_hash(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", EXCEL_CSV)
    with CampaignReader(path) as reader:
        list(reader)
        assert reader.sha256() == file_sha256(path)
