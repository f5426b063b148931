"""Per-user top-up limits: `top_ups` gains an index by user and creation time, to count a user's open
top-ups (last 24 hours) and the top-ups started in the last hour. No existing index serves these
counts (the unique one on user and idempotency key cannot range over time).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_top_ups_user_created", "top_ups", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_top_ups_user_created", table_name="top_ups")
