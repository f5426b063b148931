"""Automatic top-up (issue 13): each wallet's rule, the automatic top-up it has in flight, and top-ups
recorded before their PaymentIntent.

- `auto_top_up_rules`: one row per wallet with a rule (threshold, target or fixed amount, monthly
  limit, consecutive failures, when it was disabled, the last attempt).
- `auto_top_up_charges`: one row per wallet with an automatic top-up in flight; the primary key (the
  user id) makes a second one impossible. The worker claims rows by `due_at` (indexed).
- `top_ups.payment_intent_id` may be NULL (an automatic top-up not charged yet; the unique constraint
  still holds for every intent), and `top_ups.automatic` (0 for every existing top-up) marks theirs.

SQLite: `top_ups` is copied into a new table to drop NOT NULL (batch mode keeps its constraints and
indexes); PostgreSQL alters it in place. Servers of the previous release keep working on the upgraded
schema but record no automatic top-up, and would fail on reading one without an intent: finish the
rollout before putting rules.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("top_ups") as batch:
        batch.alter_column("payment_intent_id", existing_type=sa.String(255), nullable=True)
        batch.add_column(sa.Column("automatic", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.create_table(
        "auto_top_up_rules",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.BigInteger(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("monthly_limit_cents", sa.BigInteger(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(32), nullable=True),
        sa.Column("last_amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("last_top_up_id", sa.String(64), nullable=True),
        sa.Column("last_payment_intent_id", sa.String(255), nullable=True),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_auto_top_up_rules"),
    )
    op.create_table(
        "auto_top_up_charges",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("top_up_id", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("payment_method_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_auto_top_up_charges"),
        sa.UniqueConstraint("top_up_id", name="uq_auto_top_up_charges_top_up_id"),
    )
    op.create_index("ix_auto_top_up_charges_due", "auto_top_up_charges", ["due_at"])


def downgrade() -> None:
    """Lossy: the rules and charges in flight are dropped, and so are automatic top-ups not charged yet
    (no PaymentIntent: the older schema cannot hold them)."""
    op.drop_index("ix_auto_top_up_charges_due", table_name="auto_top_up_charges")
    op.drop_table("auto_top_up_charges")
    op.drop_table("auto_top_up_rules")
    op.execute("DELETE FROM top_ups WHERE payment_intent_id IS NULL")
    with op.batch_alter_table("top_ups") as batch:
        batch.drop_column("automatic")
        batch.alter_column("payment_intent_id", existing_type=sa.String(255), nullable=False)
