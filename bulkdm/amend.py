"""Amend a running campaign: apply an edited campaign file or settings to its checkpoint.

Rows are matched by a stable identity (the external id, else the recipient as written, with an
occurrence number for repeats), not by line, so an inserted line shifts nothing; a row the
identity cannot match may still match the unsent row on its line (an edited recipient). Then:

- an unchanged row keeps its state, sender and key (only its line follows the file);
- a changed row that was never attempted, or provably not delivered (``pending``, ``skipped``,
  ``invalid``), is planned again: new text, new key, and suppression or consent applied at once;
- a changed or removed row that may have been delivered (``sent``, ``sending``, ``unknown``) or
  was attempted and failed is left as it is, and listed;
- an unsent row no longer in the file becomes ``skipped`` (``removed``), never dropped;
- a new row is added, after the others; repeats of a recipient are skipped as duplicates.

The diff is a pure function of the old rows and the new plan (:func:`diff_plan`);
:func:`amend_checkpoint` applies it in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from bulkdm import checkpoint as cp
from bulkdm.checkpoint import Checkpoint, HandoffCursor, PlanMeta, RowParams, Write
from bulkdm.rows import FINAL_STATES, RowRecord, RowState

__all__ = ["AmendSummary", "KeptRow", "PlannedLine", "amend_checkpoint", "diff_plan"]

_UNSENT: Final = frozenset(RowState(s) for s in cp.UNSENT_STATES)
_IN_PLAY: Final = frozenset({RowState.SENDING, RowState.UNKNOWN, RowState.SENT})
_SKIP_AT_ONCE: Final = frozenset({"suppressed", "no_consent"})
_REMOVED: Final = "removed"
_PAGE: Final = 5000
# RowParams positions (see checkpoint.RowParams)
_LINE: Final = 0
_STATE: Final = 1
_UID: Final = 2
_UNAME: Final = 3
_RKEY: Final = 4
_TSHA: Final = 6
_EXT: Final = 8
_MEDIA: Final = 9
_CONSENT: Final = 10
_FIELD: Final = 12
_REASON: Final = 13


@dataclass(frozen=True, slots=True)
class PlannedLine:
    """One row of the amended plan, and the sender its row pins (``None``: any sender)."""

    params: RowParams
    pinned: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class KeptRow:
    """A row the edit changed or removed, left as it is because it may have been delivered."""

    line: int
    identity: str
    state: str
    change: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AmendSummary:
    added: int = 0
    changed: int = 0
    removed: int = 0
    suppressed: int = 0
    unchanged: int = 0
    kept: tuple[KeptRow, ...] = ()

    def lines(self, limit: int = 20) -> list[str]:
        """What the amend changed, as the plan report prints it."""
        lines = [
            (f"amend: {self.added} added, {self.changed} changed (planned again), "
             f"{self.removed} removed (now skipped), {self.suppressed} newly suppressed or "
             f"without consent, {self.unchanged} unchanged")
        ]
        if self.kept:
            more = f" (first {limit})" if len(self.kept) > limit else ""
            rows = "1 edited row was" if len(self.kept) == 1 else f"{len(self.kept)} edited rows were"
            lines.append(f"{rows} already sent or attempted, and kept as it was: never sent "
                         f"again{more}:")
            lines += [f"  line {k.line} ({k.identity}): {k.state}; {k.change}"
                      for k in self.kept[:limit]]
        return lines


@dataclass(slots=True)
class _Row:
    """One row of the amended checkpoint: an old record, its new plan, or both."""

    record: RowRecord | None
    new: PlannedLine | None = None
    #: "unchanged", "changed", "added", "removed", "kept" (in play, left as it is) or "gone"
    #: (removed by an earlier amend)
    fate: str = "unchanged"
    #: the line of the row it repeats (it ends ``skipped``, ``duplicate``), once marked
    duplicate_of: int | None = None


def diff_plan(
    old: Sequence[RowRecord], new: Sequence[PlannedLine], *, senders: frozenset[str]
) -> tuple[list[_Row], AmendSummary]:
    """Match the new plan to the old rows; every row with its fate, and the summary."""
    rows = [_Row(record) for record in old]
    live = [(r.record, r) for r in rows if r.record is not None and not _is_removed(r.record)]
    by_identity = _numbered(live)
    unmatched: list[PlannedLine] = []
    seen: dict[str, int] = {}
    for planned in new:
        identity = _identity_of(planned.params)
        seen[identity] = seen.get(identity, -1) + 1
        row = by_identity.pop((identity, seen[identity]), None)
        if row is None:
            unmatched.append(planned)
        else:
            row.new = planned
    # a row an earlier amend removed comes back when the file has it again; what the identity
    # missed may be an edited recipient: the unsent row on the same line
    removed: dict[str, list[_Row]] = {}
    for row in rows:
        if row.record is not None and _is_removed(row.record):
            removed.setdefault(_record_identity(row.record), []).append(row)
    by_line = {record.line: row for record, row in live
               if row.new is None and record.state in _UNSENT}
    for planned in unmatched:
        again = removed.get(_identity_of(planned.params))
        row = again.pop(0) if again else by_line.pop(planned.params[_LINE], None)
        if row is None:
            rows.append(_Row(None, planned, fate="added"))
        else:
            row.new = planned
    kept = [_fate(row, senders) for row in rows]
    _mark_duplicates(rows)
    return rows, _summary(rows, [k for k in kept if k is not None])


def _numbered(live: list[tuple[RowRecord, _Row]]) -> dict[tuple[str, int], _Row]:
    # the n-th row of an identity, in line order, matches the n-th of the new file
    numbered: dict[tuple[str, int], _Row] = {}
    seen: dict[str, int] = {}
    for record, row in sorted(live, key=lambda pair: (pair[0].line, pair[0].id)):
        identity = _record_identity(record)
        seen[identity] = seen.get(identity, -1) + 1
        numbered[(identity, seen[identity])] = row
    return numbered


def _identity(external_id: object, username: object, user_id: object, line: int) -> str:
    if external_id is not None:
        return f"external_id {external_id}"
    if username is not None:
        return f"@{str(username).lower()}"
    if user_id is not None:
        return f"id {user_id}"
    return f"line {line}"


def _record_identity(record: RowRecord) -> str:
    return _identity(record.external_id, record.recipient_username, record.recipient_id,
                     record.line)


def _identity_of(params: RowParams) -> str:
    return _identity(params[_EXT], params[_UNAME], params[_UID], params[_LINE])


def _is_removed(record: RowRecord | None) -> bool:
    return record is not None and record.state is RowState.SKIPPED and record.reason == _REMOVED


def _fate(row: _Row, senders: frozenset[str]) -> KeptRow | None:
    """Decide what happens to ``row``; a row left as it is despite an edit is returned."""
    record, new = row.record, row.new
    if record is None:
        return None  # added
    identity = _record_identity(record)
    if new is None:
        if _is_removed(record):
            row.fate = "gone"
            return None
        if record.state in _UNSENT:
            row.fate = "removed"
            return None
        row.fate = "kept"
        return KeptRow(line=record.line, identity=identity, state=record.state.value,
                       change="no longer in the campaign file")
    if record.state in _UNSENT:
        same = _plan_view(record) == _new_view(new) and _sender_ok(record, new, senders)
        row.fate = "unchanged" if same else "changed"
        return None
    if _message_view(record) == _message_view_new(new):
        return None
    row.fate = "kept"
    p = new.params
    # a line now invalid (a sender the settings no longer name) changed no message
    change = (f"its line is now invalid ({p[_FIELD]}: {p[_REASON]})"
              if p[_STATE] == RowState.INVALID.value
              else "its recipient, text or media changed in the file")
    return KeptRow(line=p[_LINE], identity=identity, state=record.state.value, change=change)


def _recipient(username: object, user_id: object) -> str | None:
    if username is not None:
        return f"u:{str(username).lower()}"
    return None if user_id is None else f"id:{user_id}"


def _plan_view(record: RowRecord) -> tuple[object, ...]:
    # a duplicate was pending when it was planned; duplicates are marked again after the diff
    state = RowState.PENDING.value if record.reason == "duplicate" else record.state.value
    final = state != RowState.PENDING.value
    return (state, record.reason if final else None, record.field if final else None,
            _recipient(record.recipient_username, record.recipient_id), record.text_sha256,
            _text(record.media), _text(record.consent), _text(record.external_id))


def _new_view(new: PlannedLine) -> tuple[object, ...]:
    p = new.params
    final = p[_STATE] != RowState.PENDING.value
    return (p[_STATE], p[_REASON] if final else None, p[_FIELD] if final else None,
            _recipient(p[_UNAME], p[_UID]), p[_TSHA], p[_MEDIA], p[_CONSENT], p[_EXT])


def _sender_ok(record: RowRecord, new: PlannedLine, senders: frozenset[str]) -> bool:
    if record.state is not RowState.PENDING:
        return True
    if new.pinned is not None:
        return record.sender == new.pinned
    # unbound (late binding), or bound by a sender still configured
    return record.sender is None or record.sender in senders


def _message_view(record: RowRecord) -> tuple[object, ...]:
    return (_recipient(record.recipient_username, record.recipient_id), record.text_sha256,
            record.media)


def _message_view_new(new: PlannedLine) -> tuple[object, ...]:
    p = new.params
    if p[_STATE] == RowState.INVALID.value:
        return (None, None, None)
    return (_recipient(p[_UNAME], p[_UID]), p[_TSHA], p[_MEDIA])


def _text(value: object) -> str | None:
    # SQLite's column affinity can hand back an int for a digits-only text
    return None if value is None else str(value)


def _mark_duplicates(rows: list[_Row]) -> None:
    """A recipient is messaged once: a row already in play keeps it, then an unchanged row,
    then the first line; every other pending row for it becomes a duplicate."""
    ranked = []
    for row in rows:
        view = _final_view(row)
        if view is not None:
            ranked.append((view, row))
    keeper: dict[str, int] = {}
    for (_rank, line, key, pending), row in sorted(ranked, key=lambda item: item[0][:2]):
        first = keeper.setdefault(key, line)
        if pending and first != line:
            row.duplicate_of = first
    for row in rows:
        record = row.record
        was_duplicate = record is not None and record.reason == "duplicate"
        if row.fate == "unchanged" and was_duplicate != (row.duplicate_of is not None):
            row.fate = "changed"  # its repeat was added or removed: planned again
        elif row.fate == "unchanged" and was_duplicate and record is not None \
                and record.duplicate_of_line != row.duplicate_of:
            row.fate = "changed"


def _final_view(row: _Row) -> tuple[int, int, str, bool] | None:
    """(rank, line, recipient key, pending) of a row that holds its recipient, or None."""
    record, new = row.record, row.new
    if row.fate in ("added", "changed") and new is not None:
        p = new.params
        if p[_STATE] != RowState.PENDING.value or p[_RKEY] is None:
            return None
        return 2, p[_LINE], str(p[_RKEY]), True
    if row.fate == "removed" or record is None:
        return None
    pending = record.state is RowState.PENDING or record.reason == "duplicate"
    if not pending and record.state not in _IN_PLAY:
        return None
    key = f"id:{record.recipient_id}" if record.recipient_id is not None else \
        f"u:{str(record.recipient_username or '').lower()}"
    line = new.params[_LINE] if new is not None else record.line
    return (1 if pending else 0), line, key, pending


def _summary(rows: list[_Row], kept: list[KeptRow]) -> AmendSummary:
    fates = [row.fate for row in rows]
    suppressed = sum(
        1 for row in rows
        if row.fate == "changed" and row.new is not None and row.record is not None
        and row.new.params[_REASON] in _SKIP_AT_ONCE and row.record.reason not in _SKIP_AT_ONCE
    )
    return AmendSummary(
        added=fates.count("added"), changed=fates.count("changed"),
        removed=fates.count("removed"), suppressed=suppressed,
        unchanged=fates.count("unchanged"), kept=tuple(kept),
    )


def _final_params(row: _Row) -> RowParams:
    assert row.new is not None
    p = row.new.params
    if row.duplicate_of is None:
        return p
    message = f"the same recipient as line {row.duplicate_of}; messaged once"
    return (p[0], RowState.SKIPPED.value, p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10],
            p[11], None, "duplicate", message, row.duplicate_of, p[16])


def _writes(rows: list[_Row], checkpoint: Checkpoint, now_iso: str) -> tuple[list[Write], bool]:
    """The writes of the amend, and whether a row already in the handoff file changed."""
    writes: list[Write] = []
    rewritten = False
    for row in rows:
        record = row.record
        if row.fate in ("added", "changed"):
            params = _final_params(row)
            final = params[_STATE] != RowState.PENDING.value
            seq, at = (checkpoint.next_seq(), now_iso) if final else (None, None)
            if record is None:
                writes.append(cp.amend_insert(params=params, seq=seq, finished_at=at))
            else:
                writes.append(cp.amend_update(row_id=record.id, params=params, seq=seq,
                                              finished_at=at))
        elif row.fate == "removed" and record is not None:
            writes.append(cp.amend_remove(row_id=record.id, seq=checkpoint.next_seq(),
                                          finished_at=now_iso))
        elif row.fate in ("unchanged", "kept") and record is not None and row.new is not None \
                and row.new.params[_LINE] != record.line:
            # the line follows the file, also for a row kept as it was sent; a record the
            # handoff file holds names its line, so the file is written again
            writes.append(cp.amend_line(row_id=record.id, line=row.new.params[_LINE]))
            rewritten = rewritten or record.state in FINAL_STATES
        if record is not None and row.fate in ("changed", "removed") \
                and record.state in (RowState.SKIPPED, RowState.INVALID):
            rewritten = True
    return writes, rewritten


async def _old_rows(checkpoint: Checkpoint) -> list[RowRecord]:
    rows: list[RowRecord] = []
    states = tuple(state.value for state in RowState)
    while page := await checkpoint.rows_by_state(states, after_id=rows[-1].id if rows else 0,
                                                 limit=_PAGE):
        rows += page
    return rows


async def amend_checkpoint(
    checkpoint: Checkpoint, meta: PlanMeta, planned: Iterable[PlannedLine], *,
    senders: frozenset[str],
) -> AmendSummary:
    """Apply the amended plan ``planned`` to ``checkpoint`` in one transaction (see the module).

    The plan's meta becomes ``meta``. When a row the handoff file already holds changed, the
    handoff cursor goes back to the start, so the next run writes the file again from the
    checkpoint, one line per row.
    """
    old = await _old_rows(checkpoint)
    rows, summary = diff_plan(old, list(planned), senders=senders)
    writes, rewritten = _writes(rows, checkpoint, meta.created_at)
    writes += cp.set_plan_meta(meta)
    # what `status` says of a sender the settings no longer name while rows it sent are in
    # doubt (the amend leaves those rows as they are), as a run's end records it
    writes += [*cp.unmark_removed(senders),
               *cp.mark_removed(await checkpoint.in_doubt_unnamed(senders))]
    if rewritten:
        cursor = await checkpoint.handoff_cursor()
        writes += cp.set_handoff_cursor(HandoffCursor(seq=0, offset=0, path=cursor.path))
    await checkpoint.submit(writes)
    return summary
