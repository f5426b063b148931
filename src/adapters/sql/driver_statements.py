"""The statements sent through adapters.sql.driver, as plain SQL: the write path's (a webhook grant,
a spend, a hold) and every read of transactions, top-ups and events.

The write path is what every credit movement runs, so it skips SQLAlchemy's per-statement cost; the
reads of the same rows live here too, so each kind of row has one reader. The tables are defined in
adapters.sql.tables (the migrations create exactly those). Columns are listed explicitly: readers
unpack rows by position.
"""

# ruff: noqa: S608 -- the f-strings splice in the constant column lists below, never a value

from __future__ import annotations

from adapters.sql.driver import Sql
from wallet_core.ledger import MONEY_BACK_KINDS
from wallet_core.topups import OPEN_STATUSES

TOP_UP_COLUMNS = (
    "id, user_id, amount_cents, currency, credits, status, payment_intent_id, created_at, idempotency_key, "
    "refunded_cents, credits_refunded"
)
EVENT_COLUMNS = "event_id, type, payment_intent_id, top_up_id, received_at, outcome, source"
LOT_COLUMNS = "id, user_id, kind, granted, remaining, held, created_at, expires_at"
TRANSACTION_COLUMNS = (
    "id, user_id, kind, credits, held_change, balance_after, reference_id, created_at, reason, actor, metadata, "
    "hold_id"
)

# -- what a webhook reads first ----------------------------------------------------------------------
EVENT_BY_ID = Sql.of(f"SELECT {EVENT_COLUMNS} FROM payment_events WHERE event_id = :p_id")
TOP_UP_BY_INTENT = Sql.of(f"SELECT {TOP_UP_COLUMNS} FROM top_ups WHERE payment_intent_id = :p_intent")
# Both in one statement: one row always (the probe), with NULLs where nothing matched.
EVENT_AND_TOP_UP = Sql.of(
    f"""
    SELECT {", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))},
           {", ".join(f"t.{c.strip()}" for c in TOP_UP_COLUMNS.split(","))}
    FROM (SELECT 1 AS probe) AS probe
    LEFT JOIN payment_events AS e ON e.event_id = :p_event
    LEFT JOIN top_ups AS t ON t.payment_intent_id = :p_intent
    """
)
TOP_UP_BY_ID = Sql.of(f"SELECT {TOP_UP_COLUMNS} FROM top_ups WHERE id = :p_id")
TOP_UP_BY_KEY = Sql.of(f"SELECT {TOP_UP_COLUMNS} FROM top_ups WHERE user_id = :p_user AND idempotency_key = :p_key")
# Ties on the time are broken by id in code point order: PostgreSQL is told to compare bytes ("C"),
# whatever the database's locale; SQLite's default collation already does.
EVENTS_FOR_INTENT = Sql.of(
    f"SELECT {EVENT_COLUMNS} FROM payment_events WHERE payment_intent_id = :p_intent ORDER BY received_at, event_id",
    postgresql=f"SELECT {EVENT_COLUMNS} FROM payment_events WHERE payment_intent_id = :p_intent "
    'ORDER BY received_at, event_id COLLATE "C"',
)
# History, newest first, a page at a time (the index ix_credit_transactions_user_recent); a cursor is
# the (created_at, id) of the last row of the page before.
_NEWEST_FIRST = f"SELECT {TRANSACTION_COLUMNS} FROM credit_transactions WHERE user_id = :p_user"
TRANSACTIONS = Sql.of(
    f"{_NEWEST_FIRST} ORDER BY created_at DESC, id DESC LIMIT :p_limit",
    postgresql=f'{_NEWEST_FIRST} ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT :p_limit',
)
TRANSACTIONS_BEFORE = Sql.of(
    f"{_NEWEST_FIRST} AND (created_at < :p_before_at OR (created_at = :p_before_at AND id < :p_before_id)) "
    "ORDER BY created_at DESC, id DESC LIMIT :p_limit",
    postgresql=f"{_NEWEST_FIRST} AND (created_at < :p_before_at "
    'OR (created_at = :p_before_at AND id COLLATE "C" < :p_before_id)) '
    'ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT :p_limit',
)
# Refunds and disputes (rare), of one user (the index ix_credit_transactions_user_recent) or of all.
_TAKE_BACKS = (
    f"SELECT {TRANSACTION_COLUMNS} FROM credit_transactions "
    f"WHERE kind IN ({', '.join(repr(kind.value) for kind in sorted(MONEY_BACK_KINDS))})"
)
TAKE_BACKS = Sql.of(
    f"{_TAKE_BACKS} ORDER BY created_at, id", postgresql=f'{_TAKE_BACKS} ORDER BY created_at, id COLLATE "C"'
)
TAKE_BACKS_OF_USER = Sql.of(
    f"{_TAKE_BACKS} AND user_id = :p_user ORDER BY created_at, id",
    postgresql=f'{_TAKE_BACKS} AND user_id = :p_user ORDER BY created_at, id COLLATE "C"',
)
TRANSACTION_BY_REFERENCE = Sql.of(
    f"SELECT {TRANSACTION_COLUMNS} FROM credit_transactions WHERE reference_id = :p_reference"
)

