"""The account ledger's protocol and value types: one budget per X account and per API key.

A *subject* names one budget: an X account (``live:account:acme_support``, case-insensitive,
whichever provider drives it) or an API key (``live:key:<sha256 of the key>``; never the key).
The realm (``live`` or ``sandbox``) keeps sandbox runs off real accounts' budgets.

Every send holds a **reservation** in the ledger before its intent commits in the checkpoint.
A reservation is granted only if one more send *now* fits every window that any campaign
configured for the subject (the stricter limits hold), counting every campaign's and every
process's sends (another process's a little longer: OTHER_HOLDER_MARGIN_S). Until it is
settled, a reservation counts as a send at the moment anyone looks (it may leave at any time);
once settled, at its real send time (sends of one grant settled together within
SETTLE_SPREAD_S count at the latest of their times); once its lease is over without a
settlement (a process killed with ``kill -9``), at the end of its lease: it may have been sent,
so it still counts, and it blocks no one longer than a real send would. A send that never left
is released and counts for nothing.

When holders **contend** for a subject (one was refused while another's sends filled its window),
they take **turns** (TURN_S): each turn goes to one of the holders then wanting the subject, the
same one in every process and host (:func:`turn_refusal`), and the others are refused until it
ends. Without turns the holder ahead took every slot as it freed, since it sees its own sends
leave a window the margin before any other holder does: a second campaign on the account sent
nothing while the first had rows.

Why this is enough: take any window and the last reservation granted for a send inside it. When
it was granted, every other send of that window had been reserved already, and each counted
either at its real time (inside that window) or as "now": so the grant saw them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

import orjson

from bulkdm.ratelimit import default_guard_s
from bulkdm.rates import Rate

__all__ = [
    "BATCH_IDS",
    "KEEP_S",
    "LEASE_S",
    "OPTED_OUT_MESSAGE",
    "REGISTRATION_TTL_S",
    "SETTLE_SPREAD_S",
    "TURN_REASON",
    "TURN_S",
    "WAIT_GRACE_S",
    "Ask",
    "CampaignLimits",
    "Grant",
    "Health",
    "Ledger",
    "OptOut",
    "Realm",
    "Rest",
    "Settlement",
    "account_subject",
    "batch_of",
    "campaign_key",
    "campaign_name",
    "decode_rates",
    "effective_rates",
    "encode_rates",
    "kept_s",
    "key_subject",
    "next_try_s",
    "opt_out_entries",
    "opted_out_entry",
    "others_since_s",
    "rates_text",
    "room",
    "settlements",
    "subject_name",
    "turn_holder",
    "turn_refusal",
    "unit_ids",
    "window_s",
]

#: how long a reservation may stay unsettled before it counts at its lease's end
LEASE_S: Final = 30.0
#: a campaign's limits for a subject count while it registered them within this time
REGISTRATION_TTL_S: Final = 86400.0
#: how soon to ask again when only other processes' unsettled reservations are in the way
OUTSTANDING_POLL_S: Final = 0.2
#: another process's sends count this much longer in each window: requests of two processes
#: reach the provider with different delays (a new connection, a loaded machine), and a send
#: counts from when it left its own process
OTHER_HOLDER_MARGIN_S: Final = 0.2
#: while holders contend for a subject, the time is cut into turns this long, each one holder's:
#: long against the margin (a change of turn costs the next holder the margin once), short
#: against a campaign's patience
TURN_S: Final = 10.0
#: a contending holder that has not asked again this long after the time it was given has
#: stopped wanting the subject (its run ended, or was killed): it takes no more turns
WAIT_GRACE_S: Final = 5.0
#: a grant is one row of the ledger (a batch), its reservations numbered within it: a
#: reservation's id is its batch's id times this, plus its place in the batch. (A row a
#: reservation, inserted, indexed and settled one by one, was most of the ledger's cost.)
BATCH_IDS: Final = 1 << 16
#: sends of one batch settled together are written as one row at the latest of their times (the
#: safe side: each counts a little late) when they are at most this far apart
SETTLE_SPREAD_S: Final = 0.01
#: sends are kept this long at least (a week's window and a day); longer when a campaign
#: registered a longer window (:func:`kept_s`)
KEEP_S: Final = 8 * 86400.0
_DAY_S: Final = 86400.0
#: the reason of a refusal for another holder's turn
TURN_REASON: Final = f"another campaign's turn (campaigns sharing it take turns of {TURN_S:g}s)"


class Realm(StrEnum):
    LIVE = "live"
    #: runs against the sandbox (``--sandbox`` or a loopback base URL): never a real budget
    SANDBOX = "sandbox"


#: between a campaign's name and its identity in the ledger's name for it
_ID_SEPARATOR: Final = "#"


def campaign_key(name: str, campaign_id: str | None) -> str:
    """How the ledger names a campaign's registration: its name and its identity (the
    checkpoint's), as two campaigns may share a name (``customers.jsonl`` in two folders) and
    must not replace each other's limits. Without an identity, the name."""
    return f"{name}{_ID_SEPARATOR}{campaign_id[:12]}" if campaign_id else name


