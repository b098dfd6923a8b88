from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bulkdm.handoff import (
    CSV_COLUMNS,
    ERROR_FIELD,
    RAW_LINE,
    HandoffContext,
    HandoffLog,
    campaign_csv_rows,
    campaign_rows,
    csv_rows,
    encode_jsonl,
    handoff_record,
    write_atomic,
)
from bulkdm.rows import RowRecord, RowState

XQUIK = HandoffContext(campaign="welcome", provider="xquik", source_endpoint="POST /x/dm/{userId}")
GETXAPI = HandoffContext(
    campaign="welcome", provider="getxapi", source_endpoint="POST /twitter/dm/send"
)
KEY = "bdm1-" + "a" * 64


def row(**changes: object) -> RowRecord:
    base = RowRecord(
        id=1,
        line=3,
        state=RowState.SENT,
        recipient_id="44196397",
        recipient_username="jack",
        text="Hello from Xquik!",
        sender="myxaccount",
        external_id="crm-17",
        media=None,
        consent=None,
        idempotency_key=KEY,
        attempts=1,
        message_id="1893726451029384192",
        sent_at="2026-11-23T12:14:29.846Z",
        finished_at="2026-11-23T12:14:30.001Z",
    )
    return base._replace(**changes)  # type: ignore[arg-type]


# --- records -------------------------------------------------------------------------------------


def test_sent_record() -> None:
    assert handoff_record(row(), XQUIK) == {
        "record_type": "dm_send",
        "message_id": "1893726451029384192",
        "user_id": "44196397",
        "account": "myxaccount",
        "text": "Hello from Xquik!",
        "send_status": "sent",
        "handoff_format": "jsonl",
        "source_endpoint": "POST /x/dm/{userId}",
        "sent_at": "2026-11-23T12:14:29.846Z",
        "finished_at": "2026-11-23T12:14:30.001Z",
        "campaign": "welcome",
        "line": 3,
        "external_id": "crm-17",
        "consent": None,
        "recipient_username": "jack",
        "idempotency_key": KEY,
        "provider": "xquik",
        "attempts": 1,
    }


def test_media_sent_record_follows_xquik_media_handoff() -> None:
    record = handoff_record(
        row(media="/data/img.png", media_id="1893726451023847424", text="Here is the image."),
        XQUIK,
    )
    assert record["record_type"] == "dm_media_send"
    assert record["media_ids"] == ["1893726451023847424"]
    assert record["media_id"] == "1893726451023847424"
    assert record["send_status"] == "sent"
    assert "error" not in record


def test_media_row_failed_before_upload_has_empty_media_ids() -> None:
    record = handoff_record(
        row(media="/data/img.png", state=RowState.FAILED, message_id=None, sent_at=None,
            reason="media_upload_failed", message="the upload was refused"),
        XQUIK,
    )  # fmt: skip
    assert record["record_type"] == "dm_media_send"
    assert record["media_ids"] == []
    assert record["media_id"] is None


def test_failed_record() -> None:
    record = handoff_record(
        row(state=RowState.FAILED, message_id=None, sent_at="2026-11-23T12:00:00Z", attempts=2,
            reason="x_dm_not_allowed", message="the recipient does not accept DMs from you"),
        XQUIK,
    )  # fmt: skip
    assert record["send_status"] == "failed"
    assert record["message_id"] is None
    assert record["sent_at"] is None  # only a delivered DM has a sent_at
    assert record["attempts"] == 2
    assert record["error"] == {
        "code": "x_dm_not_allowed",
        "message": "the recipient does not accept DMs from you",
    }


def test_skipped_duplicate_names_the_first_line() -> None:
    record = handoff_record(
        row(state=RowState.SKIPPED, message_id=None, sent_at=None, attempts=0, line=9,
            reason="duplicate", message=None, duplicate_of_line=3),
        XQUIK,
    )  # fmt: skip
    assert record["send_status"] == "skipped"
    assert record["error"] == {
        "code": "duplicate",
        "message": "the same recipient appears on an earlier line (first on line 3)",
        "duplicate_of_line": 3,
    }


def test_skipped_duplicate_keeps_a_message_that_already_names_the_line() -> None:
    record = handoff_record(
        row(state=RowState.SKIPPED, message_id=None, reason="duplicate",
            message="already on line 3", duplicate_of_line=3),
        XQUIK,
    )  # fmt: skip
    assert record["error"] == {
        "code": "duplicate", "message": "already on line 3", "duplicate_of_line": 3,
    }  # fmt: skip


