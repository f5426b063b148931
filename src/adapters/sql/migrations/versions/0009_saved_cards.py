"""Saving a card (issue 13): each user's Stripe Customer and the card they saved.

- `stripe_customers`: one row per user (its Stripe Customer id, unique too), made once: concurrent
  first requests insert if absent, and the first row stays.
- `saved_cards`: one row per user, the PaymentMethod saved for off-session payments and what a user
  needs to recognise it (brand, last four digits, expiry). Replaced by a later card, deleted when the
  user forgets it.

Two new tables, nothing existing changes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stripe_customers",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_stripe_customers"),
        sa.UniqueConstraint("customer_id", name="uq_stripe_customers_customer_id"),
    )
    op.create_table(
        "saved_cards",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("payment_method_id", sa.String(255), nullable=False),
        sa.Column("brand", sa.String(32), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_saved_cards"),
    )


def downgrade() -> None:
    """Lossy: every saved card and the users' Customer ids are dropped (the Customers stay at Stripe)."""
    op.drop_table("saved_cards")
    op.drop_table("stripe_customers")
