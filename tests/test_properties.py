"""Properties of the campaign readers, the planner and the template, over generated input.

Any bytes give every non-blank line one item (a row, or a row error with a reason), never an
exception and never a lost line; the planner gives every item a state; CSV and JSONL read the
same rows the same way; ``export --as-campaign`` gives back the campaign it came from.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkdm.campaign import CampaignReader, RawRow, RowError
from bulkdm.handoff import campaign_rows
from bulkdm.planner import Planner, Suppression
from bulkdm.rows import RowRecord, RowState
from bulkdm.settings import CampaignSettings, SenderSettings, Settings
from bulkdm.template import Template, TemplateProblem, compile_template, render

#: modest counts keep the suite quick; CI runs the same examples each time (no database)
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow])
ROW_REASONS = {"nul_byte", "invalid_utf8", "invalid_json", "not_an_object", "line_too_long", "repeated_key",
               "bad_csv", "wrong_field_count"}
HEADER = ("recipient_username", "text", "first_name")
SETTINGS = Settings(campaign=CampaignSettings(name="p", template="Hi {first_name}"),
                    senders=(SenderSettings(account="one"), SenderSettings(account="two")))


@contextmanager
def campaign_file(name: str, data: bytes) -> Iterator[Path]:
    # a folder per example: hypothesis runs many examples within one test call
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


def read(path: Path) -> list[RawRow | RowError]:
    with CampaignReader(path) as reader:
        return list(reader)


def non_blank_lines(data: bytes, *, csv_file: bool) -> list[int]:
    """The numbers of the physical lines that must each give one item."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line opens no line of its own
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    if csv_file:
        return [n for n, line in enumerate(lines, 1) if n > 1 and line.rstrip(b"\r") != b""]
    return [n for n, line in enumerate(lines, 1) if line and not line.isspace()]


def assert_one_state_each(items: Sequence[RawRow | RowError], lines: list[int]) -> None:
    assert [item.line for item in items] == lines
    for item in items:
        if isinstance(item, RowError):
            assert item.reason in ROW_REASONS and item.message, item
        else:
            assert isinstance(item.fields, dict)


def plan_states(items: Sequence[RawRow | RowError]) -> list[tuple[int, str, str | None]]:
    """(line, state, reason) of each item as the planner plans it."""
    planner = Planner(SETTINGS, campaign_dir=Path("."), suppression=Suppression())
    planned = [planner.plan(item) for item in items]
    for params in planned:
        state, reason, message = params[1], params[13], params[14]
        assert state in ("pending", "skipped", "invalid"), params
        if state == "invalid":
            assert reason and message, params
    return [(params[0], params[1], params[13]) for params in planned]


# -- any bytes ---------------------------------------------------------------------------------

_JSONISH = st.sampled_from([b"{", b"}", b'"', b":", b",", b"[", b"]", b"\\u0000", b"\x00",
                            b"\xff", b"\xc3", b"\xef\xbb\xbf", b" ", b"\r", b"\n", b"1",
                            b'"recipient_username"', b'"text"', b'"amy"', b"null", b"true"])
_BYTES = st.lists(st.one_of(st.binary(max_size=12), _JSONISH), max_size=40).map(b"".join)


@PROPERTY
@given(_BYTES)
def test_any_bytes_in_jsonl_give_every_line_one_state(data: bytes) -> None:
    with campaign_file("c.jsonl", data) as path:
        items = read(path)
    assert_one_state_each(items, non_blank_lines(data, csv_file=False))
    plan_states(items)


_CELL_BYTES = st.lists(st.one_of(st.binary(max_size=8), st.sampled_from(
    [b",", b";", b"\t", b"\x00", b"\xff", b"\xe2\x82", b"{", b"}", b"{first_name}", b"amy",
     b" "])), max_size=10).map(b"".join).map(
    lambda cell: cell.replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b""))


@PROPERTY
@given(st.lists(_CELL_BYTES, max_size=15), st.booleans())
def test_any_unquoted_bytes_in_csv_give_every_line_one_state(
        lines: list[bytes], crlf: bool) -> None:
    # without quotes a record is one physical line, so each line must give exactly one item
    end = b"\r\n" if crlf else b"\n"
    data = b",".join(name.encode() for name in HEADER) + end + b"".join(s + end for s in lines)
    with campaign_file("c.csv", data) as path:
        items = read(path)
    assert_one_state_each(items, non_blank_lines(data, csv_file=True))
    plan_states(items)


@PROPERTY
@given(_BYTES)
def test_any_bytes_in_a_csv_body_never_raise_and_keep_line_order(body: bytes) -> None:
    # quotes may join lines into one record: the items still come in line order, once each
    data = b",".join(name.encode() for name in HEADER) + b"\n" + body
    with campaign_file("c.csv", data) as path:
        items = read(path)
    lines = [item.line for item in items]
    assert lines == sorted(set(lines))
    assert all(2 <= line <= data.count(b"\n") + 1 for line in lines)
    assert_one_state_each(items, lines)
    plan_states(items)


# -- CSV and JSONL ------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
_ROWS = st.lists(st.fixed_dictionaries(dict.fromkeys(HEADER, _TEXT)), max_size=12)


def _as_csv(rows: list[dict[str, str]], delimiter: str) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows([row[name] for name in HEADER] for row in rows)
    return out.getvalue().encode("utf-8")


