"""Drop ix_postings_user_account: no query reads postings by user (the audit sums them all in one
scan), and every posting written paid for it: one more page in every commit (a grant wrote 18 pages
to SQLite's WAL against the raw baseline's 3; docs/performance.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_postings_user_account", table_name="postings")


def downgrade() -> None:
    op.create_index("ix_postings_user_account", "postings", ["user_id", "account"])