def campaign_name(key: str) -> str:
    """The name in a :func:`campaign_key`."""
    name, separator, ident = key.rpartition(_ID_SEPARATOR)
    return name if separator and len(ident) == 12 and ident.isalnum() else key


def account_subject(realm: Realm, account: str) -> str:
    """The subject of an X account: its handle without ``@``, lower case."""
    return f"{realm.value}:account:{account.strip().removeprefix('@').lower()}"


def key_subject(realm: Realm, api_key: str) -> str:
    """The subject of an API key's write budget: a SHA-256 of the key, never the key."""
    return f"{realm.value}:key:{hashlib.sha256(api_key.encode()).hexdigest()[:32]}"


def subject_name(subject: str) -> tuple[str, str, str]:
    """(realm, kind, name) of a subject."""
    realm, kind, name = subject.split(":", 2)
    return realm, kind, name


def window_s(rate: Rate) -> float:
    """The window a rate is enforced over: its period plus the limiter's guard (as in
    :class:`~bulkdm.ratelimit.WindowLimiter`)."""
    return rate.period_s + default_guard_s(rate)


def effective_rates(*rate_sets: Sequence[Rate]) -> tuple[Rate, ...]:
    """Every window of every set; of two windows of one period, the smaller count. Keeping all
    of them keeps the stricter limits of every campaign."""
    strictest: dict[float, Rate] = {}
    for rates in rate_sets:
        for rate in rates:
            kept = strictest.get(rate.period_s)
            if kept is None or rate.count < kept.count:
                strictest[rate.period_s] = rate
    return tuple(sorted(strictest.values(), key=lambda r: r.period_s))


def room(rates: Sequence[Rate], counts: Sequence[int], want: int) -> int:
    """How many of ``want`` fit, given each rate's count of sends in its window ending now."""
    return max(0, min([want, *(r.count - n for r, n in zip(rates, counts, strict=True))]))


def next_try_s(now_s: float, binding: Sequence[tuple[Rate, float | None]]) -> float:
    """When a refused reservation may succeed: for each full window, when its ``count``-th
    newest settled send leaves it (its time plus, for another holder's, the margin; ``None``:
    only unsettled reservations fill it, which settle within moments, so ask again soon)."""
    return max(now_s + OUTSTANDING_POLL_S if nth_s is None else nth_s + window_s(rate)
               for rate, nth_s in binding)


