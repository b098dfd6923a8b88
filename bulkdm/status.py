"""``bulkdm status``: what a checkpoint holds, readable while a run holds it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Final

from bulkdm.checkpoint import REMOVED, Checkpoint, SenderRecord
from bulkdm.progress import format_duration
from bulkdm.rows import UNBOUND, RowState
from bulkdm.runlock import maybe_running
from bulkdm.timestamps import iso_utc, parse_iso

__all__ = ["SenderStatus", "Status", "read_status", "status_text"]

#: a sender's state while an ``--until-done`` run waits out an outage, or waits for the
#: sender's windows (a daily cap, a send window) to free
_WAITING: Final = "waiting"
#: states in which a sender sends nothing until the user acts: out (broken: its first call in
#: the next run tries again), removed (the settings no longer name it; its rows are in doubt)
_NO_SENDS: Final = ("out", REMOVED)


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderStatus:
    account: str
    #: rows this sender delivered, over every run of the campaign
    sent: int
    #: rows left to it (pending, in flight, or in doubt and to be settled)
    waiting: int
    state: str
    reason: str | None
    next_due_at: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Status:
    campaign: str
    provider: str
    counts: dict[str, int]
    failures_by_code: dict[str, int]
    skipped_by_reason: dict[str, int]
    senders: list[SenderStatus]
    #: what ``bulkdm replies`` recorded: answers, rows answered, rows whose recipient opted out
    #: in an answer, and the reply rate (rows answered / rows sent)
    replies: dict[str, float | int] = field(default_factory=dict)
    #: how the last run ended: ``finish_reason`` (``completed``, ``paused``, ``interrupted``,
    #: ``stopped_by_provider``, ``stopped_at_spend_cap``, ``stopped_by_breaker``),
    #: ``ended_at`` and ``detail`` (empty before any run ended)
    last_run: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


async def read_status(checkpoint: Checkpoint) -> Status:
    meta = await checkpoint.plan_meta()
    # every state, 0 included: a script reads counts["failed"] without a KeyError
    counts = {state.value: 0 for state in RowState} | await checkpoint.state_counts()
    records = {r.account: r for r in await checkpoint.sender_records()}
    sent = await checkpoint.sender_counts("sent")
    waiting = await checkpoint.sender_counts("pending")
    for state in ("sending", "unknown"):  # in flight, or in doubt after a kill: not done
        for account, n in (await checkpoint.sender_counts(state)).items():
            waiting[account] = waiting.get(account, 0) + n
    senders = []
    now_s = time.time()
    last_run = await checkpoint.last_run()
    rows_left = bool(counts[RowState.PENDING.value] + counts[RowState.UNKNOWN.value])
    running = await asyncio.to_thread(maybe_running, checkpoint.path)
    if "waits_until" in last_run and not running:
        last_run = _gone(last_run)
    held = _held(last_run, now_s, rows_left=rows_left, running=running)
    # a paused run's waits say when to run again; "no run waits for it" would add nothing
    waits = _waits(await checkpoint.sender_waits(), now_s, rows_left=rows_left,
                   running=running or last_run.get("finish_reason") == "paused",
                   accounts=set(waiting) | set(records) | set(sent),
                   blocked={a for a, r in records.items() if _sender_state(
                       r, now_s, waiting=0, held=None) in (*_NO_SENDS, "resting")})
    # every sender the campaign used, also once it is done: one with rows sent and none left
    for account in sorted(set(waiting) | set(records) | set(sent)):
        record = records.get(account)
        due_s = await checkpoint.next_due_s(account)
        if record is not None and record.until_s is not None and due_s is not None:
            due_s = max(due_s, record.until_s)
        state = _sender_state(record, now_s, waiting=waiting.get(account, 0),
                              held=held or waits.get(account), unbound=waiting.get(UNBOUND, 0))
        reason = record.reason if record else None
        hold = waits.get(account) if state == "paused" else held or waits.get(account)
        if state in (_WAITING, "paused") and hold is not None:
            reason, due_s = hold.why, max(due_s or hold.until_s, hold.until_s)
        if state in _NO_SENDS:
            due_s = None  # its rows wait for it to be fixed or named again, not for a time
        senders.append(SenderStatus(
            account=account, sent=sent.get(account, 0), waiting=waiting.get(account, 0),
            state=state, reason=reason, next_due_at=iso_utc(due_s) if due_s else None,
        ))
    return Status(
        campaign=meta.campaign if meta else "", provider=meta.provider if meta else "",
        counts=counts, failures_by_code=await checkpoint.failure_counts(),
        skipped_by_reason=await checkpoint.reason_counts(("skipped",)), senders=senders,
        replies=await _replies(checkpoint, counts.get("sent", 0)),
        last_run=last_run,
    )


async def _replies(checkpoint: Checkpoint, sent: int) -> dict[str, float | int]:
    replies, answered, opted_out = await checkpoint.reply_counts()
    return {"replies": replies, "answered": answered, "opted_out": opted_out,
            "reply_rate": round(answered / sent, 4) if sent else 0.0}


def status_text(status: Status) -> str:
    total = sum(status.counts.values())
    lines = [f"campaign {status.campaign} ({status.provider}): {total} rows"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(status.counts.items()) if v))
    if status.failures_by_code:
        lines.append("failed by code: " + ", ".join(
            f"{k} {v}" for k, v in sorted(status.failures_by_code.items(), key=lambda kv: -kv[1])))
    if status.skipped_by_reason:
        lines.append("skipped by reason: " + ", ".join(
            f"{k} {v}" for k, v in sorted(status.skipped_by_reason.items())))
    if status.replies.get("replies"):
        r = status.replies
        lines.append(f"replies: {r['replies']} from {r['answered']} recipients "
                     f"(reply rate {r['reply_rate']:.1%}), {r['opted_out']} opted out")
    if status.last_run:
        run = status.last_run
        detail = f": {run['detail']}" if run.get("detail") else ""
        lines.append(f"last run: {run.get('finish_reason')} at {run.get('ended_at')}{detail}")
    now_s = time.time()
    for sender in status.senders:
        when = ""
        due = parse_iso(sender.next_due_at)
        if due is not None:
            due_s = due.timestamp()
            when = "now" if due_s <= now_s else f"in {format_duration(due_s - now_s)}"
            when = f", next {when}"
        why = f" ({sender.reason})" if sender.reason else ""
        lines.append(f"  sender {sender.account}: {sender.state}{why}, {sender.sent} sent, "
                     f"{sender.waiting} left{when}")
    return "\n".join(lines)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Held:
    """Every sender with rows left holds back: ``state`` says how, until ``until_s``."""

    state: str
    why: str | None = None
    until_s: float = 0.0


def _gone(last_run: dict[str, str]) -> dict[str, str]:
    """The last run as recorded by an ``--until-done`` run waiting out an outage whose process
    is gone (``kill -9``): it tries nothing again."""
    kept = {k: v for k, v in last_run.items() if k not in ("waits_for", "waits_until")}
    detail = last_run.get("detail", "").split("; --until-done waits out")[0]
    return kept | {"detail": f"{detail}; the --until-done run that waited is gone: run the "
                             "same command to resume"}


def _held(last_run: dict[str, str], now_s: float, *, rows_left: bool,
          running: bool) -> _Held | None:
    """Rows left after a paused run wait for a cap, a rest or a window: no sender is "done"
    (paused). While an ``--until-done`` run waits out an outage, its senders wait for what
    did not answer, until the run tries again (a wait already over: the run went on, or its
    process is gone; then nothing is held)."""
    if not rows_left:
        return None
    if last_run.get("finish_reason") == "paused":
        return _Held(state="paused")
    until = parse_iso(last_run.get("waits_until"))
    if until is None or until.timestamp() <= now_s or not running:
        return None
    return _Held(state=_WAITING, until_s=until.timestamp(),
                 why=f"for {last_run.get('waits_for', 'the provider')} to answer again; "
                     f"--until-done tries again at {last_run['waits_until']}")


def _waits(recorded: dict[str, tuple[float, str]], now_s: float, *, rows_left: bool,
           running: bool, accounts: set[str], blocked: set[str]) -> dict[str, _Held]:
    """The senders a run waits for (a daily cap, a send window) while rows are left, and the
    rows bound to none when every other sender waits too, is out or rests (``blocked``):
    until the first is free."""
    if not rows_left:
        return {}
    # a run killed while it slept: the window still holds, but no run waits for it
    gone = "" if running else "; no run waits for it now: run the same command to resume"
    held = {account: _Held(state=_WAITING, why=why + gone, until_s=until_s)
            for account, (until_s, why) in recorded.items() if until_s > now_s}
    named = accounts - {UNBOUND}
    if UNBOUND in accounts and held and named <= held.keys() | blocked:
        first = min(held.values(), key=lambda h: h.until_s)
        held[UNBOUND] = _Held(state=_WAITING, until_s=first.until_s,
                              why=f"every sender waits; the first is free at "
                                  f"{iso_utc(first.until_s)}{gone}")
    return held


def _sender_state(record: SenderRecord | None, now_s: float, *, waiting: int,
                  held: _Held | None, unbound: int = 0) -> str:
    """out, removed, resting (a rest recorded, rows of its own or not), paused (the last run
    paused with rows left: each waits for a cap, a rest or a window; see its note), waiting (an
    ``--until-done`` run waits out an outage, or for the sender's windows), done (nothing left
    that it could send: ``unbound`` rows are any sender's), or ready."""
    if record is not None and record.state in _NO_SENDS:
        return record.state
    if record is not None and record.until_s is not None and record.until_s > now_s:
        return "resting"
    if held is not None and (held.state != "paused" or waiting or unbound):
        return held.state
    return "ready" if waiting else "done"