@PROPERTY
@given(_ROWS, st.sampled_from([",", ";", "\t"]))
def test_csv_and_jsonl_read_the_same_rows_the_same_way(
        rows: list[dict[str, str]], delimiter: str) -> None:
    jsonl = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    with campaign_file("c.jsonl", jsonl) as path:
        from_jsonl = read(path)
    with campaign_file("c.csv", _as_csv(rows, delimiter)) as path:
        from_csv = read(path)
    assert [_fields(item) for item in from_csv] == [_fields(item) for item in from_jsonl]
    assert len(from_jsonl) == len(rows)
    states_csv = [(state, reason) for _, state, reason in plan_states(from_csv)]
    states_jsonl = [(state, reason) for _, state, reason in plan_states(from_jsonl)]
    assert states_csv == states_jsonl


def _fields(item: RawRow | RowError) -> dict[str, object] | str:
    return item.reason if isinstance(item, RowError) else item.fields


# -- the template ------------------------------------------------------------------------------

_SOURCE = st.lists(st.one_of(_TEXT, st.sampled_from(
    ["{", "}", "{{", "}}", "{name}", "{first_name}", "{a.b}", "{0}", "{x!r}", "{x:>9}", "{}",
     "{first-name}"])), max_size=8).map("".join)
_VALUES = st.one_of(st.none(), _TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(),
                    st.lists(st.integers(), max_size=2))


@PROPERTY
@given(_SOURCE, st.dictionaries(st.sampled_from(["name", "first_name", "first-name", "x"]),
                                _VALUES))
def test_any_template_and_values_give_a_text_or_a_reason(
        source: str, variables: dict[str, object]) -> None:
    compiled = compile_template(source)
    if isinstance(compiled, TemplateProblem):
        assert compiled.reason in ("bad_template", "bad_placeholder") and compiled.message
        return
    rendered = render(compiled, variables)
    if isinstance(rendered, TemplateProblem):
        assert rendered.reason in ("missing_variable", "bad_variable")
        assert rendered.variable in compiled.variables
        return
    filled = {name: variables[name] for name in compiled.variables}
    assert all(str(value).lower() in rendered.lower() for value in filled.values())


@PROPERTY
@given(_TEXT)
def test_a_text_with_its_braces_doubled_renders_back_to_itself(text: str) -> None:
    compiled = compile_template(text.replace("{", "{{").replace("}", "}}"))
    assert isinstance(compiled, Template) and compiled.variables == ()
    assert render(compiled, {}) == text


# -- export --as-campaign -----------------------------------------------------------------------

_USERNAME = st.from_regex(r"[A-Za-z0-9_]{1,15}", fullmatch=True)
#: a row's text is a template: literal braces are written doubled ("{{" is one "{")
_MESSAGE = st.lists(st.one_of(_TEXT.map(lambda t: t.replace("{", "").replace("}", "")),
                              st.sampled_from(["{{", "}}"])), min_size=1, max_size=4).map(
    "".join).filter(lambda text: text.strip() != "")
_CAMPAIGN_ROW = st.fixed_dictionaries(
    {"recipient_username": _USERNAME, "text": _MESSAGE},
    optional={"external_id": st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True),
              "consent": st.from_regex(r"[a-z_]{1,10}:[0-9-]{1,10}", fullmatch=True)})


@settings(PROPERTY, max_examples=30)
@given(st.lists(_CAMPAIGN_ROW, min_size=1, max_size=8))
def test_export_as_campaign_gives_back_the_campaign(rows: list[dict[str, str]]) -> None:
    # plan the campaign, take its rows as failed ones, export them as a campaign, plan that
    first = _planned(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    records = [_failed(number, row) for number, row in enumerate(first, 1)]
    again = _planned(b"".join(campaign_rows([(record, None) for record in records])))
    assert [row.kept for row in again] == [row.kept for row in first]
    assert [row.state for row in first] == ["pending"] * len(rows)
    # what was sent, and so what is exported: the text rendered (braces single) and stripped
    sent = [row["text"].replace("{{", "{").replace("}}", "}").strip() for row in rows]
    assert [row.kept["text"] for row in first] == sent


class _Kept:
    def __init__(self, params: tuple[object, ...]) -> None:
        self.line = int(str(params[0]))
        self.state = str(params[1])
        names = ("recipient_id", "recipient_username", "text", "external_id", "media", "consent")
        at = (2, 3, 5, 8, 9, 10)
        self.kept: dict[str, str | None] = {
            name: None if params[i] is None else str(params[i]) for name, i in zip(
                names, at, strict=True)}


def _failed(number: int, row: _Kept) -> RowRecord:
    kept = row.kept
    return RowRecord(id=number, line=row.line, state=RowState.FAILED, sender="one",
                     idempotency_key="k", recipient_id=kept["recipient_id"],
                     recipient_username=kept["recipient_username"], text=kept["text"],
                     external_id=kept["external_id"], media=kept["media"],
                     consent=kept["consent"])


def _planned(jsonl: bytes) -> list[_Kept]:
    with campaign_file("c.jsonl", jsonl) as path:
        items = read(path)
    planner = Planner(SETTINGS, campaign_dir=Path("."), suppression=Suppression())
    return [_Kept(planner.plan(item)) for item in items]
