"""Index the lots in debt, so every credit coming in finds them without reading the user's other lots.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IN_DEBT = sa.text("remaining < 0")


def upgrade() -> None:
    op.create_index(
        "ix_credit_lots_user_debt", "credit_lots", ["user_id"], postgresql_where=_IN_DEBT, sqlite_where=_IN_DEBT
    )


def downgrade() -> None:
    op.drop_index("ix_credit_lots_user_debt", table_name="credit_lots")
