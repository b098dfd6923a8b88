"""The embedded ledger: one SQLite file shared by every process on this host.

Each call is one transaction run whole on aiosqlite's thread (one round trip). A reservation
takes SQLite's write lock first (``BEGIN IMMEDIATE``), so two processes never both see room for
the last slot of a window.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import aiosqlite

from bulkdm.errors import LedgerError
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
from bulkdm.ledger.groups import Known, counted_rates, fit, grants, opening, refusal
from bulkdm.rates import Rate

__all__ = ["SqliteLedger"]

_T = TypeVar("_T")
_SCHEMA: Final = """
-- a row a grant (``units`` reservations, base.BATCH_IDS), and a row for its sends settled
-- together (base.SETTLE_SPREAD_S)
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    holder TEXT NOT NULL,
    granted_s REAL NOT NULL,
    -- sent: when the requests left; not yet settled: when the lease ends
    at_s REAL NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    units INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS limits (
    subject TEXT NOT NULL, campaign TEXT NOT NULL, rates TEXT NOT NULL, updated_s REAL NOT NULL,
    PRIMARY KEY (subject, campaign)
);
CREATE TABLE IF NOT EXISTS rests (
    subject TEXT PRIMARY KEY, until_s REAL NOT NULL, reason TEXT NOT NULL, at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    subject TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL, at_s REAL NOT NULL
);
-- one line per key of an opt-out (id:<user id>, u:<username>); a removal keeps the line and why
CREATE TABLE IF NOT EXISTS opt_outs (
    realm TEXT NOT NULL, entry TEXT NOT NULL, user_id TEXT, username TEXT, reason TEXT NOT NULL,
    source TEXT NOT NULL, at_s REAL NOT NULL, removed_s REAL, removed_reason TEXT,
    PRIMARY KEY (realm, entry)
);
-- each account's first send (its warm-up counts from it); never pruned
CREATE TABLE IF NOT EXISTS firsts (subject TEXT PRIMARY KEY, at_s REAL NOT NULL);
-- the token of the checkpoint of each campaign (its identity and file name) that ran last: a
-- copy of the checkpoint that did not is refused (two copies would each send the rows left)
CREATE TABLE IF NOT EXISTS runs (
    lineage TEXT PRIMARY KEY, token TEXT NOT NULL, at_s REAL NOT NULL
);
-- holders contending for a subject, and when each said it would ask again (base.TURN_S)
CREATE TABLE IF NOT EXISTS waiters (
    subject TEXT NOT NULL, holder TEXT NOT NULL, next_s REAL NOT NULL,
    PRIMARY KEY (subject, holder)
);
"""
#: each subject's reservations, however old: a bound on every window's count (never under it:
#: a grant adds to it, a release and the pruning take from it). Made, and filled from the
#: reservations, in the transaction that first finds it missing.
_TOTALS: Final = (
    "CREATE TABLE totals (subject TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "INSERT INTO totals SELECT subject, SUM(units) FROM reservations GROUP BY subject",
)
_ADD_TOTAL: Final = (
    "INSERT INTO totals VALUES (?, ?) ON CONFLICT (subject) DO UPDATE SET n = n + excluded.n"
)
#: a ledger of a bulkdm that wrote a row a reservation, made a row a grant: each of its rows is
#: one reservation. The column that bulkdm inserts is renamed, so that a process of it still
#: running fails at its next reservation (it would count a grant's row as one send); its
#: releases and pruning leave the totals over the truth, the safe side.
_BATCH_ROWS: Final = (
    "ALTER TABLE reservations RENAME COLUMN reserved_s TO granted_s",
    "ALTER TABLE reservations ADD COLUMN units INTEGER NOT NULL DEFAULT 1",
)
_INDEXES: Final = (
    # covers the window queries (a count over a busy key's window read every row of it from
    # the table for its holder: about 1 ms a reservation batch at 2,000 sends/s)
    ("CREATE INDEX IF NOT EXISTS reservations_units ON reservations "
     "(subject, at_s, holder, sent, units)"),
    "DROP INDEX IF EXISTS reservations_window",
    "DROP INDEX IF EXISTS reservations_subject_at",
    # the totals were kept by triggers, a write of them a reservation
    "DROP TRIGGER IF EXISTS totals_insert",
    "DROP TRIGGER IF EXISTS totals_delete",
)
#: the last grant's id, so that none is given twice: a row's id is one more than the largest
#: in the table, and the largest may go (a grant used up, the pruning), when a stale settlement
#: of its process (paused for days) would take another holder's grant for its own
_GRANT_IDS: Final = (
    "CREATE TABLE IF NOT EXISTS grant_ids (n INTEGER NOT NULL)",
    ("INSERT INTO grant_ids SELECT COALESCE(MAX(id), 0) FROM reservations "
     "WHERE NOT EXISTS (SELECT 1 FROM grant_ids)"),
)
#: (how many): the last of that many new grants' ids
_NEXT_GRANT_IDS: Final = (
    "UPDATE grant_ids SET n = MAX(n, (SELECT COALESCE(MAX(id), 0) FROM reservations)) + ? "
    "RETURNING n"
)
#: when the window's ``count``-th newest settled send leaves it (the rows newest first, each
#: with the sends from it to the newest)
_NTH_SETTLED: Final = (
    "SELECT until_s FROM (SELECT until_s, SUM(units) OVER (ORDER BY until_s DESC "
    "ROWS UNBOUNDED PRECEDING) AS newer FROM (SELECT at_s + CASE WHEN holder = ? THEN 0 "
    "ELSE ? END AS until_s, units FROM reservations WHERE subject = ? AND at_s > ? "
    "AND (holder != ? OR at_s > ?) AND (sent = 1 OR at_s <= ?))) "
    "WHERE newer >= ? ORDER BY until_s DESC LIMIT 1"
)


class SqliteLedger:
    """The ledger in one SQLite file. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.location = str(path)
        #: each reservation row's count: its units, or 1 in a ledger of an earlier bulkdm
        #: opened without upgrading it
        self._units = "units"

    @classmethod
    async def open(cls, path: Path, *, now_s: float, upgrade: bool = False) -> SqliteLedger:
        """Open (creating it and its folder) the ledger at ``path``. A ledger of an earlier
        bulkdm (a row a reservation) is upgraded only with ``upgrade`` (a run's: the earlier
        bulkdm's runs on it stop at their next reservation); otherwise it is read as it is."""
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"{path}: cannot open the account ledger: {exc}") from exc
        ledger = cls(db, path)
        try:
            if not await ledger._call(_prepare, now_s, upgrade):
                ledger._units = "1"
        except LedgerError:
            await db.close()
            raise
        return ledger

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        # the whole transaction in one trip to the connection's thread, as the checkpoint does
        try:
            result: _T = await self._db._execute(fn, self._db._conn, *args)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: the account ledger failed: {exc}") from exc
        return result

    async def close(self) -> None:
        await self._db.close()

    async def register(self, subject: str, *, campaign: str, rates: Sequence[Rate],
                       now_s: float) -> None:
        await self.register_many({subject: rates}, campaign=campaign, now_s=now_s)

    async def register_many(self, windows: Mapping[str, Sequence[Rate]], *, campaign: str,
                            now_s: float) -> dict[str, list[CampaignLimits]]:
        # one transaction (one fsync) for a campaign's accounts: one each took seconds
        rows = [(subject, campaign, encode_rates(rates), now_s)
                for subject, rates in windows.items()]
        return await self._call(_in_transaction, _register_many, rows, list(windows), now_s)

    async def limits(self, subject: str, *, now_s: float,
                     ttl_s: float = REGISTRATION_TTL_S) -> list[CampaignLimits]:
        return await self._call(_limits, subject, now_s, ttl_s)

    async def reserve(self, subject: str, *, rates: Sequence[Rate], holder: str, want: int,
                      now_s: float, lease_s: float = LEASE_S) -> Grant:
        grants = await self.reserve_many([Ask(subject=subject, rates=tuple(rates), want=want)],
                                         holder=holder, now_s=now_s, lease_s=lease_s)
        return grants[0]

    async def reserve_many(self, asks: Sequence[Ask], *, holder: str, now_s: float,
                           lease_s: float = LEASE_S) -> list[Grant]:
        # one commit (one fsync) for a group: a reservation per send of a slow account, one
        # transaction each, was what held a pool of 2,000 senders back (bench_pool.py)
        return await self._call(_in_transaction, _reserve_many, list(asks), holder, now_s,
                                lease_s)

    async def settle(self, sent: Sequence[tuple[int, float]], released: Sequence[int]) -> None:
        await self._call(_in_transaction, _settle, list(sent), list(released))

    async def history(self, subject: str, *, since_s: float, now_s: float) -> list[float]:
        rows = await self._call(_fetch, f"SELECT at_s, sent, {self._units} FROM reservations "
                                "WHERE subject = ? AND at_s >= ? ORDER BY at_s", (subject, since_s))
        return [at if sent else min(at, now_s) for at, sent, units in rows for _ in range(units)]

    async def first_send(self, subject: str) -> float | None:
        rows = await self._call(_fetch, "SELECT at_s FROM firsts WHERE subject = ?", (subject,))
        return float(rows[0][0]) if rows else None

    async def set_rest(self, subject: str, *, until_s: float, reason: str, now_s: float) -> None:
        await self._call(_write, _SET_REST, [(subject, until_s, reason, now_s)])

    async def rest(self, subject: str, *, now_s: float) -> Rest | None:
        rows = await self._call(_fetch, "SELECT until_s, reason FROM rests WHERE subject = ? "
                                "AND until_s > ?", (subject, now_s))
        return Rest(subject=subject, until_s=rows[0][0], reason=rows[0][1]) if rows else None

    async def set_health(self, subject: str, *, state: str | None, reason: str | None,
                         now_s: float) -> None:
        if state is None:
            await self._call(_write, "DELETE FROM health WHERE subject = ?", [(subject,)])
        else:
            await self._call(_write, "INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?)",
                             [(subject, state, reason or state, now_s)])

    async def health(self, subject: str) -> Health | None:
        rows = await self._call(_fetch, "SELECT state, reason, at_s FROM health "
                                "WHERE subject = ?", (subject,))
        if not rows:
            return None
        return Health(subject=subject, state=rows[0][0], reason=rows[0][1], at_s=rows[0][2])

    async def add_opt_out(self, realm: Realm, *, user_id: str | None, username: str | None,
                          reason: str, source: str, now_s: float,
                          said_s: float | None = None) -> None:
        name = (username or "").strip().removeprefix("@").lower() or None
        at_s = now_s if said_s is None else said_s
        await self._call(_write, _ADD_OPT_OUT, [
            (realm.value, entry, user_id or None, name, reason, source, at_s)
            for entry in opt_out_entries(user_id, username)])

    async def remove_opt_out(self, realm: Realm, *, user_id: str | None, username: str | None,
                             reason: str, now_s: float) -> int:
        name = (username or "").strip().removeprefix("@").lower() or None
        return await self._call(_in_transaction, _remove_opt_out, realm.value, user_id or None,
                                name, reason, now_s)

    async def opted_out(self, realm: Realm, *, user_ids: Sequence[str],
                        usernames: Sequence[str]) -> set[str]:
        entries = [f"id:{u}" for u in user_ids] + [f"u:{n.lower()}" for n in usernames]
        found: set[str] = set()
        for chunk, marks in _in_lists(entries):
            rows = await self._call(_fetch, "SELECT entry FROM opt_outs WHERE realm = ? AND "
                                    f"removed_s IS NULL AND entry IN ({marks})",
                                    (realm.value, *chunk))
            found.update(r[0] for r in rows)
        return found

    async def opt_outs(self, realm: Realm) -> list[OptOut]:
        rows = await self._call(_fetch, _OPT_OUTS, (realm.value,))
        return [OptOut(user_id=r[0], username=r[1], reason=r[2], source=r[3], at_s=r[4])
                for r in rows]

    async def run_token(self, lineage: str) -> str | None:
        rows = await self._call(_fetch, "SELECT token FROM runs WHERE lineage = ?",
                                (lineage,))
        return str(rows[0][0]) if rows else None

    async def pass_run(self, lineage: str, *, from_token: str | None, to_token: str,
                       now_s: float) -> bool:
        return await self._call(_in_transaction, _pass_run, lineage, from_token, to_token,
                                now_s)

    async def subjects(self, *, realm: Realm, kind: str = "account") -> list[str]:
        prefix = f"{realm.value}:{kind}:"
        sql = ("SELECT subject FROM limits UNION SELECT subject FROM rests "
               "UNION SELECT subject FROM health UNION SELECT DISTINCT subject FROM reservations")
        return sorted(s for (s,) in await self._call(_fetch, sql, ()) if s.startswith(prefix))