# -- the wallet's lock ---------------------------------------------------------------------------------
# On PostgreSQL the upsert locks the wallet row until the transaction ends; lots read by a later
# statement are then what the previous holder of the lock committed (READ COMMITTED). On SQLite the
# transaction began with BEGIN IMMEDIATE and already holds the database's writer lock.
# The wallet row of a user who has one (nearly every write), locked without writing it: a row lock on
# PostgreSQL (FOR UPDATE re-reads the latest committed version once the lock is granted), and on
# SQLite, where BEGIN IMMEDIATE already holds the database's writer lock, a plain read.
LOCK_EXISTING_WALLET = Sql.of(
    "SELECT available, held FROM wallets WHERE user_id = :p_user",
    postgresql="SELECT available, held FROM wallets WHERE user_id = :p_user FOR UPDATE",
)
# A user's first write: the upsert creates the row (or, when a concurrent first write just did, waits
# for its lock and updates it), and locks it either way.
LOCK_WALLET = Sql.of(
    """
    INSERT INTO wallets (user_id, available, held, updated_at) VALUES (:p_user, 0, 0, :p_at)
    ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at
    RETURNING available, held
    """
)
LIVE_LOTS = Sql.of(
    f"""
    SELECT {LOT_COLUMNS} FROM credit_lots
    WHERE user_id = :p_user AND (remaining <> 0 OR held <> 0)
    ORDER BY created_at, id
    """
)
# What credits coming in need: lots in debt (partial index ix_credit_lots_user_debt) and promotional
# lots expired with something left ((user_id, expires_at) index), never the user's other live lots.
# `remaining < 0` / `> 0` are spelled literally so the partial index applies.
DUE_LOTS = Sql.of(
    f"""
    SELECT {LOT_COLUMNS} FROM credit_lots WHERE user_id = :p_user AND remaining < 0
    UNION ALL
    SELECT {LOT_COLUMNS} FROM credit_lots WHERE user_id = :p_user AND expires_at <= :p_now AND remaining > 0
    """
)