@pytest.mark.parametrize("reason", ["suppressed", "no_consent"])
def test_skipped_other_reasons(reason: str) -> None:
    record = handoff_record(
        row(state=RowState.SKIPPED, message_id=None, reason=reason, message=None), XQUIK
    )
    error = record["error"]
    assert isinstance(error, dict)
    assert error["code"] == reason
    assert error["message"]


def test_invalid_record_names_field_and_reason() -> None:
    record = handoff_record(
        row(state=RowState.INVALID, message_id=None, sent_at=None, recipient_id=None, text=None,
            sender=None, idempotency_key=None, attempts=0, reason="missing_variable",
            field="text", message="the template needs {first_name}; add that column"),
        XQUIK,
    )  # fmt: skip
    assert record["send_status"] == "invalid"
    assert record["user_id"] is None
    assert record["text"] is None
    assert record["error"] == {
        "code": "missing_variable",
        "message": "the template needs {first_name}; add that column",
        "field": "text",
    }


def test_getxapi_record() -> None:
    record = handoff_record(row(message_id="2019384131067818211"), GETXAPI)
    assert record["provider"] == "getxapi"
    assert record["source_endpoint"] == "POST /twitter/dm/send"
    assert record["record_type"] == "dm_send"
    assert "media_ids" not in record


def test_ids_are_strings_even_if_storage_returned_numbers() -> None:
    # SQLite INTEGER affinity may turn a digits-only text into an int on the way back
    record = handoff_record(
        row(message_id=1893726451029384192, recipient_id=44196397, external_id=123),
        XQUIK,
    )
    for key in ("message_id", "user_id", "external_id"):
        assert isinstance(record[key], str)
    line = encode_jsonl([record])
    assert b'"message_id":"1893726451029384192"' in line
    assert b'"user_id":"44196397"' in line


@pytest.mark.parametrize("external_id", ["00123", "1e5", "123456789012345678901234567890", "-0"])
def test_number_like_external_ids_stay_strings(external_id: str) -> None:
    line = encode_jsonl([handoff_record(row(external_id=external_id), XQUIK)])
    assert orjson.loads(line)["external_id"] == external_id


def test_no_secret_fields() -> None:
    record = handoff_record(row(), XQUIK)
    assert not any(word in key for key in record for word in ("token", "api_key", "secret"))


def test_encode_jsonl_one_line_each_newline_terminated() -> None:
    text = "multi\nline \u2028 text"
    data = encode_jsonl([handoff_record(row(text=text), XQUIK), handoff_record(row(), GETXAPI)])
    lines = data.split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""
    assert orjson.loads(lines[0])["text"] == text
    assert encode_jsonl([]) == b""


# --- the live appender ---------------------------------------------------------------------------


def test_log_creates_a_new_file_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "handoff.jsonl"
    log = HandoffLog.open(path, 0)
    assert log is not None
    with log:
        first = log.append([handoff_record(row(), XQUIK)])
        second = log.append([handoff_record(row(line=4), XQUIK)])
        assert log.append([]) == second
    assert first == len(path.read_bytes().split(b"\n")[0]) + 1
    assert second == path.stat().st_size == log.offset
    assert [orjson.loads(x)["line"] for x in path.read_bytes().splitlines()] == [3, 4]


def test_log_truncates_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "handoff.jsonl"
    good = encode_jsonl([handoff_record(row(), XQUIK)])
    path.write_bytes(good + b'{"record_type":"dm_se')  # the crash cut the second line
    log = HandoffLog.open(path, len(good))
    assert log is not None
    with log:
        log.append([handoff_record(row(line=4), XQUIK)])
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(x)["line"] for x in lines] == [3, 4]


def test_log_truncates_lines_written_but_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "handoff.jsonl"
    recorded = encode_jsonl([handoff_record(row(line=n), XQUIK) for n in (1, 2)])
    unrecorded = encode_jsonl([handoff_record(row(line=n), XQUIK) for n in (3, 4)])
    path.write_bytes(recorded + unrecorded)
    log = HandoffLog.open(path, len(recorded))
    assert log is not None
    log.close()
    assert path.read_bytes() == recorded


