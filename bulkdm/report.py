"""The plan report: counts from the checkpoint, estimated cost and duration, the invalid rows.

Estimates are pure functions of counts and settings, so they are tested without a checkpoint.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from bulkdm.ledger import ENV_VAR as LEDGER_ENV_VAR
from bulkdm.ledger import ledger_spec
from bulkdm.policies import windowed_duration_s
from bulkdm.policies.jitter import Jitter
from bulkdm.policies.rereads import run_reads
from bulkdm.policies.warmup import Warmup, ramp_days
from bulkdm.rates import Rate
from bulkdm.rows import UNBOUND
from bulkdm.settings import ProviderName, SenderSettings, Settings

if TYPE_CHECKING:
    from bulkdm.checkpoint import Checkpoint

__all__ = [
    "SKIP_REASONS",
    "CostEstimate",
    "DurationEstimate",
    "InvalidRow",
    "PlanReport",
    "ReadEstimate",
    "RowCounts",
    "billed_cost",
    "build_report",
    "estimate_cost",
    "estimate_duration",
    "estimate_reads",
    "format_report",
    "human_duration",
    "read_cost",
    "send_time_s",
    "sender_time_s",
    "spend_cap_note",
    "spread_unbound",
    "warmup_of",
    "with_account_waits",
]

#: reasons a valid row is skipped rather than sent; every other reason marks an invalid row
SKIP_REASONS: Final = frozenset({"duplicate", "suppressed", "opted_out", "no_consent", "removed"})
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
    #: what one ``bulkdm replies`` sync over every DM of the plan costs
    reply_reads: ReadEstimate | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


def send_time_s(count: int, windows: Sequence[Rate], pace_factor: float = 1.0) -> float:
    """Seconds from the first to the last of ``count`` sends under every window.

    The engine spaces sends ``period/count`` apart (of the least strict window), times
    ``pace_factor`` on average with jitter, and keeps every window's count, so the slower of
    the two bounds rules.
    """
    if count <= 0 or not windows:
        return 0.0
    spaced_s = (count - 1) * min(w.period_s / w.count for w in windows) * pace_factor
    windowed_s = max((math.ceil(count / w.count) - 1) * w.period_s for w in windows)
    return max(spaced_s, windowed_s)


def estimate_duration(
    settings: Settings, pending_by_sender: Mapping[str, int], *,
    start_s: float | None = None, first_wait_s: Mapping[str, float] | None = None,
    first_sends: Mapping[str, float] | None = None,
) -> DurationEstimate:
    """The slowest sender, or the API key's budget shared by all senders if that is slower.

    Rows bound to no sender yet (under :data:`~bulkdm.rows.UNBOUND`) are spread over the senders
    as the engine hands them out, to whichever has a slot (:func:`spread_unbound`), over those
    in ``first_wait_s`` (each waiting that long first) when it is given, else over all. A sender
    with a send window sends only inside it, from ``start_s`` (default: now) plus its wait.
    A sender on a warm-up ramp (with the account ledger on) sends each day's ramped cap,
    counted from its first send in ``first_sends`` (an account not there is new: day 0).
    ``per_sender_s`` is each sender's sending time; ``seconds`` counts its wait too.
    """
    waits = first_wait_s if first_wait_s is not None else {s.account: 0.0 for s in settings.senders}
    pending = spread_unbound(settings, pending_by_sender, waits)
    at_s = time.time() if start_s is None else start_s
    per_sender = {
        s.account: sender_time_s(settings, s.account, pending.get(s.account, 0), at_s,
                                 waits.get(s.account, 0.0), first_sends or {}, config=s)
        - waits.get(s.account, 0.0)
        for s in settings.senders
    }
    api_key_s = send_time_s(sum(pending_by_sender.values()), settings.provider.rates)
    # a sender that must wait first (its windows full of other campaigns' sends, a rest)
    # finishes that much later
    finish_s = {a: t + waits.get(a, 0.0) for a, t in per_sender.items() if pending.get(a, 0)}
    slowest = max(finish_s, key=lambda account: finish_s[account], default=None)
    seconds, bound_by = api_key_s, "api key"
    if slowest is not None and finish_s[slowest] >= api_key_s:
        seconds, bound_by = finish_s[slowest], f"sender {slowest}"
    return DurationEstimate(
        seconds=seconds,
        human=human_duration(seconds),
        bound_by=bound_by if seconds else None,
        per_sender_s=per_sender,
        api_key_s=api_key_s,
    )


def spread_unbound(
    settings: Settings, pending_by_sender: Mapping[str, int], first_wait_s: Mapping[str, float]
) -> dict[str, int]:
    """Rows per sender with the unbound ones given out so that the senders of ``first_wait_s``
    finish together: each at its long-run rate (its strictest window's), starting once its
    wait and its own rows are done. A sender resting long (a daily limit) gets few or none."""
    pending = {a: n for a, n in pending_by_sender.items() if a != UNBOUND}
    unbound = pending_by_sender.get(UNBOUND, 0)
    rates = {s.account: min((w.count / w.period_s for w in s.windows), default=1e6)
             for s in settings.senders if s.account in first_wait_s}
    if unbound <= 0 or not rates:
        return pending
    starts = {a: first_wait_s[a] + pending.get(a, 0) / r for a, r in rates.items()}

    def taken(end_s: float) -> float:
        return sum(max(0.0, end_s - starts[a]) * r for a, r in rates.items())

    low, high = min(starts.values()), max(starts.values()) + unbound / min(rates.values())
    for _ in range(60):  # bisection: the end time at which the senders take every row
        middle = (low + high) / 2
        low, high = (middle, high) if taken(middle) < unbound else (low, middle)
    exact = {a: max(0.0, high - starts[a]) * r for a, r in rates.items()}
    shares = {a: math.floor(x) for a, x in exact.items()}
    left = unbound - sum(shares.values())
    # the rows the rounding left go to the senders closest to taking one more
    for account in sorted(shares, key=lambda a: shares[a] - exact[a])[:max(left, 0)]:
        shares[account] += 1
    for account, share in shares.items():
        pending[account] = pending.get(account, 0) + share
    return pending


def sender_time_s(
    settings: Settings, account: str, count: int, start_s: float, first_wait_s: float = 0.0,
    first_sends: Mapping[str, float] | None = None, *, config: SenderSettings | None = None,
) -> float:
    """How long ``account`` takes to send ``count`` rows from ``start_s``: its windows' pace,
    inside its send window if it has one; a first wait (a full window, a rest) comes first;
    on a warm-up ramp, whole days at each day's ramped cap before the last day's rows.
    ``config``: the account's settings when already found (a pool is large)."""
    sender = config or settings.sender(account)
    windows = sender.windows if sender is not None else ()
    begin_s = start_s + first_wait_s
    ramp = _ramp_of(settings, sender)
    days = 0
    if ramp is not None and sender is not None and sender.daily_cap is not None and count:
        days, count, cap = ramp_days(ramp, sender.daily_cap, count,
                                     (first_sends or {}).get(account), begin_s)
        windows = (*sender.rates, Rate(count=cap, period_s=float(_DAY_S)))
        begin_s += days * _DAY_S
    window = (sender.send_window if sender is not None else None) or settings.campaign.send_window
    jitter = settings.sender_jitter(sender)
    factor = 1.0 if jitter is None else jitter.mean_gap_factor
    if window is None or count == 0:
        return begin_s - start_s + send_time_s(count, windows, factor)
    return begin_s - start_s + windowed_duration_s(window, count, windows, begin_s, factor)


def warmup_of(settings: Settings, account: str) -> Warmup | None:
    """The warm-up ramp ``account`` sends on: its own (on by default) when it has a daily cap
    and the account ledger is on (the ramp counts from its first send there); else ``None``."""
    return _ramp_of(settings, settings.sender(account))


def _ramp_of(settings: Settings, sender: SenderSettings | None) -> Warmup | None:
    if sender is None or sender.warmup is None or sender.daily_cap is None:
        return None
    on = _ledger_on(settings.accounts.ledger, os.environ.get(LEDGER_ENV_VAR))
    return sender.warmup if on else None


@functools.lru_cache(maxsize=8)
def _ledger_on(configured: str | None, from_env: str | None) -> bool:
    # asked for every sender of every estimate (the ETA of a pool of 10,000 included)
    return ledger_spec(configured, {LEDGER_ENV_VAR: from_env} if from_env else {}) is not None


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


def read_cost(settings: Settings, *, pages: int, results: int) -> tuple[int | None, float]:
    """(credits, dollars) of reply reads: Xquik bills each message a history page returns,
    GetXAPI each page."""
    costs = settings.costs
    if settings.provider.name is ProviderName.XQUIK:
        credits = results * costs.xquik_history_credits
        return credits, round(credits * costs.xquik_credit_usd, 6)
    return None, round(pages * costs.getxapi_page_usd, 6)


def billed_cost(settings: Settings, spent: Mapping[str, int]) -> tuple[float, float | None]:
    """(dollars, credits or None) of what a campaign was billed for: ``spent`` counts its
    ``dms``, ``uploads``, ``lookups``, and its reply reads' ``read_pages`` and ``read_results``."""
    calls = estimate_cost(settings, dms=spent.get("dms", 0),
                          media_uploads=spent.get("uploads", 0), lookups=spent.get("lookups", 0))
    credits, usd = read_cost(settings, pages=spent.get("read_pages", 0),
                             results=spent.get("read_results", 0))
    total = None if calls.credits is None else calls.credits + (credits or 0)
    return calls.usd + usd, total


def spend_cap_note(settings: Settings, spent: Mapping[str, int], what: str) -> str:
    """Why a run stops at its spend cap before ``what`` (the next DM, a reply read), with the
    share that reading replies took."""
    usd, credits = billed_cost(settings, spent)
    shown = f" ({credits:g} credits)" if credits is not None else ""
    read_credits, read_usd = read_cost(settings, pages=spent.get("read_pages", 0),
                                       results=spent.get("read_results", 0))
    reads = "" if not read_usd and not read_credits else \
        f", {read_credits:g} credits of it reading replies" if read_credits is not None else \
        f", ${read_usd:.4f} of it reading replies"
    return (f"spend cap reached: ${usd:.4f}{shown} spent of "
            f"{settings.campaign.spend_cap.describe()}{reads}; the next {what} would cross it")


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadEstimate:
    """What reading the replies of ``conversations`` sent DMs costs: at least one page each
    (GetXAPI: plus a ``dm/list`` page per sender), and on Xquik a credit per message returned,
    from one (the DM alone) to a full page. ``run``: what a run's syncs (``[replies]
    sync_every``) read over ``over_s``, each conversation when it is due
    (:mod:`bulkdm.policies.rereads`): its ``conversations`` are their reads."""

    conversations: int
    pages: int
    results_low: int
    results_high: int
    credits_low: int | None
    credits_high: int | None
    usd_low: float
    usd_high: float
    run: ReadEstimate | None = None
    sync_every_s: float = 0.0
    over_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        found: dict[str, object] = {k: getattr(self, k) for k in self.__slots__ if k != "run"}
        found["run"] = None if self.run is None else self.run.to_dict()
        return found

    def text(self) -> str:
        said = f"reading replies of {self.conversations} DMs: {self._cost()} a sync"
        if self.run is None:
            return said
        run = self.run
        cost = (f"{run.credits_low}-{run.credits_high} credits "
                f"(${run.usd_low:.4f}-${run.usd_high:.4f})") if run.credits_low is not None \
            else f"${run.usd_low:.4f}"
        return (f"{said}\n{'':16}the run's syncs (every {human_duration(self.sync_every_s)}, "
                f"over about {human_duration(self.over_s)}, old quiet conversations less often): "
                f"about {run.conversations} conversation reads, {cost}")

    def _cost(self) -> str:
        if self.credits_low is not None:
            return (f"about {self.pages} history pages, {self.credits_low}-{self.credits_high} "
                    f"credits (${self.usd_low:.4f}-${self.usd_high:.4f})")
        return f"about {self.pages} pages, ${self.usd_low:.4f}"


def estimate_reads(settings: Settings, *, conversations: int, senders: int,
                   page_size: int = 20, run_s: float | None = None) -> ReadEstimate:
    """The cost of one sync over ``conversations`` sent DMs of ``senders`` accounts; with
    ``run_s`` (the run's estimated duration) and ``[replies] sync_every``, of the run's syncs."""
    one = _one_sync(settings, conversations=conversations, senders=senders, page_size=page_size)
    every_s = settings.replies.sync_every_s
    if run_s is None or every_s <= 0:
        return one
    reads = run_reads(conversations=conversations, sync_every_s=every_s, run_s=run_s)
    return replace(one, sync_every_s=every_s, over_s=run_s, run=_one_sync(
        settings, conversations=reads, senders=senders, page_size=page_size))


def _one_sync(settings: Settings, *, conversations: int, senders: int,
              page_size: int) -> ReadEstimate:
    costs = settings.costs
    if settings.provider.name is ProviderName.XQUIK:
        low, high = conversations, conversations * page_size
        return ReadEstimate(
            conversations=conversations, pages=conversations, results_low=low,
            results_high=high, credits_low=low * costs.xquik_history_credits,
            credits_high=high * costs.xquik_history_credits,
            usd_low=round(low * costs.xquik_history_credits * costs.xquik_credit_usd, 6),
            usd_high=round(high * costs.xquik_history_credits * costs.xquik_credit_usd, 6))
    pages = conversations + (senders if conversations else 0)
    usd = round(pages * costs.getxapi_page_usd, 6)
    return ReadEstimate(conversations=conversations, pages=pages, results_low=0,
                        results_high=0, credits_low=None, credits_high=None, usd_low=usd,
                        usd_high=usd)


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


def _pacing_notes(settings: Settings) -> tuple[str, ...]:
    """Which senders' sends are spread by jitter, and what that does to the estimate."""
    by_jitter: dict[float, list[str]] = {}
    for sender in settings.senders:
        jitter = settings.sender_jitter(sender)
        if jitter is not None:
            by_jitter.setdefault(jitter.share, []).append(sender.account)
    notes = []
    for share, accounts in by_jitter.items():
        jitter = Jitter(share=share)
        notes.append(f"{_names(accounts)}: {jitter.describe()}: each send is due at the previous "
                     f"one plus the pace times 1 ± {share:g} (never sooner than the rates, caps "
                     f"and send windows allow); the estimate counts the mean gap, "
                     f"{jitter.mean_gap_factor:.3g} times the pace")
    return tuple(notes)


#: how every warm-up note of a plan starts (they are replaced once the ledger was read)
_WARMUP_NOTE: Final = "warm-up: "


def _warmup_notes(settings: Settings, first_sends: Mapping[str, float],
                  now_s: float) -> tuple[str, ...]:
    """Which senders ramp their daily cap (new to the ledger, or still on the ramp), and how an
    established account opts out."""
    new: dict[tuple[str, int, int], list[str]] = {}
    ramping = []
    for sender in settings.senders:
        ramp = _ramp_of(settings, sender)
        if ramp is None or sender.daily_cap is None:
            continue
        first_s = first_sends.get(sender.account)
        if ramp.done(first_s, now_s):
            continue
        cap = ramp.cap(sender.daily_cap, first_s, now_s)
        if first_s is None:
            new.setdefault((ramp.describe(), cap, sender.daily_cap), []).append(sender.account)
        else:
            ramping.append(f"{sender.account} is on day {ramp.day(first_s, now_s)} of its ramp "
                           f"({ramp.describe()}): {cap}/{sender.daily_cap} today")
    notes = [f"{_WARMUP_NOTE}{_names(accounts)} new to the account ledger: the daily cap ramps "
             f"{described} ({cap}/{daily} on day 0, all of it from the ramp's last day)"
             for (described, cap, daily), accounts in new.items()]
    notes += [_WARMUP_NOTE + text for text in ramping]
    if notes:
        notes.append(f"{_WARMUP_NOTE}the estimate counts the ramp; an established account (it "
                     "has sent before, outside this ledger) opts out with warmup = false in its "
                     "[[senders]] table (or [campaign] warmup = false for all)")
    return tuple(notes)


def _names(accounts: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(accounts) - shown} more" if len(accounts) > shown else ""
    return ", ".join(accounts[:shown]) + more


def human_duration(seconds: float) -> str:
    """``93784`` -> ``"1d 2h 3m 4s"``; under a minute keeps seconds, longer drops zero parts."""
    whole = math.ceil(seconds)
    parts = []
    for unit, size in (("d", _DAY_S), ("h", 3600), ("m", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts) or "0s"


async def _totals(
    checkpoint: Checkpoint, states: Mapping[str, int], usernames_only: bool, senders: int
) -> tuple[int, int, int]:
    """Pending rows, user lookups and media uploads of the plan."""
    if usernames_only:
        pending = states.get("pending", 0)
        return pending, pending, 0
    totals = await checkpoint.plan_totals(senders=senders)
    return totals.pending, totals.lookups, totals.media_uploads


async def build_report(
    checkpoint: Checkpoint,
    settings: Settings,
    *,
    errors_limit: int | None,
    status: str = "unchanged",
    usernames_only: bool = False,
) -> PlanReport:
    """The report for the plan stored in ``checkpoint``, priced and timed with ``settings``.

    ``usernames_only``: the planner saw that no pending row has a recipient id or media, so
    every pending row needs a lookup and none an upload, without reading each of them again
    (a third of a second on a million-row plan).
    """
    meta = await checkpoint.plan_meta()
    states = await checkpoint.state_counts()
    reasons = await checkpoint.reason_counts()
    # rows bound to no sender yet counted as the run is expected to spread them
    senders = spread_unbound(settings, await checkpoint.sender_counts(),
                             {s.account: 0.0 for s in settings.senders})
    pending, lookups, media_uploads = await _totals(checkpoint, states, usernames_only,
                                                    len(settings.senders))
    invalid_rows = await checkpoint.invalid_rows(errors_limit)
    removed = reasons.pop("removed", 0)
    read, invalid, skipped = (
        sum(states.values()) - removed,
        states.get("invalid", 0),
        states.get("skipped", 0) - removed,
    )
    cost = estimate_cost(
        settings, dms=pending, media_uploads=media_uploads, lookups=lookups
    )
    duration = estimate_duration(settings, senders)
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
            pending=pending,
            duplicates=reasons.get("duplicate", 0),
            suppressed=reasons.get("suppressed", 0),
            no_consent=reasons.get("no_consent", 0),
            removed=removed,
        ),
        invalid_by_reason=_sorted({k: v for k, v in reasons.items() if k not in SKIP_REASONS}),
        skipped_by_reason=_sorted({k: v for k, v in reasons.items() if k in SKIP_REASONS}),
        senders={s.account: senders.get(s.account, 0) for s in settings.senders},
        cost=cost,
        notes=(_pacing_notes(settings) + _warmup_notes(settings, {}, time.time())
               + _spend_notes(settings, cost)),
        duration=duration,
        reply_reads=estimate_reads(settings, conversations=pending + states.get("sent", 0),
                                   senders=len(settings.senders), run_s=duration.seconds),
        invalid_rows=tuple(
            InvalidRow(line=r.line, field=r.field, reason=r.reason, message=r.message)
            for r in invalid_rows
        ),
    )


