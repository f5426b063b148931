"""Corrections and richer grants (issue 11): reverts, future-dated and prioritised lots, which lots paid.

- `credit_transactions.reverts`: the transaction a revert corrects, NULL on every other row; a unique
  index makes a transaction reverted at most once (NULLs are distinct on both databases) and lets a row
  find its revert (`reverted_by`).
- `credit_lots.priority` (50, the default, for existing lots), `effective_at` (NULL: counting from the
  lot's creation, as every existing lot does) and `source_transaction_id`: the transaction that made
  the lot, backfilled as the transaction of the lot's first posting (the booking that creates a lot
  writes the lot's leg first; 0002's converted lots have theirs too). A partial index on lots with an
  effective date finds pending credits without reading the user's other lots.
- `wallets.pending_until`: the latest effective_at of the user's lots; NULL for every existing wallet
  (no existing lot is future-dated).

SQLite: columns are added in place (ALTER TABLE ... ADD COLUMN), the indexes made by CREATE INDEX;
nothing is copied.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUTURE_DATED = sa.text("effective_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("wallets", recreate="never") as batch:
        batch.add_column(sa.Column("pending_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("credit_transactions", recreate="never") as batch:
        batch.add_column(sa.Column("reverts", sa.String(64), nullable=True))
    with op.batch_alter_table("credit_lots", recreate="never") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default=sa.text("50"), nullable=False))
        batch.add_column(sa.Column("effective_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("source_transaction_id", sa.String(64), nullable=True))
    op.create_index("uq_credit_transactions_reverts", "credit_transactions", ["reverts"], unique=True)
    op.create_index(
        "ix_credit_lots_user_pending",
        "credit_lots",
        ["user_id", "effective_at"],
        postgresql_where=_FUTURE_DATED,
        sqlite_where=_FUTURE_DATED,
    )
    _backfill_lot_sources()


def _backfill_lot_sources() -> None:
    """Each lot's source transaction: that of its lowest posting id. Set-wise, through a temporary
    table keyed by lot id (postings have no index by lot: one pass over them, then one lookup per lot)."""
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "CREATE TEMPORARY TABLE lot_sources (lot_id VARCHAR(64) PRIMARY KEY, transaction_id VARCHAR(64) NOT NULL)"
        )
    )
    conn.execute(
        sa.text(
            """
            INSERT INTO lot_sources (lot_id, transaction_id)
            SELECT p.lot_id, p.transaction_id
            FROM postings AS p
            JOIN (SELECT lot_id, MIN(id) AS first_id FROM postings WHERE lot_id IS NOT NULL GROUP BY lot_id) AS f
              ON p.id = f.first_id
            """
        )
    )
    conn.execute(
        sa.text(
            """
            UPDATE credit_lots SET source_transaction_id = (
                SELECT s.transaction_id FROM lot_sources AS s WHERE s.lot_id = credit_lots.id
            )
            WHERE id IN (SELECT lot_id FROM lot_sources)
            """
        )
    )
    conn.execute(sa.text("DROP TABLE lot_sources"))


def downgrade() -> None:
    """Lossy: reverts stay as transactions of kind `revert` (0006 reads them as it reads any row) but
    lose the id they name; lots lose their priority, effective date and source. A future-dated lot
    then counts at once: downgrade only a database without pending grants."""
    op.drop_index("ix_credit_lots_user_pending", table_name="credit_lots")
    op.drop_index("uq_credit_transactions_reverts", table_name="credit_transactions")
    with op.batch_alter_table("credit_lots", recreate="never") as batch:
        batch.drop_column("source_transaction_id")
        batch.drop_column("effective_at")
        batch.drop_column("priority")
    with op.batch_alter_table("credit_transactions", recreate="never") as batch:
        batch.drop_column("reverts")
    with op.batch_alter_table("wallets", recreate="never") as batch:
        batch.drop_column("pending_until")
