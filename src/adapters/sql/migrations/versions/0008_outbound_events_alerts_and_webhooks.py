"""Outbound events, balance alerts and webhooks (issue 12).

- `outbound_events`: the transactional outbox. Each event is written in the transaction of the change
  it describes (`seq` in insertion order) and numbered (`number`, what pull cursors count) only once
  committed. The indexes on `number` are partial (numbered rows only), so writing an event touches none
  of them; a partial index finds the unnumbered ones.
- `event_publication`: one row (id 1, last_number 0 here) that publishers lock, so they take turns and
  numbers are consecutive.
- `wallets.low_balance` (a wallet's own threshold, hundredths) and `wallets.alert_level` (the level its
  balance was last seen at): NULL for every existing wallet (no threshold of its own; its level is set
  silently by its next write).
- `webhook_endpoints` and `webhook_deliveries` (a partial index on pending deliveries by due time for
  the workers' claims, one by endpoint and time for listing).

SQLite: the columns are added in place (ALTER TABLE ... ADD COLUMN), nothing is copied.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NUMBERED = sa.text("number IS NOT NULL")
_UNNUMBERED = sa.text("number IS NULL")
_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("wallets", recreate="never") as batch:
        batch.add_column(sa.Column("low_balance", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("alert_level", sa.String(16), nullable=True))

    op.create_table(
        "outbound_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbound_events"),
        sa.UniqueConstraint("id", name="uq_outbound_events_id"),
    )
    op.create_index(
        "uq_outbound_events_number",
        "outbound_events",
        ["number"],
        unique=True,
        postgresql_where=_NUMBERED,
        sqlite_where=_NUMBERED,
    )
    op.create_index(
        "ix_outbound_events_unnumbered",
        "outbound_events",
        ["seq"],
        postgresql_where=_UNNUMBERED,
        sqlite_where=_UNNUMBERED,
    )
    op.create_index(
        "ix_outbound_events_user_number",
        "outbound_events",
        ["user_id", "number"],
        postgresql_where=_NUMBERED,
        sqlite_where=_NUMBERED,
    )
    op.create_index(
        "ix_outbound_events_type_number",
        "outbound_events",
        ["type", "number"],
        postgresql_where=_NUMBERED,
        sqlite_where=_NUMBERED,
    )

    publication = op.create_table(
        "event_publication",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_publication"),
    )
    op.bulk_insert(publication, [{"id": 1, "last_number": 0}])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("previous_secret", sa.String(255), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_endpoint_created", "webhook_deliveries", ["endpoint_id", "created_at", "id"])
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )


def downgrade() -> None:
    """Lossy: the events, endpoints, deliveries and every wallet's threshold and alert level are dropped."""
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_endpoint_created", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("event_publication")
    op.drop_index("ix_outbound_events_type_number", table_name="outbound_events")
    op.drop_index("ix_outbound_events_user_number", table_name="outbound_events")
    op.drop_index("ix_outbound_events_unnumbered", table_name="outbound_events")
    op.drop_index("uq_outbound_events_number", table_name="outbound_events")
    op.drop_table("outbound_events")
    with op.batch_alter_table("wallets", recreate="never") as batch:
        batch.drop_column("alert_level")
        batch.drop_column("low_balance")
