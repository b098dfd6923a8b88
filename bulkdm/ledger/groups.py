"""How a ledger decides a group of reservations (:meth:`Ledger.reserve_many`), the same for
every backend: on what it read of the group's subjects once (rests, waiters, limits), kept true
by the group's own decisions, and each window's count of sends; the backend reads those and
writes what the group decided (:class:`Known`), in the group's one transaction.

A reservation per statement, nine statements an ask, held a pool of 2,000 senders back
(benchmarks/README.md); a group now counts an ask's windows in one statement at most and writes
its grants and waiters in one each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bulkdm.ledger.base import (
    BATCH_IDS,
    Ask,
    CampaignLimits,
    Grant,
    effective_rates,
    next_try_s,
    rates_text,
    room,
    turn_refusal,
    unit_ids,
)
from bulkdm.rates import Rate

__all__ = ["Known", "counted_rates", "fit", "grants", "opening", "refusal", "windows"]


@dataclass(slots=True, kw_only=True)
class Known:
    """What a group read of its subjects, and what it decided so far."""

    #: each resting subject's (until when, why)
    rests: dict[str, tuple[float, str]]
    #: each subject's holders that will ask again (within WAIT_GRACE_S), and when
    waiting: dict[str, dict[str, float]]
    limits: dict[str, list[CampaignLimits]]
    #: each subject's units of all its reservations kept, as read (with the group's grants, a
    #: bound on every window's count: :meth:`total`), where the backend keeps one
    totals: dict[str, int] | None = None
    #: the units the group granted each subject (their rows are written at its end)
    granted: dict[str, int] = field(default_factory=dict)
    #: the group's grants in order: (subject, units)
    grants: list[tuple[str, int]] = field(default_factory=list)
    #: the waiters to write: each (subject, holder)'s next ask, or None to delete it
    waits: dict[tuple[str, str], float | None] = field(default_factory=dict)

    def wait(self, subject: str, holder: str, next_s: float | None) -> None:
        """``holder`` contends for ``subject`` and asks again at ``next_s`` (None: it no
        longer does)."""
        self.waits[subject, holder] = next_s
        if next_s is None:
            self.waiting[subject].pop(holder, None)
        else:
            self.waiting[subject][holder] = next_s

    def total(self, subject: str) -> int | None:
        """The units of all of ``subject``'s reservations, the group's grants with them (None:
        the backend keeps no totals)."""
        if self.totals is None:
            return None
        return self.totals.get(subject, 0) + self.granted.get(subject, 0)


def opening(known: Known, ask: Ask, holder: str, *, now_s: float,
            expires_s: float) -> Grant | tuple[Rate, ...]:
    """A refusal before any window is counted (the subject rests; another holder's turn), or
    the ask's :func:`windows`."""
    rest = known.rests.get(ask.subject)
    if rest is not None:
        return Grant(ids=(), expires_s=expires_s, next_s=rest[0], reason=f"resting: {rest[1]}")
    refused = turn_refusal(known.waiting[ask.subject], holder, now_s=now_s, expires_s=expires_s)
    if refused is not None:
        known.wait(ask.subject, holder, refused.next_s)
        return refused
    return windows(known, ask)


def windows(known: Known, ask: Ask) -> tuple[Rate, ...]:
    """The windows an ask must fit: every campaign's for its subject, the strictest of each
    period."""
    return effective_rates(ask.rates, *(c.rates for c in known.limits[ask.subject]))


def counted_rates(known: Known, ask: Ask, rates: Sequence[Rate]) -> list[Rate]:
    """Of ``rates``, those whose windows the backend counts: the others have room for the ask
    even with every reservation of the subject kept (its total): counting a window reads each
    of its reservations, and a day's window of a busy account is thousands."""
    total = known.total(ask.subject)
    return [r for r in rates if _bound(total, ask.want, r) is None]


def _bound(total: int | None, want: int, rate: Rate) -> int | None:
    # the subject's total, as the count of ``rate``'s window, if even that leaves room for
    # ``want``; None: the window is counted
    return total if total is not None and total + want <= rate.count else None


def fit(known: Known, ask: Ask, holder: str, rates: Sequence[Rate], counts: Iterable[int],
        *, now_s: float) -> int | list[Rate]:
    """How many of the ask are granted (recorded in ``known``), or the full windows, given the
    backend's count of each of :func:`counted_rates` (without the group's grants)."""
    subject = ask.subject
    counted = iter(counts)
    pending = known.granted.get(subject, 0)
    total = known.total(subject)
    filled = [next(counted) + pending if (bound := _bound(total, ask.want, r)) is None else bound
              for r in rates]
    granted = room(rates, filled, min(ask.want, BATCH_IDS))
    if granted == 0:
        return [r for r, n in zip(rates, filled, strict=True) if n >= r.count]
    known.granted[subject] = pending + granted
    known.grants.append((subject, granted))
    waiting = known.waiting[subject]
    if waiting.keys() - {holder}:  # still contending: it will ask again
        known.wait(subject, holder, now_s)
    elif holder in waiting:  # no one else wants the subject any more
        known.wait(subject, holder, None)
    return granted


def refusal(known: Known, ask: Ask, holder: str, binding: Sequence[tuple[Rate, float | None]],
            *, contends: bool, now_s: float, expires_s: float) -> Grant:
    """The refusal for full windows, given when each one's ``count``-th newest settled send
    leaves it (``binding``); the holder waits its turn if it ``contends`` (it is waiting
    already, or another holder's sends are in the windows)."""
    refused = Grant(ids=(), expires_s=expires_s, next_s=next_try_s(now_s, binding),
                    reason=f"{rates_text([r for r, _ in binding])} full")
    if contends:
        known.wait(ask.subject, holder, refused.next_s)
    return refused


def grants(decided: Sequence[Grant | int], batches: Iterable[int], *,
           expires_s: float) -> list[Grant]:
    """Each ask's grant: its refusal, or its units under the batch id the backend gave it
    (``batches``: one for each of the group's grants, in order)."""
    ids = iter(batches)
    return [d if isinstance(d, Grant) else Grant(ids=unit_ids(next(ids), d),
                                                 expires_s=expires_s) for d in decided]