def turn_holder(holders: Iterable[str], now_s: float) -> str:
    """Whose turn it is at ``now_s`` among ``holders``: the least hash of (holder, turn). Every
    process and host gives the same answer, and for every subject the same holders contend for
    (an account and its API key): their turns line up, and a send needs both."""
    turn = int(now_s // TURN_S)
    return min(holders, key=lambda holder: hashlib.blake2b(
        f"{holder}\0{turn}".encode(), digest_size=8).digest())


def turn_refusal(waiting: Mapping[str, float], holder: str, *, now_s: float,
                 expires_s: float) -> Grant | None:
    """A refusal for ``holder`` if it is another's turn, among ``holder`` and the holders
    contending for the subject (``waiting``: each one's next ask, within WAIT_GRACE_S); ask
    again when the turn ends, or sooner if its holder stops asking."""
    if not waiting.keys() - {holder}:
        return None
    turn = turn_holder([holder, *waiting], now_s)
    if turn == holder:
        return None
    end_s = (now_s // TURN_S + 1) * TURN_S
    next_s = max(now_s + OUTSTANDING_POLL_S, min(end_s, waiting[turn] + WAIT_GRACE_S))
    return Grant(ids=(), expires_s=expires_s, next_s=next_s, reason=TURN_REASON)


def others_since_s(rates: Sequence[Rate], now_s: float) -> float:
    """Where the widest of ``rates``' windows ending now starts for another holder's sends
    (widened by the margin): a refused holder contends with any holder that sent since."""
    return now_s - max(window_s(r) for r in rates) - OTHER_HOLDER_MARGIN_S


def rates_text(rates: Sequence[Rate]) -> str:
    return ", ".join(str(r) for r in rates)


def encode_rates(rates: Sequence[Rate]) -> str:
    """``rates`` as both ledgers store a campaign's windows: ``[[count, period_s], ...]``."""
    return orjson.dumps([[r.count, r.period_s] for r in rates]).decode()


def kept_s(registered: Iterable[str]) -> float:
    """How long sends are kept before the pruning takes them: ``KEEP_S``, or the longest window
    any campaign registered (``registered``: the limits as stored, expired ones included: the
    campaign may run again) with a day more. A window longer than what was kept counts what is
    there: a campaign's first run with a 30-day window finds 8 days of the account's sends."""
    longest_s = max((window_s(r) for stored in registered for r in decode_rates(stored)),
                    default=0.0)
    return max(KEEP_S, longest_s + _DAY_S)


def decode_rates(stored: str) -> tuple[Rate, ...]:
    """The windows :func:`encode_rates` stored."""
    return tuple(Rate(count=c, period_s=p) for c, p in orjson.loads(stored))


@dataclass(frozen=True, kw_only=True, slots=True)
class Grant:
    """The answer to a reservation: the ids granted (maybe fewer than asked), their lease's end,
    and when none was granted, the earliest time worth asking again and why."""

    ids: tuple[int, ...]
    expires_s: float
    next_s: float | None = None
    reason: str | None = None


def unit_ids(batch: int, count: int) -> tuple[int, ...]:
    """The ids of a batch's ``count`` reservations (``count`` under BATCH_IDS)."""
    return tuple(range(batch * BATCH_IDS, batch * BATCH_IDS + count))


def batch_of(unit: int) -> int:
    """The ledger row (batch) of a reservation's id."""
    return unit // BATCH_IDS


@dataclass(frozen=True, kw_only=True, slots=True)
class Settlement:
    """What a settlement does to one batch: ``used`` of its reservations are no longer held
    (sent, or ``released``: never sent); ``sends`` are the rows to write for the sent ones,
    (time, how many), and ``first_s`` the earliest real send time among them (None: none)."""

    batch: int
    used: int
    released: int
    sends: tuple[tuple[float, int], ...]
    first_s: float | None


def settlements(sent: Iterable[tuple[int, float]], released: Iterable[int]) -> list[Settlement]:
    """Reservations' send times and releases, grouped by batch; the sends of a batch within
    SETTLE_SPREAD_S of each other become one row at the latest of their times."""
    times: dict[int, list[float]] = {}
    freed: dict[int, int] = {}
    for unit, at_s in sent:
        times.setdefault(batch_of(unit), []).append(at_s)
    for unit in released:
        freed[batch_of(unit)] = freed.get(batch_of(unit), 0) + 1
    found = []
    for batch in sorted(times.keys() | freed.keys()):
        at, n_freed = sorted(times.get(batch, ())), freed.get(batch, 0)
        found.append(Settlement(batch=batch, used=n_freed + len(at), released=n_freed,
                                sends=_spread_groups(at), first_s=at[0] if at else None))
    return found


def _spread_groups(times: Sequence[float]) -> tuple[tuple[float, int], ...]:
    # sorted times in runs no wider than SETTLE_SPREAD_S: (each run's last time, its length)
    groups: list[tuple[float, int]] = []
    start = 0
    for i in range(1, len(times) + 1):
        if i == len(times) or times[i] - times[start] > SETTLE_SPREAD_S:
            groups.append((times[i - 1], i - start))
            start = i
    return tuple(groups)


@dataclass(frozen=True, kw_only=True, slots=True)
class Ask:
    """One reservation asked for in a group (:meth:`Ledger.reserve_many`)."""

    subject: str
    rates: tuple[Rate, ...]
    want: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Rest:
    """Nothing may be sent for ``subject`` before ``until_s`` (a Retry-After, a daily limit)."""

    subject: str
    until_s: float
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Health:
    """An account a provider said cannot send (suspended, needs re-auth), and when it said so."""

    subject: str
    state: str
    reason: str
    at_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class CampaignLimits:
    """The windows one campaign configured for a subject, as it last registered them."""

    subject: str
    campaign: str
    rates: tuple[Rate, ...]
    updated_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class OptOut:
    """A recipient who asked not to be messaged again, in one realm: by user id, by lower-case
    username, or both (either one matches a later row)."""

    user_id: str | None
    username: str | None
    reason: str
    #: where it came from: ``manual`` or ``reply:<campaign>:<message id>``
    source: str
    at_s: float


#: the message of a row skipped because its recipient opted out (reason ``opted_out``)
OPTED_OUT_MESSAGE: Final = "the recipient opted out (a reply, or bulkdm optouts --add)"


def opted_out_entry(user_id: str | None, username: str | None, found: set[str]) -> bool:
    """Whether a recipient is among ``found`` (the entries :meth:`Ledger.opted_out` gave)."""
    return any(entry in found for entry in opt_out_entries(user_id, username))


def opt_out_entries(user_id: str | None, username: str | None) -> list[str]:
    """The keys an opt-out is stored under: ``id:<user id>`` and ``u:<lower-case username>``."""
    name = (username or "").strip().removeprefix("@").lower()
    return [*([f"id:{user_id}"] if user_id else []), *([f"u:{name}"] if name else [])]


class Ledger(Protocol):
    """Shared budgets of accounts and API keys. Every method is one transaction; ``now_s`` is
    wall-clock time (``time.time()``), passed in so that tests drive it."""

    #: where the ledger is, for messages (a PostgreSQL URL without its password)
    location: str

    async def register(self, subject: str, *, campaign: str, rates: Sequence[Rate],
                       now_s: float) -> None:
        """Record ``campaign``'s windows for ``subject`` (replacing its earlier ones)."""

    async def register_many(self, windows: Mapping[str, Sequence[Rate]], *, campaign: str,
                            now_s: float) -> dict[str, list[CampaignLimits]]:
        """:meth:`register` for each subject of ``windows`` in one transaction; then, for each,
        every campaign's windows as :meth:`limits` gives them (a subject none has: none)."""

    async def limits(self, subject: str, *, now_s: float,
                     ttl_s: float = REGISTRATION_TTL_S) -> list[CampaignLimits]:
        """Every campaign's windows for ``subject`` registered within ``ttl_s``."""

    async def reserve(self, subject: str, *, rates: Sequence[Rate], holder: str, want: int,
                      now_s: float, lease_s: float = LEASE_S) -> Grant:
        """Reserve up to ``want`` sends now, against ``rates`` and every registered campaign's
        windows and any rest; atomic against every other process."""

    async def reserve_many(self, asks: Sequence[Ask], *, holder: str, now_s: float,
                           lease_s: float = LEASE_S) -> list[Grant]:
        """:meth:`reserve` for each of ``asks`` in turn, all in one transaction (one commit):
        the grants in the order asked. An ask sees the ones before it as reserved."""

    async def settle(self, sent: Sequence[tuple[int, float]], released: Sequence[int]) -> None:
        """Record reservations' real send times, and release those whose send never left."""

    async def history(self, subject: str, *, since_s: float, now_s: float) -> list[float]:
        """The times sends of ``subject`` count at, from ``since_s`` on (a restart's charge)."""

    async def first_send(self, subject: str) -> float | None:
        """When ``subject`` first sent (``None``: never): kept for good, not pruned."""

    async def set_rest(self, subject: str, *, until_s: float, reason: str, now_s: float) -> None:
        """Rest ``subject`` until ``until_s`` (a later rest is kept over an earlier one)."""

    async def rest(self, subject: str, *, now_s: float) -> Rest | None:
        """The rest of ``subject`` if it is not over at ``now_s``."""

    async def set_health(self, subject: str, *, state: str | None, reason: str | None,
                         now_s: float) -> None:
        """Record that ``subject`` cannot send (``state``), or (``None``) that it can again."""

    async def health(self, subject: str) -> Health | None:
        """What a provider last said about ``subject``, if it said it cannot send."""

    async def subjects(self, *, realm: Realm, kind: str = "account") -> list[str]:
        """Every subject of ``kind`` the ledger knows in ``realm``, sorted."""

    async def add_opt_out(self, realm: Realm, *, user_id: str | None, username: str | None,
                          reason: str, source: str, now_s: float,
                          said_s: float | None = None) -> None:
        """Record that a recipient opted out, at ``said_s`` (when their answer said so; default
        ``now_s``). Again after a removal, the newest reason wins; but an opt-out said before
        its removal stays lifted (a sync reading that old answer again does not revive it)."""

    async def remove_opt_out(self, realm: Realm, *, user_id: str | None, username: str | None,
                             reason: str, now_s: float) -> int:
        """Lift the opt-outs matching the user id or the username, keeping why; how many."""

    async def opted_out(self, realm: Realm, *, user_ids: Sequence[str],
                        usernames: Sequence[str]) -> set[str]:
        """Of these recipients, the entries (``id:…``, ``u:…`` lower case) that opted out."""

    async def opt_outs(self, realm: Realm) -> list[OptOut]:
        """Every standing opt-out of ``realm``, oldest first."""

    async def run_token(self, lineage: str) -> str | None:
        """The token of the checkpoint that ran ``lineage`` (a campaign's identity and its
        checkpoint's file name) last (None: none ran with a token)."""

    async def pass_run(self, lineage: str, *, from_token: str | None, to_token: str,
                       now_s: float) -> bool:
        """Make ``to_token`` the token of ``lineage``, if it is still ``from_token`` (None: it
        has none); False when another checkpoint took it meanwhile."""

    async def close(self) -> None:
        """Close the connection (reservations stay)."""