_SET_REST: Final = (
    "INSERT INTO rests VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET "
    "until_s = excluded.until_s, reason = excluded.reason, at_s = excluded.at_s "
    "WHERE excluded.until_s > rests.until_s OR rests.until_s <= excluded.at_s"
)


_ADD_OPT_OUT: Final = (
    "INSERT INTO opt_outs (realm, entry, user_id, username, reason, source, at_s) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (realm, entry) DO UPDATE SET "
    "user_id = COALESCE(excluded.user_id, user_id), username = COALESCE(excluded.username, "
    "username), reason = excluded.reason, source = excluded.source, at_s = excluded.at_s, "
    "removed_s = NULL, removed_reason = NULL "
    # an opt-out said before its removal (an old answer read again) stays lifted
    "WHERE removed_s IS NULL OR removed_s <= excluded.at_s"
)
_OPT_OUTS: Final = (
    "SELECT DISTINCT user_id, username, reason, source, at_s FROM opt_outs "
    "WHERE realm = ? AND removed_s IS NULL ORDER BY at_s, user_id, username"
)


def _pass_run(db: sqlite3.Connection, lineage: str, from_token: str | None, to_token: str,
              now_s: float) -> bool:
    row = db.execute("SELECT token FROM runs WHERE lineage = ?", (lineage,)).fetchone()
    if (row[0] if row else None) != from_token:
        return False
    db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", (lineage, to_token, now_s))
    return True


