"""The plan report: counts from the checkpoint, estimated cost and duration, the invalid rows.

Estimates are pure functions of counts and settings, so they are tested without a checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from bulkdm.policies import windowed_duration_s
from bulkdm.rates import Rate
from bulkdm.settings import ProviderName, Settings

if TYPE_CHECKING:
    from bulkdm.checkpoint import Checkpoint

__all__ = [
    "SKIP_REASONS",
    "CostEstimate",
    "DurationEstimate",
    "InvalidRow",
    "PlanReport",
    "RowCounts",
    "build_report",
    "estimate_cost",
    "estimate_duration",
    "format_report",
    "human_duration",
    "send_time_s",
    "sender_time_s",
]

#: reasons a valid row is skipped rather than sent; every other reason marks an invalid row
SKIP_REASONS: Final = frozenset({"duplicate", "suppressed", "no_consent", "removed"})
_DAY_S: Final = 86_400


@dataclass(frozen=True, kw_only=True, slots=True)
class RowCounts:
    #: campaign lines that held a row (blank lines are not rows)
    read: int
    #: rows that passed every check (pending + skipped + any state a run has moved them to)
    valid: int
    invalid: int
    skipped: int
    #: rows still to send
    pending: int
    duplicates: int
    suppressed: int
    no_consent: int
    #: rows an amend found no longer in the campaign file (skipped, never sent); not counted in
    #: ``read`` or ``skipped``
    removed: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class CostEstimate:
    provider: str
    dms: int
    media_uploads: int
    lookups: int
    #: Xquik only
    credits: int | None
    usd: float


@dataclass(frozen=True, kw_only=True, slots=True)
class DurationEstimate:
    seconds: float
    human: str
    #: ``"sender NAME"`` or ``"api key"``: the limit that sets the duration
    bound_by: str | None
    per_sender_s: dict[str, float]
    api_key_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class InvalidRow:
    line: int
    field: str | None
    reason: str | None
    message: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanReport:
    """What ``bulkdm plan`` prints; :meth:`to_json` gives the same as one JSON object."""

    #: ``planned`` (first plan), ``replaced`` (inputs changed, nothing sent), ``amended``
    #: (inputs changed after sending began, ``--amend``) or ``unchanged``
    status: str
    campaign: str
    campaign_path: str
    checkpoint_path: str
    provider: str
    rows: RowCounts
    invalid_by_reason: dict[str, int]
    skipped_by_reason: dict[str, int]
    #: pending rows per sender
    senders: dict[str, int]
    cost: CostEstimate
    duration: DurationEstimate
    #: the first invalid rows by line (all of them with ``--errors``)
    invalid_rows: tuple[InvalidRow, ...]
    #: what the plan wants the user to know, e.g. a campaign name used before
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


def send_time_s(count: int, windows: Sequence[Rate]) -> float:
    """Seconds from the first to the last of ``count`` sends under every window.

    The engine spaces sends ``period/count`` apart (of the least strict window) and keeps every
    window's count, so the slower of the two bounds rules.
    """
    if count <= 0 or not windows:
        return 0.0
    spaced_s = (count - 1) * min(w.period_s / w.count for w in windows)
    windowed_s = max((math.ceil(count / w.count) - 1) * w.period_s for w in windows)
    return max(spaced_s, windowed_s)


def estimate_duration(
    settings: Settings, pending_by_sender: Mapping[str, int], *,
    start_s: float | None = None, first_wait_s: Mapping[str, float] | None = None,
) -> DurationEstimate:
    """The slowest sender, or the API key's budget shared by all senders if that is slower.

    A sender with a send window sends only inside it, from ``start_s`` (default: now) plus its
    ``first_wait_s``; its time counts from ``start_s`` (the wait included)."""
    waits = first_wait_s or {}
    at_s = time.time() if start_s is None else start_s
    per_sender = {
        s.account: sender_time_s(settings, s.account, pending_by_sender.get(s.account, 0),
                                 at_s, waits.get(s.account, 0.0))
        for s in settings.senders
    }
    api_key_s = send_time_s(sum(pending_by_sender.values()), settings.provider.rates)
    slowest = max(per_sender, key=lambda account: per_sender[account], default=None)
    seconds, bound_by = api_key_s, "api key"
    if slowest is not None and per_sender[slowest] >= api_key_s:
        seconds, bound_by = per_sender[slowest], f"sender {slowest}"
    return DurationEstimate(
        seconds=seconds,
        human=human_duration(seconds),
        bound_by=bound_by if seconds else None,
        per_sender_s=per_sender,
        api_key_s=api_key_s,
    )


def sender_time_s(
    settings: Settings, account: str, count: int, start_s: float, first_wait_s: float = 0.0
) -> float:
    """How long ``account`` takes to send ``count`` rows from ``start_s``: its windows' pace,
    inside its send window if it has one; a first wait (a full window, a rest) comes first."""
    sender = settings.sender(account)
    windows = sender.windows if sender is not None else ()
    window = settings.send_window_of(account)
    if window is None or count == 0:
        return first_wait_s + send_time_s(count, windows)
    return first_wait_s + windowed_duration_s(window, count, windows, start_s + first_wait_s)


def estimate_cost(
    settings: Settings, *, dms: int, media_uploads: int, lookups: int
) -> CostEstimate:
    """Xquik bills credits (a DM, a media upload, a username lookup); GetXAPI bills dollars."""
    costs = settings.costs
    provider = settings.provider.name
    if provider is ProviderName.XQUIK:
        credits = (
            dms * costs.xquik_dm_credits
            + media_uploads * costs.xquik_media_credits
            + lookups * costs.xquik_lookup_credits
        )
        usd = credits * costs.xquik_credit_usd
    else:
        credits, usd = None, dms * costs.getxapi_dm_usd + lookups * costs.getxapi_lookup_usd
    return CostEstimate(
        provider=provider.value,
        dms=dms,
        media_uploads=media_uploads,
        lookups=lookups,
        credits=credits,
        usd=round(usd, 6),
    )


def _spend_notes(settings: Settings, cost: CostEstimate) -> tuple[str, ...]:
    """The estimate next to the spend cap, if there is one."""
    cap = settings.campaign.spend_cap
    if not cap.set:
        return ()
    credits = f" ({cost.credits:g} credits)" if cost.credits is not None else ""
    within = "within it" if cap.allows(cost.usd, cost.credits) else \
        "over it: the run stops before the call that would cross it"
    note = (f"spend cap {cap.describe()}: the estimate ${cost.usd:.4f}{credits} is {within}; "
            "what earlier runs spent counts too")
    return (note,)


def human_duration(seconds: float) -> str:
    """``93784`` -> ``"1d 2h 3m 4s"``; under a minute keeps seconds, longer drops zero parts."""
    whole = math.ceil(seconds)
    parts = []
    for unit, size in (("d", _DAY_S), ("h", 3600), ("m", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts) or "0s"


async def build_report(
    checkpoint: Checkpoint,
    settings: Settings,
    *,
    errors_limit: int | None,
    status: str = "unchanged",
) -> PlanReport:
    """The report for the plan stored in ``checkpoint``, priced and timed with ``settings``."""
    meta = await checkpoint.plan_meta()
    states = await checkpoint.state_counts()
    reasons = await checkpoint.reason_counts()
    senders = await checkpoint.sender_counts()
    totals = await checkpoint.plan_totals()
    invalid_rows = await checkpoint.invalid_rows(errors_limit)
    removed = reasons.pop("removed", 0)
    read, invalid, skipped = (
        sum(states.values()) - removed,
        states.get("invalid", 0),
        states.get("skipped", 0) - removed,
    )
    cost = estimate_cost(
        settings, dms=totals.pending, media_uploads=totals.media_uploads, lookups=totals.lookups
    )
    return PlanReport(
        status=status,
        campaign=meta.campaign if meta else settings.campaign.name,
        campaign_path=meta.campaign_path if meta else "",
        checkpoint_path=str(checkpoint.path),
        provider=settings.provider.name.value,
        rows=RowCounts(
            read=read,
            valid=read - invalid,
            invalid=invalid,
            skipped=skipped,
            pending=totals.pending,
            duplicates=reasons.get("duplicate", 0),
            suppressed=reasons.get("suppressed", 0),
            no_consent=reasons.get("no_consent", 0),
            removed=removed,
        ),
        invalid_by_reason=_sorted({k: v for k, v in reasons.items() if k not in SKIP_REASONS}),
        skipped_by_reason=_sorted({k: v for k, v in reasons.items() if k in SKIP_REASONS}),
        senders={s.account: senders.get(s.account, 0) for s in settings.senders},
        cost=cost,
        notes=_spend_notes(settings, cost),
        duration=estimate_duration(settings, senders),
        invalid_rows=tuple(
            InvalidRow(line=r.line, field=r.field, reason=r.reason, message=r.message)
            for r in invalid_rows
        ),
    )


def _sorted(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


_PLAN_STATUS: Final = {
    "planned": "new plan",
    "replaced": "plan replaced (the campaign or settings changed; nothing was sent yet)",
    "unchanged": "plan unchanged",
}


def format_report(report: PlanReport) -> str:
    """The report as text for a terminal."""
    rows, cost, duration = report.rows, report.cost, report.duration
    file = Path(report.campaign_path).name
    credits = f"{cost.credits} credits: " if cost.credits is not None else ""
    lines = [
        (
            f"campaign {report.campaign} ({file}, provider {report.provider}), "
            f"{_PLAN_STATUS.get(report.status, report.status)}"
        ),
        f"checkpoint      {report.checkpoint_path}",
        f"rows read       {rows.read}",
        f"valid           {rows.valid}  (to send {rows.pending})",
        f"invalid         {rows.invalid}  {_counts_text(report.invalid_by_reason)}".rstrip(),
        f"skipped         {rows.skipped}  {_counts_text(report.skipped_by_reason)}".rstrip(),
        *([f"removed         {rows.removed}  (no longer in the campaign file; not sent)"]
          if rows.removed else []),
        f"per sender      {_counts_text(report.senders)}",
        (
            f"estimated cost  ${cost.usd:.4f} ({credits}DMs {cost.dms}, "
            f"media uploads {cost.media_uploads}, username lookups {cost.lookups})"
        ),
        f"estimated time  {duration.human}"
        + (f" (bound by {duration.bound_by})" if duration.bound_by else ""),
    ]
    lines += _invalid_lines(report, file)
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _invalid_lines(report: PlanReport, file: str) -> list[str]:
    if not report.invalid_rows:
        return []
    shown, total = len(report.invalid_rows), report.rows.invalid
    more = f" (first {shown} of {total}; --errors lists all)" if shown < total else ""
    lines = ["", f"invalid rows{more}:"]
    lines += [
        f"  {file}:{row.line}  {row.field or '-'}  {row.reason}  {row.message}"
        for row in report.invalid_rows
    ]
    return lines
