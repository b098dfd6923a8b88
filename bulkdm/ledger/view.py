"""What ``bulkdm accounts`` and ``bulkdm plan`` show of the pool: plain values read from a ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final

from bulkdm.ledger.base import (
    Ledger,
    Realm,
    account_subject,
    campaign_name,
    effective_rates,
    rates_text,
    subject_name,
    window_s,
)
from bulkdm.policies.warmup import DEFAULT_WARMUP
from bulkdm.ratelimit import WindowLimiter
from bulkdm.rates import Rate

__all__ = ["AccountView", "WindowUse", "account_waits", "limit_notes", "pool_text", "read_pool",
           "stricter_rates"]

#: campaigns shown as having used an account: those that registered it within this time
_USED_WITHIN_S: Final = 8 * 86400.0
_DAY_S: Final = 86400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowUse:
    """Sends in one window ending now, against its limit (``daily`` marks a daily cap)."""

    rate: str
    used: int
    limit: int
    daily: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class AccountView:
    account: str
    windows: tuple[WindowUse, ...]
    resting_until: str | None
    rest_reason: str | None
    health: str | None
    campaigns: tuple[str, ...]
    #: its first send (UTC, ISO) and where that puts it on the default warm-up ramp
    first_send: str | None = None
    warmup: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


async def read_pool(ledger: Ledger, *, realm: Realm, now_s: float) -> list[AccountView]:
    """Every account the ledger knows in ``realm``, with its windows (every campaign's, the
    stricter of each kept) and how full they are now."""
    return [await _account(ledger, subject, now_s)
            for subject in await ledger.subjects(realm=realm)]


async def _account(ledger: Ledger, subject: str, now_s: float) -> AccountView:
    recent = await ledger.limits(subject, now_s=now_s)
    used_by = await ledger.limits(subject, now_s=now_s, ttl_s=_USED_WITHIN_S)
    rates = effective_rates(*(c.rates for c in recent))
    longest_s = max((window_s(r) for r in rates), default=_DAY_S)
    times = await ledger.history(subject, since_s=now_s - longest_s, now_s=now_s)
    windows = tuple(WindowUse(rate=str(r), limit=r.count, daily=r.period_s == _DAY_S,
                              used=sum(1 for t in times if t > now_s - window_s(r)))
                    for r in rates)
    rest = await ledger.rest(subject, now_s=now_s)
    health = await ledger.health(subject)
    first_s = await ledger.first_send(subject)
    return AccountView(
        account=subject_name(subject)[2], windows=windows,
        resting_until=_iso(rest.until_s) if rest else None,
        rest_reason=rest.reason if rest else None,
        health=f"{health.state}: {health.reason} (since {_iso(health.at_s)})" if health else None,
        campaigns=tuple(dict.fromkeys(campaign_name(c.campaign) for c in used_by)),
        first_send=_iso(first_s) if first_s is not None else None,
        warmup=_ramp_text(first_s, now_s))


def pool_text(views: Sequence[AccountView], *, location: str, realm: Realm) -> str:
    """The pool as text for a terminal."""
    lines = [f"account pool ({realm.value}) in {location}"]
    if not views:
        lines.append("  no account has sent or been registered yet")
    for view in views:
        windows = ", ".join(f"{'today ' if w.daily else ''}{w.used}/{w.limit} in {w.rate}"
                            for w in view.windows) or "no window registered in the last day"
        lines.append(f"  {view.account}: {windows}")
        if view.resting_until:
            lines.append(f"    resting until {view.resting_until} ({view.rest_reason})")
        if view.health:
            lines.append(f"    {view.health}")
        if view.warmup:
            lines.append(f"    {view.warmup}")
        lines.append(f"    campaigns: {', '.join(view.campaigns) or '-'}")
    return "\n".join(lines)


async def limit_notes(ledger: Ledger, *, realm: Realm, campaign: str,
                      accounts: Mapping[str, Sequence[Rate]], now_s: float) -> list[str]:
    """One line per account whose limits another campaign sets differently: which hold."""
    notes = []
    for account, mine in accounts.items():
        others = [c for c in await ledger.limits(account_subject(realm, account), now_s=now_s)
                  if c.campaign != campaign and set(c.rates) != set(mine)]
        if others:
            kept = effective_rates(mine, *(c.rates for c in others))
            said = "; ".join(f"{_another(c.campaign, campaign)} sets {rates_text(c.rates)}"
                             for c in others)
            notes.append(f"{account}: this campaign sets {rates_text(mine)}; {said}; "
                         f"every window holds for all of them, so the stricter wins: "
                         f"{rates_text(kept)}")
    return notes


async def stricter_rates(ledger: Ledger, *, realm: Realm, accounts: Mapping[str, Sequence[Rate]],
                         now_s: float) -> dict[str, tuple[Rate, ...]]:
    """Each account's windows under a day as every campaign registered them (the stricter of
    each period kept, this campaign's ``accounts`` among them): what a plan's duration takes.
    Daily windows are left out: a ramping campaign registers its day's ramped cap, which the
    estimate's own ramp would cut again."""
    stricter = {}
    for account, mine in accounts.items():
        subject = account_subject(realm, account)
        others = [c.rates for c in await ledger.limits(subject, now_s=now_s)]
        stricter[account] = tuple(r for r in effective_rates(mine, *others) if r.period_s < _DAY_S)
    return stricter


async def account_waits(ledger: Ledger, *, realm: Realm, accounts: Mapping[str, Sequence[Rate]],
                        now_s: float) -> dict[str, float]:
    """Seconds until each account may send again, by every campaign's sends in the ledger (the
    stricter limits of all of them) and its rest: what a plan's duration starts from."""
    waits = {}
    for account, mine in accounts.items():
        subject = account_subject(realm, account)
        rates = effective_rates(mine, *(c.rates for c in await ledger.limits(subject, now_s=now_s)))
        longest_s = max((window_s(r) for r in rates), default=_DAY_S)
        limiter = WindowLimiter(rates, least_guard_s=0.0)
        limiter.charge(await ledger.history(subject, since_s=now_s - longest_s, now_s=now_s))
        rest = await ledger.rest(subject, now_s=now_s)
        if rest is not None:
            limiter.rest_until(rest.until_s)
        waits[account] = limiter.next_allowed_s(now_s) - now_s
    return waits


def _ramp_text(first_s: float | None, now_s: float) -> str:
    """Where the account is on the default warm-up ramp, on for every campaign that does not
    set its own (or ``warmup = false``)."""
    ramp = DEFAULT_WARMUP
    since = f"since its first send {_iso(first_s)}" if first_s is not None else "no send yet"
    if ramp.done(first_s, now_s):
        return f"warmed up ({ramp.days} days {since})"
    day = ramp.day(first_s, now_s)
    # a share, not a count: a ramping campaign registers the day's ramped cap as its daily
    # window, so the window shown may be ramped already (its share of it was ramped twice)
    allowed = f"{ramp.fraction(first_s, now_s) * 100:.0f}% of a campaign's daily cap today"
    # on by default; a campaign may set its own ramp, or none for an established account, but
    # a ramping campaign's day cap is a window in the ledger, and every window holds for all
    return (f"warm-up: day {day} of {ramp.days} ({ramp.describe()}, the default ramp, "
            f"{since}): {allowed}; warmup = false stops a campaign's own ramp (an established "
            "account), but a ramping campaign's day cap holds for all until its registration "
            "is a day old")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _another(key: str, mine: str) -> str:
    name = campaign_name(key)
    if name == campaign_name(mine):  # the same name: another folder's campaign
        return f"another campaign also named {name}"
    return f"campaign {name}"
