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
from wallet_core.ledger import MONEY_BACK_KINDS, TransactionKind
from wallet_core.topups import OPEN_STATUSES

TOP_UP_COLUMNS = (
    "id, user_id, amount_cents, currency, credits, status, payment_intent_id, created_at, idempotency_key, "
    "refunded_cents, credits_refunded, automatic"
)
EVENT_COLUMNS = "event_id, type, payment_intent_id, top_up_id, received_at, outcome, source"
LOT_COLUMNS = (
    "id, user_id, kind, granted, remaining, held, created_at, expires_at, priority, effective_at, source_transaction_id"
)
TRANSACTION_COLUMNS = (
    "id, user_id, kind, credits, held_change, balance_after, reference_id, created_at, reason, actor, metadata, "
    "hold_id, reverts"
)
POSTING_COLUMNS = "account, user_id, lot_id, amount"


def _of(alias: str, columns: str) -> str:
    """`columns` qualified by a table alias: "a, b" -> "t.a, t.b"."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


# A transaction row as read: its columns (of `t`), then the id of its revert, if any (`r`, found through
# the partial unique index on `reverts`). Readers unpack it by position (ledger_repository._transaction_of).
_T_COLUMNS = _of("t", TRANSACTION_COLUMNS)
_TRANSACTION_ROWS = (
    f"SELECT {_T_COLUMNS}, r.id FROM credit_transactions AS t LEFT JOIN credit_transactions AS r ON r.reverts = t.id"
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
_NEWEST_FIRST = f"{_TRANSACTION_ROWS} WHERE t.user_id = :p_user"
TRANSACTIONS = Sql.of(
    f"{_NEWEST_FIRST} ORDER BY t.created_at DESC, t.id DESC LIMIT :p_limit",
    postgresql=f'{_NEWEST_FIRST} ORDER BY t.created_at DESC, t.id COLLATE "C" DESC LIMIT :p_limit',
)
TRANSACTIONS_BEFORE = Sql.of(
    f"{_NEWEST_FIRST} AND (t.created_at < :p_before_at OR (t.created_at = :p_before_at AND t.id < :p_before_id)) "
    "ORDER BY t.created_at DESC, t.id DESC LIMIT :p_limit",
    postgresql=f"{_NEWEST_FIRST} AND (t.created_at < :p_before_at "
    'OR (t.created_at = :p_before_at AND t.id COLLATE "C" < :p_before_id)) '
    'ORDER BY t.created_at DESC, t.id COLLATE "C" DESC LIMIT :p_limit',
)
# Refunds and disputes (rare), of one user (the index ix_credit_transactions_user_recent) or of all.
_TAKE_BACKS = (
    f"{_TRANSACTION_ROWS} WHERE t.kind IN ({', '.join(repr(kind.value) for kind in sorted(MONEY_BACK_KINDS))})"
)
TAKE_BACKS = Sql.of(
    f"{_TAKE_BACKS} ORDER BY t.created_at, t.id", postgresql=f'{_TAKE_BACKS} ORDER BY t.created_at, t.id COLLATE "C"'
)
TAKE_BACKS_OF_USER = Sql.of(
    f"{_TAKE_BACKS} AND t.user_id = :p_user ORDER BY t.created_at, t.id",
    postgresql=f'{_TAKE_BACKS} AND t.user_id = :p_user ORDER BY t.created_at, t.id COLLATE "C"',
)
TRANSACTION_BY_REFERENCE = Sql.of(f"{_TRANSACTION_ROWS} WHERE t.reference_id = :p_reference")
# Many at once (a batch of spends looks up all its keys): a JSON array on SQLite, an array on PostgreSQL.
TRANSACTIONS_BY_REFERENCES = Sql.of(
    f"{_TRANSACTION_ROWS} WHERE t.reference_id IN (SELECT value FROM json_each(:p_references))",
    postgresql=f"{_TRANSACTION_ROWS} WHERE t.reference_id = ANY(CAST(:p_references AS varchar[]))",
)
TRANSACTION_BY_ID = Sql.of(f"{_TRANSACTION_ROWS} WHERE t.id = :p_id")
# Every revert, oldest first, beside the transaction it names (each with its own revert's id): what
# `wallet verify` checks. Reverts are found by kind (a full read, like the rest of the audit), so a
# revert that names nothing is found too.
REVERT_PAIRS = Sql.of(
    f"""
    SELECT {_T_COLUMNS}, r.id, {_of("o", TRANSACTION_COLUMNS)}, ro.id
    FROM credit_transactions AS t
    LEFT JOIN credit_transactions AS r ON r.reverts = t.id
    LEFT JOIN credit_transactions AS o ON o.id = t.reverts
    LEFT JOIN credit_transactions AS ro ON ro.reverts = o.id
    WHERE t.kind = '{TransactionKind.REVERT.value}'
    ORDER BY t.created_at, t.id
    """,
    postgresql=f"""
    SELECT {_T_COLUMNS}, r.id, {_of("o", TRANSACTION_COLUMNS)}, ro.id
    FROM credit_transactions AS t
    LEFT JOIN credit_transactions AS r ON r.reverts = t.id
    LEFT JOIN credit_transactions AS o ON o.id = t.reverts
    LEFT JOIN credit_transactions AS ro ON ro.reverts = o.id
    WHERE t.kind = '{TransactionKind.REVERT.value}'
    ORDER BY t.created_at, t.id COLLATE "C"
    """,
)
REVERT_PAIR_POSTINGS = Sql.of(
    f"""
    SELECT transaction_id, {POSTING_COLUMNS} FROM postings
    WHERE transaction_id IN (
        SELECT id FROM credit_transactions WHERE kind = '{TransactionKind.REVERT.value}'
        UNION
        SELECT reverts FROM credit_transactions WHERE kind = '{TransactionKind.REVERT.value}'
    )
    ORDER BY id
    """
)

# -- postings and lots by id -------------------------------------------------------------------------
# A transaction's postings in the order they were recorded (ix_postings_transaction_id).
POSTINGS_OF = Sql.of(f"SELECT {POSTING_COLUMNS} FROM postings WHERE transaction_id = :p_id ORDER BY id")
# The postings of a page of transactions, in one statement, with each posting's lot's kind (what
# `sources` needs). The ids come as one parameter: a JSON array on SQLite (json_each), an array on
# PostgreSQL, so the text is the same whatever the page's size.
_PAGE_POSTINGS = (
    f"SELECT p.transaction_id, {_of('p', POSTING_COLUMNS)}, l.kind "
    "FROM postings AS p LEFT JOIN credit_lots AS l ON l.id = p.lot_id "
)
POSTINGS_OF_MANY = Sql.of(
    f"{_PAGE_POSTINGS} WHERE p.transaction_id IN (SELECT value FROM json_each(:p_ids)) ORDER BY p.id",
    postgresql=f"{_PAGE_POSTINGS} WHERE p.transaction_id = ANY(CAST(:p_ids AS varchar[])) ORDER BY p.id",
)
LOTS_BY_ID = Sql.of(
    f"SELECT {LOT_COLUMNS} FROM credit_lots WHERE id IN (SELECT value FROM json_each(:p_ids))",
    postgresql=f"SELECT {LOT_COLUMNS} FROM credit_lots WHERE id = ANY(CAST(:p_ids AS varchar[]))",
)

# -- the wallet's lock ---------------------------------------------------------------------------------
# On PostgreSQL the upsert locks the wallet row until the transaction ends; lots read by a later
# statement are then what the previous holder of the lock committed (READ COMMITTED). On SQLite the
# transaction began with BEGIN IMMEDIATE and already holds the database's writer lock.
# The wallet row of a user who has one (nearly every write), locked without writing it: a row lock on
# PostgreSQL (FOR UPDATE re-reads the latest committed version once the lock is granted), and on
# SQLite, where BEGIN IMMEDIATE already holds the database's writer lock, a plain read.
# Both lock statements answer the wallet's alert settings too (its own low-balance threshold and alert
# level), which the unit of work keeps for tx.alerts while the lock is held: the alerts every booking
# checks cost no statement of their own (adapters.sql.alert_repository).
# The lock of an existing wallet also says whether it has an automatic top-up rule (0010), so a booking
# of a wallet without one (nearly all) reads no rule (adapters.sql.auto_top_up_repository).
WALLET_COLUMNS = "available, held, low_balance, alert_level"
_HAS_RULE = "(SELECT 1 FROM auto_top_up_rules AS r WHERE r.user_id = :p_user)"
LOCK_EXISTING_WALLET = Sql.of(
    f"SELECT {WALLET_COLUMNS}, {_HAS_RULE} FROM wallets WHERE user_id = :p_user",
    postgresql=f"SELECT {WALLET_COLUMNS}, {_HAS_RULE} FROM wallets WHERE user_id = :p_user FOR UPDATE",
)
# A user's first write: the upsert creates the row (or, when a concurrent first write just did, waits
# for its lock and updates it), and locks it either way.
LOCK_WALLET = Sql.of(
    f"""
    INSERT INTO wallets (user_id, available, held, updated_at) VALUES (:p_user, 0, 0, :p_at)
    ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at
    RETURNING {WALLET_COLUMNS}
    """
)
# PostgreSQL, many wallets at once (a batch of spends), all of which exist (wallet rows are never
# deleted): which exist, then their rows locked in code point order of user id, the order every batch
# takes its locks in one by one too, so batches never wait for each other in a cycle.
EXISTING_WALLETS = Sql.of("", postgresql="SELECT user_id FROM wallets WHERE user_id = ANY(CAST(:p_users AS varchar[]))")
LOCK_EXISTING_WALLETS = Sql.of(
    "",
    postgresql=f"""
    SELECT user_id, {WALLET_COLUMNS},
        (SELECT 1 FROM auto_top_up_rules AS r WHERE r.user_id = wallets.user_id)
    FROM wallets WHERE user_id = ANY(CAST(:p_users AS varchar[]))
    ORDER BY user_id COLLATE "C" FOR UPDATE
    """,
)
LIVE_LOTS_OF_USERS = Sql.of(
    "",
    postgresql=f"""
    SELECT {LOT_COLUMNS} FROM credit_lots
    WHERE user_id = ANY(CAST(:p_users AS varchar[])) AND (remaining <> 0 OR held <> 0)
    ORDER BY created_at, id
    """,
)
# A user's live lots (the partial index ix_credit_lots_user_live: its condition is spelled exactly so):
# what lock_wallet locks and live_lots lists, never the lots used up long ago.
LIVE_LOTS = Sql.of(
    f"""
    SELECT {LOT_COLUMNS} FROM credit_lots
    WHERE user_id = :p_user AND (remaining <> 0 OR held <> 0)
    ORDER BY created_at, id
    """
)
# What credits coming in need: lots in debt (partial index ix_credit_lots_user_debt) and lots expired
# with something left ((user_id, expires_at) index), never the user's other live lots.
# `remaining < 0` / `> 0` are spelled literally so the partial index applies.
DUE_LOTS = Sql.of(
    f"""
    SELECT {LOT_COLUMNS} FROM credit_lots WHERE user_id = :p_user AND remaining < 0
    UNION ALL
    SELECT {LOT_COLUMNS} FROM credit_lots WHERE user_id = :p_user AND expires_at <= :p_now AND remaining > 0
    """
)

# -- a booking -------------------------------------------------------------------------------------------
# The wallet upsert comes first: it returns the balance after this booking, and the wallet's
# pending_until: the latest effective_at of the user's lots. It only ever moves later (a NULL parameter
# leaves it), so a wallet whose pending_until is not after an instant has no credits pending then.
_LATER_PENDING = """pending_until = CASE
        WHEN excluded.pending_until IS NULL OR wallets.pending_until >= excluded.pending_until
        THEN wallets.pending_until ELSE excluded.pending_until END"""
ADD_TO_WALLET = Sql.of(
    f"""
    INSERT INTO wallets (user_id, available, held, updated_at, pending_until)
    VALUES (:p_user, :p_credits, :p_held, :p_at, :p_pending_until)
    ON CONFLICT (user_id) DO UPDATE SET available = wallets.available + excluded.available,
        held = wallets.held + excluded.held, updated_at = excluded.updated_at, {_LATER_PENDING}
    RETURNING available, pending_until
    """
)
BOOK = Sql.of(
    f"""
    INSERT INTO credit_transactions ({TRANSACTION_COLUMNS})
    VALUES (:id, :user_id, :kind, :credits, :held_change, :balance_after, :reference_id, :created_at, :reason,
            :actor, :metadata, :hold_id, :reverts)
    ON CONFLICT (reference_id) DO NOTHING
    RETURNING id
    """
)
# The credits of the user's lots not effective yet at an instant (partial index ix_credit_lots_user_pending).
_PENDING = "SELECT COALESCE(SUM(remaining), 0) FROM credit_lots WHERE user_id = :p_user AND effective_at > :p_at"
# SQLite, for a wallet with pending credits only: the booking's balance after leaves them out, counted
# once its lots are written.
LEAVE_OUT_PENDING = Sql.of(
    f"UPDATE credit_transactions SET balance_after = balance_after - ({_PENDING}) WHERE id = :p_id "
    "RETURNING balance_after"
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
    "VALUES (:id, :user_id, :kind, :granted, :remaining, :held, :created_at, :expires_at, :priority, :effective_at, "
    ":source_transaction_id)"
)
# A change's `ends_at` (a reverted grant's lot ends then) moves the expiry earlier, never later.
CHANGE_LOT = Sql.of(
    """
    UPDATE credit_lots SET remaining = remaining + :p_remaining, held = held + :p_held,
        expires_at = CASE WHEN :p_ends IS NULL OR (expires_at IS NOT NULL AND expires_at <= :p_ends) THEN expires_at
                          ELSE :p_ends END
    WHERE id = :p_lot
    """
)
# PostgreSQL: the whole booking in one statement (one round trip): the wallet upsert (which returns the
# balance after), the transaction row and -- only when that row went in, its reference being new --
# the new lots, the lot changes and the postings. Those come as three JSON arrays of records, read
# server-side by json_to_recordset, so the text is the same whatever the booking's shape (psycopg
# prepares it once it has run a few times) and sending them costs three strings. The parts see one
# snapshot: the caller sums changes per lot and applies changes to a lot it creates before inserting
# it. Foreign keys are checked at the end of the statement, when the transaction row and the wallet
# exist. The balance after leaves out pending credits (lots whose effective_at is after the booking):
# those of existing lots with this booking's changes, plus `p_new_pending` of the new lots; only
# computed when the wallet's pending_until says there may be any. Answers the balance after, and
# whether the row went in (when it did not, the caller undoes the wallet change with TAKE_BACK).
PG_BOOK = Sql.of(
    "",
    postgresql=f"""
    WITH wallet AS (
        INSERT INTO wallets (user_id, available, held, updated_at, pending_until)
        VALUES (:p_user, :p_credits, :p_held, :p_at, CAST(:p_pending_until AS timestamptz))
        ON CONFLICT (user_id) DO UPDATE SET available = wallets.available + excluded.available,
            held = wallets.held + excluded.held, updated_at = excluded.updated_at,
            pending_until = GREATEST(wallets.pending_until, excluded.pending_until)
        RETURNING available, pending_until
    ), change AS (
        SELECT * FROM json_to_recordset(CAST(:changes AS json))
            AS change (id varchar, remaining bigint, held bigint, ends_at timestamptz)
    ), booked AS (
        INSERT INTO credit_transactions ({TRANSACTION_COLUMNS})
        SELECT CAST(:id AS varchar), CAST(:user_id AS varchar), CAST(:kind AS varchar), CAST(:credits AS bigint),
            CAST(:held_change AS bigint),
            wallet.available - CASE WHEN wallet.pending_until > CAST(:created_at AS timestamptz) THEN
                CAST(:p_new_pending AS bigint) + (
                    SELECT COALESCE(SUM(l.remaining + COALESCE(change.remaining, 0)), 0)
                    FROM credit_lots AS l LEFT JOIN change ON change.id = l.id
                    WHERE l.user_id = :p_user AND l.effective_at > CAST(:created_at AS timestamptz))
                ELSE 0 END,
            CAST(:reference_id AS varchar), CAST(:created_at AS timestamptz), CAST(:reason AS text),
            CAST(:actor AS varchar), CAST(:metadata AS text), CAST(:hold_id AS varchar), CAST(:reverts AS varchar)
        FROM wallet
        ON CONFLICT (reference_id) DO NOTHING
        RETURNING id, balance_after
    ), new_lots AS (
        INSERT INTO credit_lots ({LOT_COLUMNS})
        SELECT {LOT_COLUMNS}
        FROM json_to_recordset(CAST(:new_lots AS json)) AS lot (id varchar, user_id varchar, kind varchar,
            granted bigint, remaining bigint, held bigint, created_at timestamptz, expires_at timestamptz,
            priority integer, effective_at timestamptz, source_transaction_id varchar)
        WHERE EXISTS (SELECT FROM booked)
    ), changed_lots AS (
        UPDATE credit_lots
        SET remaining = credit_lots.remaining + change.remaining, held = credit_lots.held + change.held,
            expires_at = LEAST(credit_lots.expires_at, change.ends_at)
        FROM change
        WHERE credit_lots.id = change.id AND EXISTS (SELECT FROM booked)
    ), legs AS (
        INSERT INTO postings (transaction_id, account, user_id, lot_id, amount)
        SELECT CAST(:id AS varchar), leg.account, leg.user_id, leg.lot_id, leg.amount
        FROM json_to_recordset(CAST(:legs AS json)) AS leg (account varchar, user_id varchar, lot_id varchar,
            amount bigint)
        WHERE EXISTS (SELECT FROM booked)
    )
    SELECT COALESCE((SELECT balance_after FROM booked), (SELECT available FROM wallet)), EXISTS (SELECT FROM booked)
    """,
)

# PostgreSQL: many bookings that create no lots (a batch of spends) in one statement, in order: the
# wallets' totals (each wallet moved once; the caller holds their locks, so the rows exist), the
# transaction rows, whose balance after is the wallet's balance before the statement plus the running sum
# of its bookings' credits up to each (a window in booking order), less the credits of lots not effective
# yet (only computed while the wallet's pending_until says there may be any; a booking that creates no lot
# leaves them as they are), the lot changes summed per lot, and the postings. Answers (id, balance after)
# of each row that went in; a row whose reference was recorded already is left out (the caller then
# rolls back: the wallet and lot changes of the whole statement were made).
PG_BOOK_MANY = Sql.of(
    "",
    postgresql=f"""
    WITH tx AS (
        SELECT * FROM json_to_recordset(CAST(:transactions AS json)) AS tx (ord integer, id varchar,
            user_id varchar, kind varchar, credits bigint, held_change bigint, reference_id varchar,
            created_at timestamptz, reason text, actor varchar, metadata text, hold_id varchar, reverts varchar)
    ), totals AS (
        SELECT user_id, SUM(credits) AS credits, SUM(held_change) AS held, MAX(created_at) AS at
        FROM tx GROUP BY user_id
    ), wallet AS (
        UPDATE wallets SET available = wallets.available + totals.credits, held = wallets.held + totals.held,
            updated_at = totals.at
        FROM totals WHERE wallets.user_id = totals.user_id
        RETURNING wallets.user_id, wallets.available - totals.credits AS before, wallets.pending_until
    ), change AS (
        SELECT id, SUM(remaining) AS remaining, SUM(held) AS held, MIN(ends_at) AS ends_at
        FROM json_to_recordset(CAST(:changes AS json))
            AS change (id varchar, remaining bigint, held bigint, ends_at timestamptz)
        GROUP BY id
    ), booked AS (
        INSERT INTO credit_transactions ({TRANSACTION_COLUMNS})
        SELECT tx.id, tx.user_id, tx.kind, tx.credits, tx.held_change,
            wallet.before + SUM(tx.credits) OVER (PARTITION BY tx.user_id ORDER BY tx.ord)
                - CASE WHEN wallet.pending_until > tx.created_at THEN (
                    SELECT COALESCE(SUM(l.remaining), 0) FROM credit_lots AS l
                    WHERE l.user_id = tx.user_id AND l.effective_at > tx.created_at)
                  ELSE 0 END,
            tx.reference_id, tx.created_at, tx.reason, tx.actor, tx.metadata, tx.hold_id, tx.reverts
        FROM tx JOIN wallet ON wallet.user_id = tx.user_id
        ORDER BY tx.ord
        ON CONFLICT (reference_id) DO NOTHING
        RETURNING id, balance_after
    ), changed_lots AS (
        UPDATE credit_lots
        SET remaining = credit_lots.remaining + change.remaining, held = credit_lots.held + change.held,
            expires_at = LEAST(credit_lots.expires_at, change.ends_at)
        FROM change
        WHERE credit_lots.id = change.id
    ), legs AS (
        INSERT INTO postings (transaction_id, account, user_id, lot_id, amount)
        SELECT leg.transaction_id, leg.account, leg.user_id, leg.lot_id, leg.amount
        FROM json_to_recordset(CAST(:legs AS json)) AS leg (transaction_id varchar, account varchar,
            user_id varchar, lot_id varchar, amount bigint)
        WHERE leg.transaction_id IN (SELECT id FROM booked)
    )
    SELECT id, balance_after FROM booked
    """,
)

# -- top-up status and the event log ---------------------------------------------------------------
# An automatic top-up gets its PaymentIntent once Stripe made it (only while it has none).
SET_TOP_UP_INTENT = Sql.of(
    "UPDATE top_ups SET payment_intent_id = :p_intent, updated_at = :p_at "
    "WHERE id = :p_id AND payment_intent_id IS NULL"
)
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
# Automatic top-ups (0010) are the wallet's, not the user's: they count against neither limit.
_OPEN = f"""top_ups WHERE user_id = :p_user AND created_at > :p_open_since AND automatic = 0
    AND status IN ({", ".join(f"'{status.value}'" for status in sorted(OPEN_STATUSES))})"""
_STARTED = "top_ups WHERE user_id = :p_user AND created_at > :p_started_since AND automatic = 0"
# One row: the count and the oldest creation time of each (index ix_top_ups_user_created).
TOP_UP_ACTIVITY = Sql.of(
    f"""
    SELECT (SELECT count(*) FROM {_OPEN}), (SELECT min(created_at) FROM {_OPEN}),
           (SELECT count(*) FROM {_STARTED}), (SELECT min(created_at) FROM {_STARTED})
    """
)