def _remove_opt_out(db: sqlite3.Connection, realm: str, user_id: str | None,
                    username: str | None, reason: str, now_s: float) -> int:
    cursor = db.execute("UPDATE opt_outs SET removed_s = ?, removed_reason = ? WHERE realm = ? "
                        "AND removed_s IS NULL AND (user_id = ? OR username = ?)",
                        (now_s, reason, realm, user_id, username))
    return cursor.rowcount


#: how long a call waits for another process's transaction (one takes moments)
_BUSY_S: Final = 30.0


def _prepare(db: sqlite3.Connection, now_s: float, upgrade: bool) -> bool:
    """The connection's settings, the schema and the pruning; False: the ledger is an earlier
    bulkdm's, left as it is (not ``upgrade``), and nothing was pruned."""
    db.execute(f"PRAGMA busy_timeout = {int(_BUSY_S * 1000)}")
    _wal(db)
    db.execute("PRAGMA synchronous = FULL")  # a reservation outlives a power cut
    db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
    if not _in_transaction(db, _upgrade, upgrade):
        return False
    _in_transaction(db, _prune, now_s)
    return True


def _upgrade(db: sqlite3.Connection, upgrade: bool) -> bool:
    """What a ledger of an earlier bulkdm lacks: a row a grant, the indexes, the totals, the
    grants' ids (False: it is one, and not to ``upgrade``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(reservations)")}
    if "units" not in columns and not upgrade:
        return False
    statements = [*(() if "units" in columns else _BATCH_ROWS), *_INDEXES, *_GRANT_IDS]
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'totals'").fetchone() is None:
        statements += _TOTALS
    for statement in statements:  # one by one: executescript would commit first
        db.execute(statement)
    return True


def _wal(db: sqlite3.Connection) -> None:
    # A new file's switch to WAL wants the write lock from inside a read, and SQLite's busy
    # handler never waits for that (it could deadlock): a second process opening a new ledger
    # while the first writes its schema was told "database is locked" at once
    deadline_s = time.monotonic() + _BUSY_S
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline_s:
                raise
        time.sleep(0.005)  # on the connection's own thread: no event loop waits


def _prune(db: sqlite3.Connection, now_s: float) -> None:
    # the sends no window anyone registered can count any more
    before_s = now_s - kept_s(r for (r,) in db.execute("SELECT DISTINCT rates FROM limits"))
    db.execute("UPDATE totals SET n = n - (SELECT COALESCE(SUM(units), 0) FROM reservations "
               "WHERE subject = totals.subject AND at_s < ?)", (before_s,))
    db.execute("DELETE FROM reservations WHERE at_s < ?", (before_s,))
    db.execute("DELETE FROM waiters WHERE next_s < ?", (now_s - KEEP_S,))


def _write(db: sqlite3.Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    db.executemany(sql, params)


def _fetch(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _in_transaction(db: sqlite3.Connection, fn: Callable[..., _T], *args: Any) -> _T:
    db.execute("BEGIN IMMEDIATE")  # the write lock first: no one else decides meanwhile
    try:
        result = fn(db, *args)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _register_many(db: sqlite3.Connection, rows: list[tuple[Any, ...]], subjects: list[str],
                   now_s: float) -> dict[str, list[CampaignLimits]]:
    db.executemany("INSERT OR REPLACE INTO limits VALUES (?, ?, ?, ?)", rows)
    return _limits_of(db, subjects, now_s)


def _limits(db: sqlite3.Connection, subject: str, now_s: float,
            ttl_s: float = REGISTRATION_TTL_S) -> list[CampaignLimits]:
    return _limits_of(db, [subject], now_s, ttl_s)[subject]


def _limits_of(db: sqlite3.Connection, subjects: Sequence[str], now_s: float,
               ttl_s: float = REGISTRATION_TTL_S) -> dict[str, list[CampaignLimits]]:
    found: dict[str, list[CampaignLimits]] = {subject: [] for subject in subjects}
    for chunk, marks in _in_lists(subjects):
        for subject, campaign, rates, updated_s in db.execute(
                "SELECT subject, campaign, rates, updated_s FROM limits WHERE updated_s > ? "
                f"AND subject IN ({marks}) ORDER BY subject, campaign", (now_s - ttl_s, *chunk)):
            found[subject].append(CampaignLimits(subject=subject, campaign=campaign,
                                                 updated_s=updated_s, rates=decode_rates(rates)))
    return found


def _in_lists(values: Sequence[str]) -> Iterator[tuple[Sequence[str], str]]:
    # ``values`` a chunk at a time, each with the marks of its IN list: under SQLite's bound on
    # a statement's parameters
    for start in range(0, len(values), 500):
        chunk = values[start:start + 500]
        yield chunk, ", ".join("?" * len(chunk))


def _reserve_many(db: sqlite3.Connection, asks: list[Ask], holder: str, now_s: float,
                  lease_s: float) -> list[Grant]:
    known = _known(db, list(dict.fromkeys(a.subject for a in asks)), now_s)
    expires_s = now_s + lease_s
    decided = [_decide(db, known, a, holder, now_s, expires_s) for a in asks]
    first = 0
    if known.grants:
        first = int(db.execute(_NEXT_GRANT_IDS, (len(known.grants),)).fetchone()[0]) \
            - len(known.grants) + 1
        db.executemany(_RESERVE, [(first + i, subject, holder, now_s, expires_s, n)
                                  for i, (subject, n) in enumerate(known.grants)])
        db.executemany(_ADD_TOTAL, list(known.granted.items()))
    db.executemany(_WAIT, [(s, h, t) for (s, h), t in known.waits.items() if t is not None])
    db.executemany("DELETE FROM waiters WHERE subject = ? AND holder = ?",
                   [key for key, t in known.waits.items() if t is None])
    return grants(decided, range(first, first + len(known.grants)), expires_s=expires_s)


def _known(db: sqlite3.Connection, subjects: list[str], now_s: float) -> Known:
    totals = dict.fromkeys(subjects, 0)
    known = Known(rests={}, waiting={s: {} for s in subjects},
                  limits=_limits_of(db, subjects, now_s), totals=totals)
    for chunk, marks in _in_lists(subjects):
        for subject, until_s, reason in db.execute(
                f"SELECT subject, until_s, reason FROM rests WHERE until_s > ? "
                f"AND subject IN ({marks})", (now_s, *chunk)):
            known.rests[subject] = (until_s, reason)
        for subject, holder, next_s in db.execute(
                f"SELECT subject, holder, next_s FROM waiters WHERE next_s > ? "
                f"AND subject IN ({marks})", (now_s - WAIT_GRACE_S, *chunk)):
            known.waiting[subject][holder] = next_s
        totals.update(db.execute(f"SELECT subject, n FROM totals WHERE subject IN ({marks})",
                                 chunk).fetchall())
    return known


def _decide(db: sqlite3.Connection, known: Known, ask: Ask, holder: str, now_s: float,
            expires_s: float) -> Grant | int:
    # a refusal, or how many units of ``ask`` are granted (groups.py)
    rates = opening(known, ask, holder, now_s=now_s, expires_s=expires_s)
    if isinstance(rates, Grant):
        return rates
    counts = _counts(db, ask.subject, holder, counted_rates(known, ask, rates), now_s)
    full = fit(known, ask, holder, rates, counts, now_s=now_s)
    if isinstance(full, int):
        return full
    binding = [(r, _nth_settled(db, ask.subject, holder, r, now_s)) for r in full]
    contends = holder in known.waiting[ask.subject] \
        or _others_in(db, ask.subject, holder, full, now_s)
    return refusal(known, ask, holder, binding, contends=contends, now_s=now_s,
                   expires_s=expires_s)


_WAIT: Final = "INSERT OR REPLACE INTO waiters VALUES (?, ?, ?)"


def _others_in(db: sqlite3.Connection, subject: str, holder: str, rates: Sequence[Rate],
               now_s: float) -> bool:
    """Whether another holder's sends are in any of ``rates``' windows ending now (the holder
    was refused for them: it contends with that holder)."""
    return db.execute("SELECT 1 FROM reservations WHERE subject = ? AND at_s > ? AND holder != ? "
                      "LIMIT 1", (subject, others_since_s(rates, now_s), holder)).fetchone() \
        is not None


def _counts(db: sqlite3.Connection, subject: str, holder: str, rates: Sequence[Rate],
            now_s: float) -> tuple[int, ...]:
    # the sends in each rate's window ending now, in one scan
    if not rates:
        return ()
    starts = [now_s - window_s(r) for r in rates]
    sums = ", ".join([_WINDOW_SUM] * len(starts))
    params = [p for start_s in starts for p in (start_s - OTHER_HOLDER_MARGIN_S, holder, start_s)]
    return tuple(db.execute(f"SELECT {sums} FROM reservations WHERE subject = ? AND at_s > ?",
                            (*params, subject, min(starts) - OTHER_HOLDER_MARGIN_S)).fetchone())


#: (the window's start less the margin, the holder, the start): the sends in a window ending
#: now, this holder's in the window, others' in it widened by a margin
_WINDOW_SUM: Final = (
    "COALESCE(SUM(CASE WHEN at_s > ? AND (holder != ? OR at_s > ?) THEN units END), 0)"
)
#: a grant of ``units`` reservations: one row
_RESERVE: Final = (
    "INSERT INTO reservations (id, subject, holder, granted_s, at_s, units) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _nth_settled(db: sqlite3.Connection, subject: str, holder: str, rate: Rate,
                 now_s: float) -> float | None:
    start_s = now_s - window_s(rate)
    row = db.execute(_NTH_SETTLED, (holder, OTHER_HOLDER_MARGIN_S, subject,
                                    start_s - OTHER_HOLDER_MARGIN_S, holder, start_s, now_s,
                                    rate.count)).fetchone()
    return None if row is None else float(row[0])


def _settle(db: sqlite3.Connection, sent: list[tuple[int, float]], released: list[int]) -> None:
    # a row for each group of a grant's sends (it copies the grant's subject and holder, so it
    # is written before the grant's row may go), then what is left of each grant
    done = settlements(sent, released)
    db.executemany(_SENT, [(at_s, n, s.batch) for s in done for at_s, n in s.sends])
    db.executemany(_FIRSTS, [(s.first_s, s.batch) for s in done if s.first_s is not None])
    # a grant's sends and releases beyond what it holds (a caller's mistake: an id twice, or
    # another holder's) take from the total no more than the grant's rows lose; one send of a
    # grant of at least one leaves its subject's total as it was
    db.executemany(_TOTAL_USED, [(s.used, s.used - s.released, s.batch, s.batch) for s in done
                                 if s.released or s.used > 1])
    db.executemany(_USED, [(s.used, s.batch) for s in done])
    db.executemany("DELETE FROM reservations WHERE id = ? AND units <= 0",
                   [(s.batch,) for s in done])


#: (when, how many, the grant): sends of a grant
_SENT: Final = ("INSERT INTO reservations (subject, holder, granted_s, at_s, sent, units) "
                "SELECT subject, holder, granted_s, ?, 1, ? FROM reservations "
                "WHERE id = ? AND sent = 0")
#: (when, the grant): its subject's first send, if earlier than what it has (or it has none)
_FIRSTS: Final = (
    "INSERT INTO firsts SELECT subject, ? FROM reservations WHERE id = ? AND sent = 0 "
    "ON CONFLICT (subject) DO UPDATE SET at_s = excluded.at_s WHERE excluded.at_s < firsts.at_s"
)
#: (used, of them sent, the grant, the grant): its subject's total less what the grant's rows
#: lose (a release: one; a send: none, its row takes the unit), before the grant gives them up
_TOTAL_USED: Final = (
    "UPDATE totals SET n = n + (SELECT MAX(units - ?, 0) - units + ? FROM reservations "
    "WHERE id = ? AND sent = 0) WHERE subject = "
    "(SELECT subject FROM reservations WHERE id = ? AND sent = 0)"
)
#: (how many, the grant): reservations of a grant sent or released
_USED: Final = "UPDATE reservations SET units = MAX(units - ?, 0) WHERE id = ? AND sent = 0"
