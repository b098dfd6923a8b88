"""The amend's diff, a pure function: which rows are kept, planned again, added or removed."""

from __future__ import annotations

from bulkdm.amend import PlannedLine, diff_plan
from bulkdm.checkpoint import pending_params
from bulkdm.rows import RowRecord, RowState

SENDERS = frozenset({"s1"})


def _old(row_id: int, line: int, username: str, text: str, state: RowState = RowState.PENDING,
         *, reason: str | None = None, external_id: str | None = None) -> RowRecord:
    return RowRecord(row_id, line, state, None, username, text, "s1", external_id, None, None,
                     f"k{row_id}", reason=reason, text_sha256=f"sha:{text}",
                     duplicate_of_line=1 if reason == "duplicate" else None)


def _new(line: int, username: str, text: str, *, external_id: str | None = None) -> PlannedLine:
    params = pending_params(line, None, username, f"u:{username}", text, f"sha:{text}", "s1",
                            external_id, None, None, f"new{line}")
    return PlannedLine(params, None)


def _fates(old: list[RowRecord], new: list[PlannedLine]) -> list[tuple[int, str]]:
    rows, _ = diff_plan(old, new, senders=SENDERS)
    return [(r.record.line if r.record else -1, r.fate) for r in rows]


def test_an_inserted_line_shifts_nothing() -> None:
    old = [_old(1, 1, "ana", "hi", RowState.SENT), _old(2, 2, "ben", "hi")]
    rows, summary = diff_plan(old, [_new(1, "cy", "hi"), _new(2, "ana", "hi"),
                                    _new(3, "ben", "hi")], senders=SENDERS)
    assert [r.fate for r in rows] == ["unchanged", "unchanged", "added"]
    assert (summary.added, summary.unchanged, summary.kept) == (1, 2, ())


def test_a_repeat_matches_its_own_occurrence_and_a_removed_first_keeps_the_second() -> None:
    old = [_old(1, 1, "ana", "hi"), _old(2, 2, "ana", "hi", RowState.SKIPPED, reason="duplicate")]
    assert _fates(old, [_new(1, "ana", "hi"), _new(2, "ana", "hi")]) == [
        (1, "unchanged"), (2, "unchanged")]
    assert _fates(old, [_new(1, "ana", "hi")]) == [(1, "unchanged"), (2, "removed")]


def test_sent_rows_are_kept_and_listed_unsent_ones_follow_the_file() -> None:
    old = [_old(1, 1, "ana", "hi", RowState.SENT, external_id="a"),
           _old(2, 2, "ben", "hi", RowState.UNKNOWN, external_id="b"),
           _old(3, 3, "jhon", "hi"), _old(4, 4, "dee", "hi")]
    rows, summary = diff_plan(old, [_new(1, "ana", "fixed", external_id="a"),
                                    _new(3, "john", "hi")], senders=SENDERS)
    assert [r.fate for r in rows] == ["kept", "kept", "changed", "removed"]
    assert [(k.identity, k.state) for k in summary.kept] == [("external_id a", "sent"),
                                                            ("external_id b", "unknown")]
    assert (summary.changed, summary.removed) == (1, 1)  # jhon -> john on its line; dee gone


def test_a_removed_row_put_back_is_planned_again_not_added() -> None:
    old = [_old(1, 1, "ana", "hi"),
           _old(2, 2, "ben", "hi", RowState.SKIPPED, reason="removed")]
    rows, summary = diff_plan(old, [_new(1, "ana", "hi"), _new(2, "ben", "hi")], senders=SENDERS)
    assert [r.fate for r in rows] == ["unchanged", "changed"]
    assert (summary.added, summary.changed) == (0, 1)
    assert diff_plan(old, [_new(1, "ana", "hi")], senders=SENDERS)[0][1].fate == "gone"


def test_an_added_row_for_a_recipient_already_sent_is_a_duplicate() -> None:
    old = [_old(1, 1, "ana", "hi", RowState.SENT, external_id="a")]
    rows, _ = diff_plan(old, [_new(1, "ana", "hi", external_id="a"),
                              _new(2, "ana", "hello", external_id="b")], senders=SENDERS)
    assert [(r.fate, r.duplicate_of) for r in rows] == [("unchanged", None), ("added", 1)]
