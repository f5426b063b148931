"""The double-entry ledger: postings, credit lots, holds; wallets keep their available and held balances.

Existing data is converted: `wallets.balance` becomes `available`; every `top_up` transaction becomes
a paid lot with its postings (wallet +credits on the lot, stripe_funding -credits), every `grant` a
promotional lot that never expires (wallet +credits, promotions -credits).

SQLite: the tables are altered in place (ALTER TABLE ... RENAME COLUMN / ADD COLUMN, SQLite >= 3.25)
rather than copied: copying `wallets` means dropping it, which SQLite refuses with foreign keys on while
`credit_transactions` rows point at it.

Revision ID: 0002
Revises: 0001
Create Date: 2025-03-01
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from alembic import op
import sqlalchemy as sa

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000
_SOURCE = {"top_up": ("paid", "stripe_funding"), "grant": ("promotional", "promotions")}
_LIVE_EXPIRING = sa.text("remaining > 0 AND expires_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("wallets", recreate="never") as batch:
        batch.alter_column("balance", new_column_name="available", existing_type=sa.BigInteger(),
                           existing_nullable=False, existing_server_default=sa.text("0"))
        batch.add_column(sa.Column("held", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    with op.batch_alter_table("credit_transactions", recreate="never") as batch:
        batch.add_column(sa.Column("held_change", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
        batch.add_column(sa.Column("metadata", sa.Text(), nullable=True))
        batch.add_column(sa.Column("hold_id", sa.String(64), nullable=True))

    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("lot_id", sa.String(64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postings"),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["credit_transactions.id"], name="fk_postings_transaction_id_credit_transactions"
        ),
    )
    op.create_index("ix_postings_transaction_id", "postings", ["transaction_id"])
    op.create_index("ix_postings_user_account", "postings", ["user_id", "account"])

    op.create_table(
        "credit_lots",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_credit_lots"),
        sa.ForeignKeyConstraint(["user_id"], ["wallets.user_id"], name="fk_credit_lots_user_id_wallets"),
    )
    op.create_index("ix_credit_lots_user_expiry", "credit_lots", ["user_id", "expires_at"])
    op.create_index(
        "ix_credit_lots_live_expiry",
        "credit_lots",
        ["expires_at"],
        postgresql_where=_LIVE_EXPIRING,
        sqlite_where=_LIVE_EXPIRING,
    )

    op.create_table(
        "holds",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("captured", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reference_id", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
    )
    op.create_index("ix_holds_status_expiry", "holds", ["status", "expires_at"])

    op.create_table(
        "hold_allocations",
        sa.Column("hold_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("lot_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hold_id", "position", name="pk_hold_allocations"),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_hold_allocations_hold_id_holds"),
    )

    _convert_credits_to_lots()


def _convert_credits_to_lots() -> None:
    """Each existing top-up and grant becomes a lot and its two postings, a batch at a time."""
    conn = op.get_bind()
    tx = sa.table(
        "credit_transactions",
        sa.column("id", sa.String()),
        sa.column("user_id", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("credits", sa.BigInteger()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    lots = sa.table(
        "credit_lots",
        *(sa.column(name) for name in ("id", "user_id", "kind", "granted", "remaining", "held")),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    postings = sa.table(
        "postings", *(sa.column(name) for name in ("transaction_id", "account", "user_id", "lot_id", "amount"))
    )
    page = (
        sa.select(tx.c.id, tx.c.user_id, tx.c.kind, tx.c.credits, tx.c.created_at)
        .where(tx.c.kind.in_(list(_SOURCE)), tx.c.id > sa.bindparam("after"))
        .order_by(tx.c.id)
        .limit(_BATCH)
    )
    after = ""
    while True:
        rows = conn.execute(page, {"after": after}).all()
        if not rows:
            return
        new_lots: list[dict[str, Any]] = []
        new_postings: list[dict[str, Any]] = []
        for row in rows:
            lot_kind, source = _SOURCE[row.kind]
            lot_id = "lot_" + hashlib.sha256(f"0002\x1f{row.id}".encode()).hexdigest()[:32]
            new_lots.append(
                {
                    "id": lot_id,
                    "user_id": row.user_id,
                    "kind": lot_kind,
                    "granted": row.credits,
                    "remaining": row.credits,
                    "held": 0,
                    "created_at": row.created_at,
                    "expires_at": None,
                }
            )
            new_postings.append(
                {"transaction_id": row.id, "account": "wallet", "user_id": row.user_id, "lot_id": lot_id,
                 "amount": row.credits}
            )
            new_postings.append(
                {"transaction_id": row.id, "account": source, "user_id": None, "lot_id": None,
                 "amount": -row.credits}
            )
        conn.execute(sa.insert(lots), new_lots)
        conn.execute(sa.insert(postings), new_postings)
        after = rows[-1].id


def downgrade() -> None:
    """Back to one balance per wallet. Lossy: lots, postings and holds are dropped; what open holds
    reserve goes back to the spendable balance."""
    op.execute("UPDATE wallets SET available = available + held")
    op.drop_table("hold_allocations")
    op.drop_index("ix_holds_status_expiry", table_name="holds")
    op.drop_table("holds")
    op.drop_index("ix_credit_lots_live_expiry", table_name="credit_lots")
    op.drop_index("ix_credit_lots_user_expiry", table_name="credit_lots")
    op.drop_table("credit_lots")
    op.drop_index("ix_postings_user_account", table_name="postings")
    op.drop_index("ix_postings_transaction_id", table_name="postings")
    op.drop_table("postings")
    with op.batch_alter_table("credit_transactions", recreate="never") as batch:
        batch.drop_column("hold_id")
        batch.drop_column("metadata")
        batch.drop_column("held_change")
    with op.batch_alter_table("wallets", recreate="never") as batch:
        batch.drop_column("held")
        batch.alter_column("available", new_column_name="balance", existing_type=sa.BigInteger(),
                           existing_nullable=False, existing_server_default=sa.text("0"))