# -- a booking -------------------------------------------------------------------------------------------
# The wallet upsert comes first: it returns the balance after this booking.
ADD_TO_WALLET = Sql.of(
    """
    INSERT INTO wallets (user_id, available, held, updated_at) VALUES (:p_user, :p_credits, :p_held, :p_at)
    ON CONFLICT (user_id) DO UPDATE SET available = wallets.available + excluded.available,
        held = wallets.held + excluded.held, updated_at = excluded.updated_at
    RETURNING available
    """
)
BOOK = Sql.of(
    f"""
    INSERT INTO credit_transactions ({TRANSACTION_COLUMNS})
    VALUES (:id, :user_id, :kind, :credits, :held_change, :balance_after, :reference_id, :created_at, :reason,
            :actor, :metadata, :hold_id)
    ON CONFLICT (reference_id) DO NOTHING
    RETURNING id
    """
)
# Undoes the wallet change of a booking whose reference turned out to be recorded already.
TAKE_BACK = Sql.of(
    "UPDATE wallets SET available = available - :p_credits, held = held - :p_held WHERE user_id = :p_user"
)
# SQLite: one executemany each (a statement there is a function call, no round trip).
ADD_POSTING = Sql.of(
    "INSERT INTO postings (transaction_id, account, user_id, lot_id, amount) "
    "VALUES (:transaction_id, :account, :user_id, :lot_id, :amount)"
)
ADD_LOT = Sql.of(
    f"INSERT INTO credit_lots ({LOT_COLUMNS}) "
    "VALUES (:id, :user_id, :kind, :granted, :remaining, :held, :created_at, :expires_at)"
)
CHANGE_LOT = Sql.of(
    "UPDATE credit_lots SET remaining = remaining + :p_remaining, held = held + :p_held WHERE id = :p_lot"
)
# PostgreSQL: the whole booking in one statement (one round trip): the wallet upsert (which returns the
# balance after), the transaction row, and -- only when that row went in, its reference being new --
# the new lots, the lot changes and the postings. Those come as three JSON arrays of records, read
# server-side by json_to_recordset, so the text is the same whatever the booking's shape (psycopg
# prepares it once it has run a few times) and sending them costs three strings. The parts see one
# snapshot: the caller sums changes per lot and applies changes to a lot it creates before inserting
# it. Foreign keys are checked at the end of the statement, when the transaction row and the wallet
# exist. Answers the balance after, and whether the row went in (when it did not, the caller undoes
# the wallet change with TAKE_BACK).
PG_BOOK = Sql.of(
    "",
    postgresql=f"""
    WITH wallet AS (
        INSERT INTO wallets (user_id, available, held, updated_at) VALUES (:p_user, :p_credits, :p_held, :p_at)
        ON CONFLICT (user_id) DO UPDATE SET available = wallets.available + excluded.available,
            held = wallets.held + excluded.held, updated_at = excluded.updated_at
        RETURNING available
    ), booked AS (
        INSERT INTO credit_transactions ({TRANSACTION_COLUMNS})
        SELECT CAST(:id AS varchar), CAST(:user_id AS varchar), CAST(:kind AS varchar), CAST(:credits AS bigint),
            CAST(:held_change AS bigint), wallet.available, CAST(:reference_id AS varchar),
            CAST(:created_at AS timestamptz), CAST(:reason AS text), CAST(:actor AS varchar),
            CAST(:metadata AS text), CAST(:hold_id AS varchar)
        FROM wallet
        ON CONFLICT (reference_id) DO NOTHING
        RETURNING id
    ), new_lots AS (
        INSERT INTO credit_lots ({LOT_COLUMNS})
        SELECT {LOT_COLUMNS}
        FROM json_to_recordset(CAST(:new_lots AS json)) AS lot (id varchar, user_id varchar, kind varchar,
            granted bigint, remaining bigint, held bigint, created_at timestamptz, expires_at timestamptz)
        WHERE EXISTS (SELECT FROM booked)
    ), changed_lots AS (
        UPDATE credit_lots
        SET remaining = credit_lots.remaining + change.remaining, held = credit_lots.held + change.held
        FROM json_to_recordset(CAST(:changes AS json)) AS change (id varchar, remaining bigint, held bigint)
        WHERE credit_lots.id = change.id AND EXISTS (SELECT FROM booked)
    ), legs AS (
        INSERT INTO postings (transaction_id, account, user_id, lot_id, amount)
        SELECT CAST(:id AS varchar), leg.account, leg.user_id, leg.lot_id, leg.amount
        FROM json_to_recordset(CAST(:legs AS json)) AS leg (account varchar, user_id varchar, lot_id varchar,
            amount bigint)
        WHERE EXISTS (SELECT FROM booked)
    )
    SELECT (SELECT available FROM wallet), EXISTS (SELECT FROM booked)
    """,
)

# -- top-up status and the event log ---------------------------------------------------------------
SET_TOP_UP_STATUS = Sql.of("UPDATE top_ups SET status = :p_status, updated_at = :p_at WHERE id = :p_id")
# ON CONFLICT DO NOTHING: a second event with the same id is ignored, and (unlike a caught
# IntegrityError) leaves a PostgreSQL transaction usable.
ADD_EVENT = Sql.of(
    f"""
    INSERT INTO payment_events ({EVENT_COLUMNS})
    VALUES (:event_id, :type, :payment_intent_id, :top_up_id, :received_at, :outcome, :source)
    ON CONFLICT (event_id) DO NOTHING
    """
)

# Per-user top-up limits (0006). PostgreSQL only: the user's top-up lock, held until the transaction ends.
LOCK_TOP_UPS = Sql.of("SELECT pg_advisory_xact_lock(:p_key)")
_OPEN = f"""top_ups WHERE user_id = :p_user AND created_at > :p_open_since
    AND status IN ({", ".join(f"'{status.value}'" for status in sorted(OPEN_STATUSES))})"""
_STARTED = "top_ups WHERE user_id = :p_user AND created_at > :p_started_since"
# One row: the count and the oldest creation time of each (index ix_top_ups_user_created).
TOP_UP_ACTIVITY = Sql.of(
    f"""
    SELECT (SELECT count(*) FROM {_OPEN}), (SELECT min(created_at) FROM {_OPEN}),
           (SELECT count(*) FROM {_STARTED}), (SELECT min(created_at) FROM {_STARTED})
    """
)
