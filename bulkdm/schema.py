"""The checkpoint's SQL schema and its migrations, one step per ``PRAGMA user_version``."""

from __future__ import annotations

from typing import Final

__all__ = ["INDEXES", "LOAD_LATE_INDEXES", "MIGRATIONS", "SCHEMA_VERSION"]

_V1: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rows (
    id INTEGER PRIMARY KEY,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    recipient_id TEXT,
    recipient_username TEXT,
    recipient_key TEXT,
    text TEXT,
    text_sha256 TEXT,
    sender TEXT,
    external_id TEXT,
    media TEXT,
    consent TEXT,
    idempotency_key TEXT,
    key_rotation INTEGER NOT NULL DEFAULT 0,
    field TEXT,
    reason TEXT,
    message TEXT,
    duplicate_of_line INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    claimed_at REAL,
    message_id TEXT,
    media_id TEXT,
    request_id TEXT,
    write_action_id TEXT,
    sent_at TEXT,
    finished_at TEXT,
    finish_seq INTEGER
);
CREATE TABLE attempts (
    row_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    sender TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    at_s REAL NOT NULL,
    action TEXT,
    code TEXT,
    PRIMARY KEY (row_id, attempt)
);
CREATE INDEX attempts_by_time ON attempts (at_s);
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    user_id TEXT,
    status TEXT NOT NULL,
    resolved_at REAL NOT NULL
);
CREATE TABLE media (
    path TEXT NOT NULL,
    sender TEXT NOT NULL,
    media_id TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (path, sender)
);
CREATE TABLE senders (
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    until_s REAL,
    reason TEXT
);
"""

#: Only what the run's queries need: rows by state (due rows per sender, and the counts and
#: lists a report or a resume reads: with the state first they are ranges, not table scans), a
#: resolved id's other rows, and the handoff order (partial: most rows have no id collision to
#: find or no finish number yet).
INDEXES: Final = {
    "rows_state": "CREATE INDEX IF NOT EXISTS rows_state ON rows (state, sender, id)",
    "rows_recipient_id": "CREATE INDEX IF NOT EXISTS rows_recipient_id ON rows (recipient_id) "
    "WHERE recipient_id IS NOT NULL",
    "rows_finish": "CREATE UNIQUE INDEX IF NOT EXISTS rows_finish ON rows (finish_seq) "
    "WHERE finish_seq IS NOT NULL",
}

#: Indexes dropped while a plan is bulk-inserted and built again after, in one sort. The others
#: take the rows in id order, at one place per sender, so keeping them up to date costs SQLite
#: little, and it does that in its own thread while the planner works: 1M rows, about 0.6 s
#: less. User ids come in no order: maintained row by row, that index would cost more.
LOAD_LATE_INDEXES: Final = frozenset({"rows_recipient_id"})

#: MIGRATIONS[n] takes a checkpoint from user_version n to n + 1.
#: v2: a restart reads each sender's newest attempts, not every attempt of the last day
_V2: Final = "CREATE INDEX attempts_by_sender ON attempts (sender, at_s);"

#: v3: rows_todo (sender, state, id) gives way to rows_state (state, sender, id), built on open
_V3: Final = "DROP INDEX IF EXISTS rows_todo;"

#: v4 (exports, retry and fix files): an invalid row keeps its original fields as read (a JSON
#: object), so a fix file holds every field of the row and fixing it is editing one field
_V4_ORIGINAL: Final = "ALTER TABLE rows ADD COLUMN original TEXT;"

#: v5: media uploads take the API key's write slots; a restart charges them like attempts
#: (``done`` 0: in flight when the run stopped, so counted from the restart)
_V5_UPLOADS: Final = """
CREATE TABLE uploads (
    path TEXT NOT NULL,
    sender TEXT NOT NULL,
    at_s REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (path, sender, at_s)
);
CREATE INDEX uploads_by_time ON uploads (at_s);
"""

#: v6 (late binding): a row without a ``sender`` column is planned unbound (``sender`` NULL)
#: and bound to an account by its claim; ``bound_by_claim`` 1 says its sender was chosen so, not
#: pinned by the campaign file: such a row moves again once it provably was not delivered. Rows
#: of older checkpoints keep the sender their plan gave them (0: as pinned), as before.
_V6_BOUND_BY_CLAIM: Final = "ALTER TABLE rows ADD COLUMN bound_by_claim INTEGER NOT NULL DEFAULT 0;"

#: v7 (replies): each answer of a recipient to a sent row, once by its message id, numbered in
#: the order it was recorded (``seq``: the replies file's order and cursor); and per sent row how
#: far its conversation has been read whole (``until_at``: the newest message then seen), so a
#: later sync stops there
_V7_REPLIES: Final = """
CREATE TABLE replies (
    message_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    row_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    received_at TEXT,
    opt_out INTEGER NOT NULL
);
CREATE INDEX replies_by_row ON replies (row_id);
CREATE TABLE reply_reads (row_id INTEGER PRIMARY KEY, until_at TEXT NOT NULL);
"""

#: v8 (replies answer the sender's newest message): when the sender wrote to the recipient again
#: after the row's DM (another campaign's DM, an agent's message), the first such message's time;
#: the recipient's messages after it answer that message, not the row's DM
_V8_LATER_MESSAGE: Final = """
ALTER TABLE reply_reads ADD COLUMN later_at TEXT;
"""

#: v9 (reply reads count against the spend cap): what reading replies has been billed so far,
#: in one row: history pages (GetXAPI's price) and the messages they returned (Xquik's), so a
#: restart counts them with the DMs, uploads and lookups
_V9_READ_COSTS: Final = """
CREATE TABLE read_costs (pages INTEGER NOT NULL, results INTEGER NOT NULL);
INSERT INTO read_costs (pages, results) VALUES (0, 0);
"""

#: v10 (a run's syncs read old conversations less often): when each conversation was last read
#: (``read_at_s``; NULL: before this version, so due) and whether that read found an answer
_V10_READ_AT: Final = """
ALTER TABLE reply_reads ADD COLUMN read_at_s REAL;
ALTER TABLE reply_reads ADD COLUMN answered INTEGER NOT NULL DEFAULT 0;
"""

#: v11 (a sender's handle respelled in the settings): the account as each attempt's request
#: named it, kept as it was when ``sender`` takes the settings' new spelling: a replay under
#: the same key must name it the same (Xquik answers a key reused with another account 409)
_V11_SENT_AS: Final = "ALTER TABLE attempts ADD COLUMN sent_as TEXT;"

MIGRATIONS: Final = (
    _V1, _V2, _V3, _V4_ORIGINAL, _V5_UPLOADS, _V6_BOUND_BY_CLAIM, _V7_REPLIES, _V8_LATER_MESSAGE,
    _V9_READ_COSTS, _V10_READ_AT, _V11_SENT_AS,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
