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
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

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


wallets = Table(
    "wallets",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("balance", BigInteger, nullable=False, server_default=text("0")),  # hundredths of a credit
    Column("updated_at", UtcDateTime, nullable=False),
)

credit_transactions = Table(
    "credit_transactions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(128), ForeignKey("wallets.user_id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("reference_id", String(300), nullable=False),
    Column("reason", Text, nullable=True),
    Column("actor", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("reference_id"),
    Index("ix_credit_transactions_user_recent", "user_id", "created_at", "id"),
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
    Column("payment_intent_id", String(255), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("payment_intent_id"),
    UniqueConstraint("user_id", "idempotency_key"),
)