@pytest.mark.parametrize("damage", ["deleted", "shorter", "edited"])
def test_log_reports_a_file_that_cannot_continue(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "handoff.jsonl"
    data = encode_jsonl([handoff_record(row(line=n), XQUIK) for n in (1, 2)])
    if damage == "shorter":
        path.write_bytes(data[:-10])
    elif damage == "edited":
        path.write_bytes(b"x" + data)  # same offset no longer falls on a line end
    assert HandoffLog.open(path, len(data)) is None
    if damage != "deleted":
        assert path.read_bytes() != data  # left for the caller to rebuild, untouched


def test_log_failed_append_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "handoff.jsonl"
    log = HandoffLog.open(path, 0)
    assert log is not None
    offset = log.append([handoff_record(row(line=1), XQUIK)])

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(OSError, match="No space"):
            log.append([handoff_record(row(line=2), XQUIK)])
    assert path.stat().st_size == offset == log.offset
    log.append([handoff_record(row(line=3), XQUIK)])
    log.close()
    assert [orjson.loads(x)["line"] for x in path.read_bytes().splitlines()] == [1, 3]


def test_log_rejects_a_negative_offset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="offset"):
        HandoffLog.open(tmp_path / "h.jsonl", -1)


def test_log_rebuild_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "handoff.jsonl"
    records = [handoff_record(row(line=n), XQUIK) for n in (1, 2)]
    assert HandoffLog.open(path, 999) is None
    write_atomic(path, [encode_jsonl(records)])
    log = HandoffLog.open(path, path.stat().st_size)
    assert log is not None
    log.close()


# --- atomic rewrite ------------------------------------------------------------------------------


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")
    os.chmod(path, 0o640)
    write_atomic(path, [b"new ", b"content\n"])
    assert path.read_bytes() == b"new content\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]
    assert path.stat().st_mode & 0o777 == 0o640


def test_write_atomic_new_file(tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    write_atomic(path, iter([b"a\r\n"]))
    assert path.read_bytes() == b"a\r\n"
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old and whole\n")

    def chunks() -> Iterator[bytes]:
        yield b"half of the new"
        raise RuntimeError("the export failed midway")

    with pytest.raises(RuntimeError, match="midway"):
        write_atomic(path, chunks())
    assert path.read_bytes() == b"old and whole\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_write_atomic_failure_without_old_file_leaves_nothing(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        raise KeyboardInterrupt
        yield b""  # pragma: no cover

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "x.jsonl", chunks())
    assert os.listdir(tmp_path) == []


# --- CSV -----------------------------------------------------------------------------------------


def parse_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def test_csv_header_first_and_crlf() -> None:
    chunks = list(csv_rows([handoff_record(row(), XQUIK)]))
    assert chunks[0] == (",".join(CSV_COLUMNS) + "\r\n").encode()
    assert chunks[1].endswith(b"\r\n")
    (parsed,) = parse_csv(b"".join(chunks))
    assert parsed["message_id"] == "1893726451029384192"
    assert parsed["error_code"] == ""
    assert parsed["line"] == "3"


def test_csv_flattens_media_ids_and_error() -> None:
    records = [
        handoff_record(row(media="/m.png", media_id="77"), XQUIK),
        handoff_record(row(state=RowState.INVALID, reason="bad_username", field="recipient_username",
                           message="'@@x' is not an X username"), XQUIK),
    ]  # fmt: skip
    sent, invalid = parse_csv(b"".join(csv_rows(records)))
    assert sent["media_ids"] == "77" and sent["media_id"] == "77"
    assert invalid["error_code"] == "bad_username"
    assert invalid["error_field"] == "recipient_username"
    assert invalid["error_message"] == "'@@x' is not an X username"


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_safe_csv_neutralises_formula_cells(lead: str) -> None:
    text = f'{lead}HYPERLINK("http://evil","x")'
    records = [handoff_record(row(text=text, external_id=f"{lead}1+1"), XQUIK)]
    (parsed,) = parse_csv(b"".join(csv_rows(records, formula_safe=True)))
    assert parsed["text"] == "'" + text
    assert parsed["external_id"] == f"'{lead}1+1"
    assert parsed["account"] == "myxaccount"


@pytest.mark.parametrize("text", ["-20% today only", "=SUM(A1)", "+1 555", "@team hi"])
def test_csv_for_crms_holds_exactly_what_was_sent(text: str) -> None:
    records = [handoff_record(row(text=text, consent="opted_in:2026-10-01"), XQUIK)]
    (parsed,) = parse_csv(b"".join(csv_rows(records)))
    assert parsed["text"] == text
    assert parsed["consent"] == "opted_in:2026-10-01"


def test_csv_delimiter_is_chosen() -> None:
    data = b"".join(csv_rows([handoff_record(row(text="a;b"), XQUIK)], delimiter=";"))
    (parsed,) = csv.DictReader(io.StringIO(data.decode(), newline=""), delimiter=";")
    assert parsed["text"] == "a;b" and parsed["external_id"] == "crm-17"