async def with_account_waits(
    report: PlanReport, checkpoint: Checkpoint, settings: Settings, waits: Mapping[str, float],
    first_sends: Mapping[str, float] | None = None, *,
    rates: Mapping[str, tuple[Rate, ...]] | None = None,
) -> PlanReport:
    """``report`` with its duration (and its rows per sender) counting how long each account
    waits before it may send (``waits``: from the account pool's ledger), where each is on its
    warm-up ramp (``first_sends``: each account's first send in the ledger), and each
    account's windows as every campaign set them (``rates``: the stricter hold)."""
    if rates:
        settings = replace(settings, senders=tuple(
            replace(s, rates=rates.get(s.account) or s.rates) for s in settings.senders))
    counts = await checkpoint.sender_counts()
    senders = spread_unbound(settings, counts, waits)
    first_sends = first_sends or {}
    notes = tuple(n for n in report.notes if not n.startswith(_WARMUP_NOTE))
    duration = estimate_duration(settings, counts, first_wait_s=waits, first_sends=first_sends)
    reads = report.reply_reads
    if reads is not None:  # the run's syncs go on as long as the run
        reads = estimate_reads(settings, conversations=reads.conversations,
                               senders=len(settings.senders), run_s=duration.seconds)
    return replace(report, senders={s.account: senders.get(s.account, 0) for s in settings.senders},
                   duration=duration, reply_reads=reads,
                   notes=_warmup_notes(settings, first_sends, time.time()) + notes)


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
        *([f"replies         {report.reply_reads.text()}"] if report.reply_reads else []),
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
