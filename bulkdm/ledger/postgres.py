"""The team ledger: a PostgreSQL database shared by processes on several hosts (asyncpg).

A reservation takes a transaction-scoped advisory lock on its subject first
(``pg_advisory_xact_lock``), so two hosts never both see room for the last slot of a window;
reservations of different subjects do not wait for each other. Install with
``pip install 'bulkdm[postgres]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final

import asyncpg

from bulkdm.errors import LedgerError, LedgerUnreachableError
from bulkdm.ledger.base import (
    KEEP_S,
    LEASE_S,
    OTHER_HOLDER_MARGIN_S,
    REGISTRATION_TTL_S,
    WAIT_GRACE_S,
    Ask,
    CampaignLimits,
    Grant,
    Health,
    OptOut,
    Realm,
    Rest,
    decode_rates,
    encode_rates,
    kept_s,
    opt_out_entries,
    others_since_s,
    settlements,
    window_s,
)
from bulkdm.ledger.groups import (
    Known,
    counted_rates,
    fit,
    grants,
    opening,
    refusal,
    windows,
)
from bulkdm.rates import Rate
from bulkdm.secrets import masked_url

__all__ = ["COMMAND_TIMEOUT_S", "PostgresLedger"]

#: the longest a connection or one statement may take: a hung server (or a cut network) stops
#: the run after this, instead of holding every sender for ever
COMMAND_TIMEOUT_S: Final = 10.0
#: what the driver raises when the server is down, hung, shutting down or cut off (TimeoutError
#: is an OSError)
_UNREACHABLE: Final = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                       asyncpg.AdminShutdownError, asyncpg.CannotConnectNowError,
                       asyncpg.CrashShutdownError)
# the pool logs its reconnection attempts with a traceback; a lost server is reported once, as a
# LedgerError, and a run that recovers says nothing
logging.getLogger("asyncpg").addHandler(logging.NullHandler())
logging.getLogger("asyncpg").propagate = False
_SCHEMA: Final = """
-- a row a grant (``units`` reservations, base.BATCH_IDS), and a row for its sends settled
-- together (base.SETTLE_SPREAD_S)
CREATE TABLE IF NOT EXISTS bulkdm_reservations (
    id BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    holder TEXT NOT NULL,
    granted_s DOUBLE PRECISION NOT NULL,
    at_s DOUBLE PRECISION NOT NULL,
    sent BOOLEAN NOT NULL DEFAULT FALSE,
    units INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS bulkdm_reservations_subject_at ON bulkdm_reservations (subject, at_s);
CREATE TABLE IF NOT EXISTS bulkdm_limits (
    subject TEXT NOT NULL, campaign TEXT NOT NULL, rates TEXT NOT NULL,
    updated_s DOUBLE PRECISION NOT NULL, PRIMARY KEY (subject, campaign)
);
CREATE TABLE IF NOT EXISTS bulkdm_rests (
    subject TEXT PRIMARY KEY, until_s DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
    at_s DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS bulkdm_health (
    subject TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL,
    at_s DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS bulkdm_opt_outs (
    realm TEXT NOT NULL, entry TEXT NOT NULL, user_id TEXT, username TEXT, reason TEXT NOT NULL,
    source TEXT NOT NULL, at_s DOUBLE PRECISION NOT NULL, removed_s DOUBLE PRECISION,
    removed_reason TEXT, PRIMARY KEY (realm, entry)
);
CREATE TABLE IF NOT EXISTS bulkdm_firsts (
    subject TEXT PRIMARY KEY, at_s DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS bulkdm_runs (
    lineage TEXT PRIMARY KEY, token TEXT NOT NULL, at_s DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS bulkdm_waiters (
    subject TEXT NOT NULL, holder TEXT NOT NULL, next_s DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (subject, holder)
);
"""
_ADD_OPT_OUT: Final = (
    "INSERT INTO bulkdm_opt_outs (realm, entry, user_id, username, reason, source, at_s) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (realm, entry) DO UPDATE SET "
    "user_id = COALESCE(excluded.user_id, bulkdm_opt_outs.user_id), "
    "username = COALESCE(excluded.username, bulkdm_opt_outs.username), "
    "reason = excluded.reason, source = excluded.source, at_s = excluded.at_s, "
    "removed_s = NULL, removed_reason = NULL "
    # an opt-out said before its removal (an old answer read again) stays lifted
    "WHERE bulkdm_opt_outs.removed_s IS NULL OR bulkdm_opt_outs.removed_s <= excluded.at_s"
)
#: a ledger of a bulkdm that wrote a row a reservation, made a row a grant: each of its rows is
#: one reservation. The column that bulkdm inserts is renamed, so that a process of it still
#: running fails at its next reservation (it would count a grant's row as one send).
_BATCH_ROWS: Final = (
    "ALTER TABLE bulkdm_reservations RENAME COLUMN reserved_s TO granted_s",
    "ALTER TABLE bulkdm_reservations ADD COLUMN units INTEGER NOT NULL DEFAULT 1",
)
#: (when, how many, the grant): sends of a grant
_SENT: Final = (
    "INSERT INTO bulkdm_reservations (subject, holder, granted_s, at_s, sent, units) "
    "SELECT subject, holder, granted_s, $1, TRUE, $2 FROM bulkdm_reservations "
    "WHERE id = $3 AND NOT sent"
)
#: (when, the grant): its account's first send (its warm-up counts from it), if earlier than
#: what it has (or it has none)
_FIRSTS: Final = (
    "INSERT INTO bulkdm_firsts SELECT subject, $1 FROM bulkdm_reservations "
    "WHERE id = $2 AND NOT sent ON CONFLICT (subject) DO UPDATE SET at_s = "
    "excluded.at_s WHERE excluded.at_s < bulkdm_firsts.at_s"
)
#: (how many, the grant): reservations of a grant sent or released
_USED: Final = (
    "UPDATE bulkdm_reservations SET units = GREATEST(units - $1, 0) WHERE id = $2 AND NOT sent"
)
_SET_REST: Final = (
    "INSERT INTO bulkdm_rests VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO UPDATE SET "
    "until_s = excluded.until_s, reason = excluded.reason, at_s = excluded.at_s "
    "WHERE excluded.until_s > bulkdm_rests.until_s OR bulkdm_rests.until_s <= excluded.at_s"
)
_FIRST_RUN: Final = (
    "INSERT INTO bulkdm_runs VALUES ($1, $2, $3) ON CONFLICT (lineage) DO NOTHING "
    "RETURNING 1"
)
_NEXT_RUN: Final = (
    "UPDATE bulkdm_runs SET token = $2, at_s = $3 WHERE lineage = $1 AND token = $4 "
    "RETURNING 1"
)
#: when the window's ``count``-th newest settled send leaves it (the rows newest first, each
#: with the sends from it to the newest)
_NTH_SETTLED: Final = (
    "SELECT until_s FROM (SELECT until_s, SUM(units) OVER (ORDER BY until_s DESC "
    "ROWS UNBOUNDED PRECEDING) AS newer FROM (SELECT at_s + CASE WHEN holder = $1 THEN 0 "
    "ELSE $2 END AS until_s, units FROM bulkdm_reservations WHERE subject = $3 AND at_s > $4 "
    "AND (holder != $1 OR at_s > $5) AND (sent OR at_s <= $6)) AS rows) AS counted "
    "WHERE newer >= $7 ORDER BY until_s DESC LIMIT 1"
)


class _DeadlinePool:
    """The driver's pool, each use of a connection bounded as a whole, its release too. (After
    a statement's timeout or a cancel, the driver's release waits for the server to take the
    cancel request, without end by default: a hung server never takes it.)"""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        # the acquire's timeout is its release's too: a connection not released in time is
        # terminated (a new one is opened when the ledger answers again). The release is not
        # under the deadline: cancelled, the driver's release goes on unwatched
        async with self._pool.acquire(timeout=COMMAND_TIMEOUT_S / 2) as conn:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                yield conn

    async def close(self) -> None:
        await self._pool.close()

    def terminate(self) -> None:
        self._pool.terminate()


class PostgresLedger:
    """The ledger in a PostgreSQL database. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, pool: Any, url: str) -> None:
        self._pool = _DeadlinePool(pool)
        self.location = masked_url(url)
        #: each reservation row's count: its units, or 1 in a ledger of an earlier bulkdm
        #: opened without upgrading it
        self._units = "units"

    @classmethod
    async def open(cls, url: str, *, now_s: float, upgrade: bool = False) -> PostgresLedger:
        """Connect to ``url`` (``postgresql://user:password@host:port/db``), creating the tables.
        A ledger of an earlier bulkdm (a row a reservation) is upgraded only with ``upgrade``
        (a run's: the earlier bulkdm's runs on it stop at their next reservation); otherwise
        it is read as it is."""
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4,
                                             timeout=COMMAND_TIMEOUT_S,
                                             command_timeout=COMMAND_TIMEOUT_S)
        except ValueError as exc:  # asyncpg's reading of the URL; its text may quote the URL
            raise LedgerError(f"{masked_url(url)}: not a PostgreSQL URL the driver can read "
                              "(postgresql://user@host:port/database)") from exc
        except _UNREACHABLE as exc:  # down or cut off: a server that may come back
            raise LedgerUnreachableError(f"{masked_url(url)}: cannot connect to the account "
                                         f"ledger: {type(exc).__name__}") from exc
        except asyncpg.PostgresError as exc:
            raise LedgerError(f"{masked_url(url)}: cannot connect to the account ledger: "
                              f"{type(exc).__name__}") from exc
        ledger = cls(pool, url)
        try:
            async with ledger._pool.acquire() as conn:
                if not await _prepare(conn, now_s, upgrade):
                    ledger._units = "1"
        except _UNREACHABLE as exc:
            await ledger.close()
            raise _unreachable(ledger.location, exc) from exc
        except asyncpg.PostgresError as exc:
            await ledger.close()
            raise LedgerError(f"{ledger.location}: not a usable account ledger: {exc}") from exc
        return ledger

    async def close(self) -> None:
        # a graceful close waits for the server's goodbye: a hung server never says it
        try:
            await asyncio.wait_for(self._pool.close(), timeout=COMMAND_TIMEOUT_S)
        except (TimeoutError, *_UNREACHABLE):
            self._pool.terminate()

    async def register(self, subject: str, *, campaign: str, rates: Sequence[Rate],
                       now_s: float) -> None:
        await self.register_many({subject: rates}, campaign=campaign, now_s=now_s)

    async def register_many(self, windows: Mapping[str, Sequence[Rate]], *, campaign: str,
                            now_s: float) -> dict[str, list[CampaignLimits]]:
        rows = [(subject, campaign, encode_rates(rates), now_s)
                for subject, rates in windows.items()]
        with self._translated():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    "INSERT INTO bulkdm_limits VALUES ($1, $2, $3, $4) ON CONFLICT (subject, "
                    "campaign) DO UPDATE SET rates = excluded.rates, updated_s = excluded.updated_s",
                    rows)
                return await _limits_of(conn, list(windows), now_s)

    async def limits(self, subject: str, *, now_s: float,
                     ttl_s: float = REGISTRATION_TTL_S) -> list[CampaignLimits]:
        with self._translated():
            async with self._pool.acquire() as conn:
                return await _limits(conn, subject, now_s, ttl_s)

    async def reserve(self, subject: str, *, rates: Sequence[Rate], holder: str, want: int,
                      now_s: float, lease_s: float = LEASE_S) -> Grant:
        grants = await self.reserve_many([Ask(subject=subject, rates=tuple(rates), want=want)],
                                         holder=holder, now_s=now_s, lease_s=lease_s)
        return grants[0]

    async def reserve_many(self, asks: Sequence[Ask], *, holder: str, now_s: float,
                           lease_s: float = LEASE_S) -> list[Grant]:
        subjects = sorted({a.subject for a in asks})
        with self._translated():
            async with self._pool.acquire() as conn, conn.transaction():
                # every subject's lock, held to the end of the transaction, in one order for
                # everyone: two groups never wait for each other in a cycle (one trip: the
                # driver sends the statements together)
                await conn.executemany("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                       [(s,) for s in subjects])
                return await _reserve_many(conn, list(asks), subjects, holder, now_s,
                                           now_s + lease_s)

    async def settle(self, sent: Sequence[tuple[int, float]], released: Sequence[int]) -> None:
        done = settlements(sent, released)
        if not done:
            return
        with self._translated():
            async with self._pool.acquire() as conn, conn.transaction():
                # a row for each group of a grant's sends (it copies the grant's subject and
                # holder, so it is written before the grant's row may go), then what is left
                sends = [(at_s, n, s.batch) for s in done for at_s, n in s.sends]
                if sends:
                    await conn.executemany(_SENT, sends)
                    await conn.executemany(_FIRSTS, [(s.first_s, s.batch) for s in done
                                                     if s.first_s is not None])
                await conn.executemany(_USED, [(s.used, s.batch) for s in done])
                await conn.execute("DELETE FROM bulkdm_reservations WHERE id = ANY($1) "
                                   "AND units <= 0", [s.batch for s in done])

    async def history(self, subject: str, *, since_s: float, now_s: float) -> list[float]:
        rows = await self._fetch(f"SELECT at_s, sent, {self._units} FROM bulkdm_reservations "
                                 "WHERE subject = $1 AND at_s >= $2 ORDER BY at_s",
                                 subject, since_s)
        return [r[0] if r[1] else min(r[0], now_s) for r in rows for _ in range(r[2])]

    async def first_send(self, subject: str) -> float | None:
        rows = await self._fetch("SELECT at_s FROM bulkdm_firsts WHERE subject = $1", subject)
        return float(rows[0][0]) if rows else None

    async def set_rest(self, subject: str, *, until_s: float, reason: str, now_s: float) -> None:
        await self._execute(_SET_REST, subject, until_s, reason, now_s)

    async def rest(self, subject: str, *, now_s: float) -> Rest | None:
        rows = await self._fetch("SELECT until_s, reason FROM bulkdm_rests WHERE subject = $1 "
                                 "AND until_s > $2", subject, now_s)
        return Rest(subject=subject, until_s=rows[0][0], reason=rows[0][1]) if rows else None

    async def set_health(self, subject: str, *, state: str | None, reason: str | None,
                         now_s: float) -> None:
        if state is None:
            await self._execute("DELETE FROM bulkdm_health WHERE subject = $1", subject)
            return
        await self._execute(
            "INSERT INTO bulkdm_health VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO UPDATE "
            "SET state = excluded.state, reason = excluded.reason, at_s = excluded.at_s",
            subject, state, reason or state, now_s)

    async def health(self, subject: str) -> Health | None:
        rows = await self._fetch("SELECT state, reason, at_s FROM bulkdm_health "
                                 "WHERE subject = $1", subject)
        if not rows:
            return None
        return Health(subject=subject, state=rows[0][0], reason=rows[0][1], at_s=rows[0][2])

    async def add_opt_out(self, realm: Realm, *, user_id: str | None, username: str | None,
                          reason: str, source: str, now_s: float,
                          said_s: float | None = None) -> None:
        name = (username or "").strip().removeprefix("@").lower() or None
        at_s = now_s if said_s is None else said_s
        with self._translated():
            async with self._pool.acquire() as conn:
                await conn.executemany(_ADD_OPT_OUT, [
                    (realm.value, entry, user_id or None, name, reason, source, at_s)
                    for entry in opt_out_entries(user_id, username)])

    async def remove_opt_out(self, realm: Realm, *, user_id: str | None, username: str | None,
                             reason: str, now_s: float) -> int:
        name = (username or "").strip().removeprefix("@").lower() or None
        rows = await self._fetch(
            "UPDATE bulkdm_opt_outs SET removed_s = $1, removed_reason = $2 WHERE realm = $3 "
            "AND removed_s IS NULL AND (user_id = $4 OR username = $5) RETURNING entry",
            now_s, reason, realm.value, user_id or None, name)
        return len(rows)

    async def opted_out(self, realm: Realm, *, user_ids: Sequence[str],
                        usernames: Sequence[str]) -> set[str]:
        entries = [f"id:{u}" for u in user_ids] + [f"u:{n.lower()}" for n in usernames]
        rows = await self._fetch("SELECT entry FROM bulkdm_opt_outs WHERE realm = $1 AND "
                                 "removed_s IS NULL AND entry = ANY($2)", realm.value, entries)
        return {r[0] for r in rows}

    async def opt_outs(self, realm: Realm) -> list[OptOut]:
        rows = await self._fetch(
            "SELECT DISTINCT user_id, username, reason, source, at_s FROM bulkdm_opt_outs "
            "WHERE realm = $1 AND removed_s IS NULL ORDER BY at_s, user_id, username",
            realm.value)
        return [OptOut(user_id=r[0], username=r[1], reason=r[2], source=r[3], at_s=r[4])
                for r in rows]

    async def run_token(self, lineage: str) -> str | None:
        rows = await self._fetch("SELECT token FROM bulkdm_runs WHERE lineage = $1", lineage)
        return str(rows[0][0]) if rows else None

    async def pass_run(self, lineage: str, *, from_token: str | None, to_token: str,
                       now_s: float) -> bool:
        # one statement: a row inserted only if there is none, or moved on only from the token
        # it holds; two checkpoints passing it at once, one wins
        sql = (_FIRST_RUN if from_token is None else _NEXT_RUN)
        args = (lineage, to_token, now_s) if from_token is None else \
            (lineage, to_token, now_s, from_token)
        return bool(await self._fetch(sql, *args))

    async def subjects(self, *, realm: Realm, kind: str = "account") -> list[str]:
        rows = await self._fetch(
            "SELECT subject FROM bulkdm_limits UNION SELECT subject FROM bulkdm_rests "
            "UNION SELECT subject FROM bulkdm_health "
            "UNION SELECT DISTINCT subject FROM bulkdm_reservations")
        prefix = f"{realm.value}:{kind}:"
        return sorted(r[0] for r in rows if r[0].startswith(prefix))

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        # the driver's errors as the ledger's: nothing above the store modules knows asyncpg
        try:
            yield
        except _UNREACHABLE as exc:
            raise _unreachable(self.location, exc) from exc
        except asyncpg.PostgresError as exc:
            raise LedgerError(f"{self.location}: the account ledger failed: {exc}") from exc

    async def _execute(self, sql: str, *args: Any) -> None:
        with self._translated():
            async with self._pool.acquire() as conn:
                await conn.execute(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        with self._translated():
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(sql, *args))


def _unreachable(location: str, exc: BaseException) -> LedgerUnreachableError:
    if isinstance(exc, TimeoutError):
        why = f"no answer within {COMMAND_TIMEOUT_S:g}s"
    else:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return LedgerUnreachableError(f"{location}: the account ledger is unreachable ({why})")


async def _prepare(conn: Any, now_s: float, upgrade: bool) -> bool:
    """The schema and the pruning; False: the ledger is an earlier bulkdm's, left as it is (not
    ``upgrade``), and its reservations were not pruned."""
    async with conn.transaction():  # one schema creation at a time, when hosts start at once
        await conn.execute("SELECT pg_advisory_xact_lock(4242001)")
        await conn.execute(_SCHEMA)
        current = await conn.fetchval(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'bulkdm_reservations' AND column_name = 'units'") is not None
        if not current and upgrade:
            for statement in _BATCH_ROWS:
                await conn.execute(statement)
    # the sends no window anyone registered can count any more
    registered = await conn.fetch("SELECT DISTINCT rates FROM bulkdm_limits")
    before_s = now_s - kept_s(r["rates"] for r in registered)
    if current or upgrade:
        await conn.execute("DELETE FROM bulkdm_reservations WHERE at_s < $1", before_s)
    await conn.execute("DELETE FROM bulkdm_waiters WHERE next_s < $1", now_s - KEEP_S)
    return current or upgrade


async def _limits(conn: Any, subject: str, now_s: float,
                  ttl_s: float = REGISTRATION_TTL_S) -> list[CampaignLimits]:
    return (await _limits_of(conn, [subject], now_s, ttl_s))[subject]


async def _limits_of(conn: Any, subjects: list[str], now_s: float,
                     ttl_s: float = REGISTRATION_TTL_S) -> dict[str, list[CampaignLimits]]:
    found: dict[str, list[CampaignLimits]] = {subject: [] for subject in subjects}
    for r in await conn.fetch("SELECT subject, campaign, rates, updated_s FROM bulkdm_limits "
                              "WHERE subject = ANY($1::text[]) AND updated_s > $2 "
                              "ORDER BY subject, campaign", subjects, now_s - ttl_s):
        found[r[0]].append(CampaignLimits(subject=r[0], campaign=r[1], updated_s=r[3],
                                          rates=decode_rates(r[2])))
    return found


async def _reserve_many(conn: Any, asks: list[Ask], subjects: list[str], holder: str,
                        now_s: float, expires_s: float) -> list[Grant]:
    known = await _known(conn, subjects, now_s)
    counts = await _counts(conn, known, asks, holder, now_s)
    decided = [await _decide(conn, known, a, holder, now_s, expires_s, n)
               for a, n in zip(asks, counts, strict=True)]
    batches: list[int] = []
    if known.grants:
        # the ids first: rows inserted together come back in no promised order
        batches = [r[0] for r in await conn.fetch(_NEXT_IDS, len(known.grants))]
        await conn.executemany(_RESERVE, [(batch, subject, holder, now_s, expires_s, n) for
                                          batch, (subject, n) in zip(batches, known.grants,
                                                                     strict=True)])
    waits = [(s, h, t) for (s, h), t in known.waits.items() if t is not None]
    if waits:  # a trip to the server each, where the group has them
        await conn.executemany(_WAIT, waits)
    if gone := [key for key, t in known.waits.items() if t is None]:
        await conn.executemany("DELETE FROM bulkdm_waiters WHERE subject = $1 AND holder = $2",
                               gone)
    return grants(decided, batches, expires_s=expires_s)


#: (how many): that many new reservation ids
_NEXT_IDS: Final = (
    "SELECT nextval(pg_get_serial_sequence('bulkdm_reservations', 'id')) "
    "FROM generate_series(1, $1)"
)
#: a grant of ``units`` reservations: one row
_RESERVE: Final = (
    "INSERT INTO bulkdm_reservations (id, subject, holder, granted_s, at_s, units) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)


async def _known(conn: Any, subjects: list[str], now_s: float) -> Known:
    known = Known(rests={}, waiting={s: {} for s in subjects},
                  limits=await _limits_of(conn, subjects, now_s))
    for r in await conn.fetch("SELECT subject, until_s, reason FROM bulkdm_rests "
                              "WHERE subject = ANY($1::text[]) AND until_s > $2", subjects, now_s):
        known.rests[r[0]] = (r[1], r[2])
    for r in await conn.fetch("SELECT subject, holder, next_s FROM bulkdm_waiters WHERE "
                              "subject = ANY($1::text[]) AND next_s > $2", subjects,
                              now_s - WAIT_GRACE_S):
        known.waiting[r[0]][r[1]] = r[2]
    return known


async def _decide(conn: Any, known: Known, ask: Ask, holder: str, now_s: float,
                  expires_s: float, counts: list[int]) -> Grant | int:
    # a refusal, or how many units of ``ask`` are granted (groups.py), given its windows' counts
    rates = opening(known, ask, holder, now_s=now_s, expires_s=expires_s)
    if isinstance(rates, Grant):
        return rates
    full = fit(known, ask, holder, rates, counts, now_s=now_s)
    if isinstance(full, int):
        return full
    binding = [(r, await _nth_settled(conn, ask.subject, holder, r, now_s)) for r in full]
    contends = holder in known.waiting[ask.subject] \
        or await _others_in(conn, ask.subject, holder, full, now_s)
    return refusal(known, ask, holder, binding, contends=contends, now_s=now_s,
                   expires_s=expires_s)


async def _counts(conn: Any, known: Known, asks: list[Ask], holder: str,
                  now_s: float) -> list[list[int]]:
    # the sends in each window of each ask ending now, in one statement: the group writes
    # nothing before its end, so a count read first is the count when its ask is decided
    rates = [counted_rates(known, a, windows(known, a)) for a in asks]
    subjects = [a.subject for a, ask_rates in zip(asks, rates, strict=True) for _ in ask_rates]
    starts = [now_s - window_s(r) for ask_rates in rates for r in ask_rates]
    found = iter(r[0] for r in await conn.fetch(
        _COUNTS, holder, subjects, [s - OTHER_HOLDER_MARGIN_S for s in starts], starts))
    return [[next(found) for _ in ask_rates] for ask_rates in rates]


#: (the holder, each window's subject, its start less the margin, its start): the sends in each
#: window ending now, this holder's in the window, others' in it widened by a margin, in order
_COUNTS: Final = (
    "SELECT COALESCE(SUM(r.units) FILTER (WHERE r.holder != $1 OR r.at_s > w.start_s), 0) "
    "FROM unnest($2::text[], $3::float8[], $4::float8[]) WITH ORDINALITY "
    "AS w(subject, since_s, start_s, n) LEFT JOIN bulkdm_reservations r "
    "ON r.subject = w.subject AND r.at_s > w.since_s GROUP BY w.n ORDER BY w.n"
)


async def _nth_settled(conn: Any, subject: str, holder: str, rate: Rate,
                       now_s: float) -> float | None:
    start_s = now_s - window_s(rate)
    nth = await conn.fetchval(_NTH_SETTLED, holder, OTHER_HOLDER_MARGIN_S, subject,
                              start_s - OTHER_HOLDER_MARGIN_S, start_s, now_s, rate.count)
    return None if nth is None else float(nth)


#: ``holder`` contends for ``subject`` and asks again at ``next_s``
_WAIT: Final = (
    "INSERT INTO bulkdm_waiters VALUES ($1, $2, $3) "
    "ON CONFLICT (subject, holder) DO UPDATE SET next_s = excluded.next_s"
)


async def _others_in(conn: Any, subject: str, holder: str, rates: Sequence[Rate],
                     now_s: float) -> bool:
    """Whether another holder's sends are in any of ``rates``' windows ending now (the holder
    was refused for them: it contends with that holder)."""
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM bulkdm_reservations WHERE "
                               "subject = $1 AND at_s > $2 AND holder != $3)",
                               subject, others_since_s(rates, now_s), holder) is True
