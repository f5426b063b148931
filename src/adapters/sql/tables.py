"""The schema, as SQLAlchemy Core tables. Migrations (in `migrations/versions`) must create exactly this."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from wallet_core.payments import MAX_EVENT_ID_LENGTH, MAX_EVENT_TYPE_LENGTH

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_N_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC and always read back as aware UTC.

    PostgreSQL keeps it in `timestamptz`; SQLite has no time zones, so it is stored as naive UTC there.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the ledger stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Amounts are BigInteger hundredths of a credit; ids are strings made by wallet_core.ids.

wallets = Table(
    "wallets",
    metadata,
    Column("user_id", String(128), primary_key=True),
    # The stored balances of the user's `wallet` (spendable) and `held` accounts.
    Column("available", BigInteger, nullable=False, server_default=text("0")),
    Column("held", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", UtcDateTime, nullable=False),
    # The latest effective_at of the user's lots (0007): NULL for a wallet never granted future-dated
    # credits. Reads subtract pending credits only while it is ahead of them, so a wallet with none
    # never pays for looking.
    Column("pending_until", UtcDateTime, nullable=True),
    # Balance alerts (0008): the wallet's own low-balance threshold in hundredths (NULL: the default,
    # WALLET_LOW_BALANCE_CREDITS, applies) and the level its balance was last seen at (ok | low |
    # depleted; NULL: no change seen since alerts existed). Read with the wallet's lock.
    Column("low_balance", BigInteger, nullable=True),
    Column("alert_level", String(16), nullable=True),
)

credit_transactions = Table(
    "credit_transactions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), ForeignKey("wallets.user_id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("credits", BigInteger, nullable=False),  # the change to the wallet (spendable) balance
    Column("balance_after", BigInteger, nullable=False),  # the wallet balance right after
    Column("reference_id", String(300), nullable=False),
    Column("reason", Text, nullable=True),
    Column("actor", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("held_change", BigInteger, nullable=False, server_default=text("0")),
    Column("metadata", Text, nullable=True),  # a JSON object of strings; NULL when empty
    Column("hold_id", String(64), nullable=True),
    Column("reverts", String(64), nullable=True),  # the transaction a revert corrects (0007)
    UniqueConstraint("reference_id"),
    Index("ix_credit_transactions_user_recent", "user_id", "created_at", "id"),
    # A transaction is reverted at most once; also how a row finds its revert (`reverted_by`). A unique
    # index rather than a constraint, so SQLite adds it without copying the table; partial, so the rows
    # that revert nothing (nearly all) cost it nothing to write. `reverts = ?` implies NOT NULL, so both
    # databases use it to look a revert up.
    Index(
        "uq_credit_transactions_reverts",
        "reverts",
        unique=True,
        postgresql_where=text("reverts IS NOT NULL"),
        sqlite_where=text("reverts IS NOT NULL"),
    ),
)

postings = Table(
    "postings",
    metadata,
    # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the autoincrementing rowid.
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("transaction_id", String(64), ForeignKey("credit_transactions.id"), nullable=False),
    Column("account", String(32), nullable=False),
    Column("user_id", String(128), nullable=True),  # set on per-user accounts (wallet, held) only
    Column("lot_id", String(64), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Index("ix_postings_transaction_id", "transaction_id"),  # a transaction's postings (no index by user: 0005)
)

credit_lots = Table(
    "credit_lots",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), ForeignKey("wallets.user_id"), nullable=False),
    Column("kind", String(16), nullable=False),  # paid | promotional
    Column("granted", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),  # negative when the lot is in debt (refund after spending)
    Column("held", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    # 0007: the lot's place among lots of its kind (lower is spent first), when it starts counting
    # (NULL: from its creation), and the top-up or grant that made it.
    Column("priority", Integer, nullable=False, server_default=text("50")),
    Column("effective_at", UtcDateTime, nullable=True),
    Column("source_transaction_id", String(64), nullable=True),
    Index("ix_credit_lots_user_expiry", "user_id", "expires_at"),
)
# The lots the expiry run looks for: live promotional lots with an expiry. Partial, so the run never
# reads the ever-growing number of used-up or swept lots; queries must spell `remaining > 0` literally
# (not as a bound parameter) for SQLite to use it; ledger_repository names it in a query.
LIVE_EXPIRING = text("remaining > 0 AND expires_at IS NOT NULL")
Index(
    "ix_credit_lots_live_expiry",
    credit_lots.c.expires_at,
    postgresql_where=LIVE_EXPIRING,
    sqlite_where=LIVE_EXPIRING,
)

# Lots in debt (a refund or dispute after spending): few, and what every credit coming in looks for.
IN_DEBT = text("remaining < 0")
Index("ix_credit_lots_user_debt", credit_lots.c.user_id, postgresql_where=IN_DEBT, sqlite_where=IN_DEBT)

# A user's live lots (something remaining, held or owed): what every spend and hold locks and every
# wallet read lists (0007), without reading the lots used up long ago. The queries spell the condition
# exactly so, for both databases to use it.
LIVE = text("remaining <> 0 OR held <> 0")
Index("ix_credit_lots_user_live", credit_lots.c.user_id, postgresql_where=LIVE, sqlite_where=LIVE)

# Lots granted with an effective date (few): what the pending credits are summed from, without reading
# the user's other lots. `effective_at > ?` implies NOT NULL, so both databases use it.
FUTURE_DATED = text("effective_at IS NOT NULL")
Index(
    "ix_credit_lots_user_pending",
    credit_lots.c.user_id,
    credit_lots.c.effective_at,
    postgresql_where=FUTURE_DATED,
    sqlite_where=FUTURE_DATED,
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("captured", BigInteger, nullable=False, server_default=text("0")),
    Column("reason", Text, nullable=True),
    Column("reference_id", String(300), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_holds_status_expiry", "status", "expires_at"),
)

hold_allocations = Table(
    "hold_allocations",
    metadata,
    Column("hold_id", String(64), ForeignKey("holds.id"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),  # the hold's lot order
    Column("lot_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
)

top_ups = Table(
    "top_ups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("credits", BigInteger, nullable=False),  # hundredths of a credit
    Column("status", String(32), nullable=False),
    # NULL only for an automatic top-up whose charge Stripe has not answered yet (0010).
    Column("payment_intent_id", String(255), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Money Stripe gave back so far, and the credits taken back for it (refunds/disputes, 0003).
    Column("refunded_cents", BigInteger, nullable=False, server_default=text("0")),
    Column("credits_refunded", BigInteger, nullable=False, server_default=text("0")),
    # 1: recorded by the wallet's automatic top-up rule (0010).
    Column("automatic", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("payment_intent_id"),
    UniqueConstraint("user_id", "idempotency_key"),
    Index("ix_top_ups_user_created", "user_id", "created_at"),  # a user's recent top-ups, for the limits (0006)
)

# Every Stripe event the wallet received, once per event id, and what it did (support's log).
payment_events = Table(
    "payment_events",
    metadata,
    Column("event_id", String(MAX_EVENT_ID_LENGTH), primary_key=True),
    Column("type", String(MAX_EVENT_TYPE_LENGTH), nullable=False),
    Column("payment_intent_id", String(255), nullable=True),
    Column("top_up_id", String(64), nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("source", String(32), nullable=False),  # webhook | reconcile
    Index("ix_payment_events_intent_received", "payment_intent_id", "received_at"),
)

# -- outbound events and webhooks (0008) ---------------------------------------------------------------

# Outbound events (the transactional outbox): written in the transaction of the change they describe,
# in `seq` order; `number` is their place in the public order (what pull cursors count), given only once
# they are committed (adapters.sql.outbox_repository), so it is NULL until then.
outbound_events = Table(
    "outbound_events",
    metadata,
    # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the autoincrementing rowid.
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("data", Text, nullable=False),  # a JSON object
    Column("number", BigInteger, nullable=True),
    UniqueConstraint("id"),
)
# The indexes on `number` are partial (numbered rows only), so an event's INSERT, on the hot path of
# every spend and grant, touches none of them (it writes the primary key, the id and the unnumbered
# index); publishing enters the event in them. `number > ?` implies NOT NULL, so both databases use them.
NUMBERED = text("number IS NOT NULL")
UNNUMBERED = text("number IS NULL")
Index(
    "uq_outbound_events_number",
    outbound_events.c.number,
    unique=True,
    postgresql_where=NUMBERED,
    sqlite_where=NUMBERED,
)
Index(
    "ix_outbound_events_unnumbered",
    outbound_events.c.seq,
    postgresql_where=UNNUMBERED,
    sqlite_where=UNNUMBERED,
)
Index(
    "ix_outbound_events_user_number",
    outbound_events.c.user_id,
    outbound_events.c.number,
    postgresql_where=NUMBERED,
    sqlite_where=NUMBERED,
)
Index(
    "ix_outbound_events_type_number",
    outbound_events.c.type,
    outbound_events.c.number,
    postgresql_where=NUMBERED,
    sqlite_where=NUMBERED,
)

# One row (id 1): the highest number given to an event. Publishers lock it (PostgreSQL: FOR UPDATE) and
# so take turns. 0008 inserts the row.
event_publication = Table(
    "event_publication",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_number", BigInteger, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("events", Text, nullable=False),  # a JSON array of event types, or ["*"]
    Column("description", Text, nullable=True),
    Column("secret", String(255), nullable=False),
    Column("previous_secret", String(255), nullable=True),  # signs too until it expires (a rotation)
    Column("previous_secret_expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

# One event to one endpoint. No foreign keys: a removed endpoint's deliveries stay (their history).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("endpoint_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at", "id"),  # an endpoint's, newest first
)
# What the workers claim: pending deliveries by when they are due. Partial, so delivered and failed ones
# (nearly all of them, in time) are never read; queries spell `status = 'pending'` literally.
PENDING = text("status = 'pending'")
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    postgresql_where=PENDING,
    sqlite_where=PENDING,
)

# -- saving a card (0009) ------------------------------------------------------------------------------

# Each user's Stripe Customer, made once (insert if absent: the first one stored stays).
stripe_customers = Table(
    "stripe_customers",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("customer_id"),
)

# The one card a user saved for payments made without them (automatic top-up): the PaymentMethod at
# Stripe and what a user needs to recognise it. Never the card number.
saved_cards = Table(
    "saved_cards",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("payment_method_id", String(255), nullable=False),
    Column("brand", String(32), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
    Column("saved_at", UtcDateTime, nullable=False),
)

# Each wallet's automatic top-up rule (0010): threshold and target in hundredths of a credit, amounts in
# cents; the last attempt's columns are all NULL before the rule did anything.
auto_top_up_rules = Table(
    "auto_top_up_rules",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("threshold", BigInteger, nullable=False),
    Column("target", BigInteger, nullable=True),
    Column("amount_cents", BigInteger, nullable=True),
    Column("monthly_limit_cents", BigInteger, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("disabled_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_at", UtcDateTime, nullable=True),
    Column("last_outcome", String(32), nullable=True),
    Column("last_amount_cents", BigInteger, nullable=True),
    Column("last_top_up_id", String(64), nullable=True),
    Column("last_payment_intent_id", String(255), nullable=True),
    Column("last_error_code", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
)

# The automatic top-up each wallet has in flight (0010): its primary key, the user id, is the marker
# that makes two impossible, whatever servers race; the worker's job (due_at: when it may be claimed;
# NULL once Stripe took the charge and only its webhook is awaited).
auto_top_up_charges = Table(
    "auto_top_up_charges",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("top_up_id", String(64), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("payment_method_id", String(255), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("due_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("payment_intent_id", String(255), nullable=True),
    UniqueConstraint("top_up_id"),
    Index("ix_auto_top_up_charges_due", "due_at"),
)