def test_csv_plain_cells_are_untouched() -> None:
    records = [handoff_record(row(text='Hi = there, "friend"\nbye'), XQUIK)]
    (parsed,) = parse_csv(b"".join(csv_rows(records)))
    assert parsed["text"] == 'Hi = there, "friend"\nbye'


def test_csv_bom_is_optional() -> None:
    assert next(iter(csv_rows([], bom=True))).startswith(b"\xef\xbb\xbf")
    assert not next(iter(csv_rows([]))).startswith(b"\xef\xbb\xbf")


UNICODE_TEXTS = [
    "Hi 👋🏽 family 👨‍👩‍👧 — thanks!",
    "مرحبا بك في الحملة",  # right-to-left
    "\u202eevil\u202c mixed שלום and english",
    "日本語のテキスト",
]


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_unicode_round_trips_in_jsonl_and_csv(text: str) -> None:
    record = handoff_record(row(text=text, recipient_username="名前"), XQUIK)
    assert orjson.loads(encode_jsonl([record]))["text"] == text
    (parsed,) = parse_csv(b"".join(csv_rows([record])))
    assert parsed["text"] == text
    assert parsed["recipient_username"] == "名前"


# --- retry campaign ------------------------------------------------------------------------------


def test_campaign_rows_keep_only_campaign_fields() -> None:
    failed = row(state=RowState.FAILED, message_id=None, reason="x_dm_not_allowed",
                 media="/data/a.png", consent="2026-01-01", text="Hi {{ok}} {name}")  # fmt: skip
    (line,) = list(campaign_rows([(failed, None)]))
    assert line.endswith(b"\n")
    assert orjson.loads(line) == {
        "recipient_id": "44196397",
        "recipient_username": "jack",
        "text": "Hi {{{{ok}}}} {{name}}",
        "external_id": "crm-17",
        "media": "/data/a.png",
        "consent": "2026-01-01",
        ERROR_FIELD: "line 3: x_dm_not_allowed: x dm not allowed",
    }


def test_campaign_rows_leave_out_absent_fields() -> None:
    invalid = row(state=RowState.INVALID, recipient_id=None, text=None, external_id=None,
                  recipient_username="jack")  # fmt: skip
    line = orjson.loads(next(iter(campaign_rows([(invalid, None)]))))
    assert line == {"recipient_username": "jack", ERROR_FIELD: "line 3: invalid: invalid"}


def test_an_invalid_row_keeps_every_field_it_was_read_with() -> None:
    invalid = row(state=RowState.INVALID, recipient_id=None, text=None, reason="missing_variable",
                  field="company", message="the template needs {company}; the row has none")
    original = {"recipient_username": "jack", "text": "Hi {first} at {company}", "first": "J",
                "external_id": "00123", "tier": 2, ERROR_FIELD: "an old reason"}
    line = orjson.loads(next(iter(campaign_rows([(invalid, original)]))))
    assert line == {**original, ERROR_FIELD: "line 3: missing_variable (company): the template "
                    "needs {company}; the row has none"}
    data = b"".join(campaign_csv_rows([(invalid, original)], delimiter=";"))
    (parsed,) = csv.DictReader(io.StringIO(data.decode(), newline=""), delimiter=";")
    assert list(parsed) == ["recipient_username", "text", "external_id", "first", "tier",
                            ERROR_FIELD]
    assert parsed["text"] == "Hi {first} at {company}" and parsed["tier"] == "2"
    assert parsed["external_id"] == "00123"


@pytest.mark.parametrize("state", [RowState.SENT, RowState.SENDING, RowState.UNKNOWN,
                                   RowState.PENDING])  # fmt: skip
def test_campaign_rows_refuse_rows_that_may_reach_the_recipient(state: RowState) -> None:
    with pytest.raises(ValueError, match="twice"):
        list(campaign_rows([(row(state=state), None)]))


def test_a_malformed_json_line_comes_back_as_written() -> None:
    invalid = row(state=RowState.INVALID, recipient_id=None, text=None, reason="invalid_json")
    broken = '{"recipient_username": "hal", "first_name": "Hal"'
    assert list(campaign_rows([(invalid, {RAW_LINE: broken})])) == [broken.encode() + b"\n"]
    data = b"".join(campaign_csv_rows([(invalid, {RAW_LINE: broken})]))
    (parsed,) = parse_csv(data)
    assert parsed[RAW_LINE] == broken and parsed[ERROR_FIELD].startswith("line 3: invalid_json")


def test_campaign_rows_refuse_a_failure_that_may_have_been_delivered() -> None:
    with pytest.raises(ValueError, match="outcome_unknown"):
        list(campaign_rows([(row(state=RowState.FAILED, reason="outcome_unknown"), None)]))
