"""Wallets, the credit ledger and top-ups.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_wallets"),
    )
    op.create_table(
        "credit_transactions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("reference_id", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_transactions"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["wallets.user_id"], name="fk_credit_transactions_user_id_wallets"
        ),
        sa.UniqueConstraint("reference_id", name="uq_credit_transactions_reference_id"),
    )
    op.create_index(
        "ix_credit_transactions_user_recent", "credit_transactions", ["user_id", "created_at", "id"]
    )
    op.create_table(
        "top_ups",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_top_ups"),
        sa.UniqueConstraint("payment_intent_id", name="uq_top_ups_payment_intent_id"),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_top_ups_user_id_idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("top_ups")
    op.drop_index("ix_credit_transactions_user_recent", table_name="credit_transactions")
    op.drop_table("credit_transactions")
    op.drop_table("wallets")
