"""The payment lifecycle: refunds on top-ups, and the log of Stripe events received.

`top_ups` gains `refunded_cents` (money Stripe gave back so far) and `credits_refunded` (credits taken
back for it so far), both 0 for existing rows. `payment_events` stores each event once, by its id.

Credit lots may now go negative (a debt, when credits are taken back after they were spent); no
constraint forbids it, and none is added.

Refunds and disputes find a top-up's lot by the id the core derives from its PaymentIntent
(`wallet_core.refunds.top_up_lot_id`: "lot_" + sha256("top_up" 0x1f intent)[:32]); a debt is booked on
that lot. The lots 0002 made from 0001's top-up transactions carry another id (a hash of the
transaction id), so they are renamed to it, in `credit_lots`, `postings` and `hold_allocations`: a
refund of such a top-up after its credits were spent would otherwise book the debt on a lot that does
not exist. (0001 booked a top-up under its PaymentIntent id as the reference id.)

SQLite: columns are added and dropped in place (ALTER TABLE ... ADD / DROP COLUMN, SQLite >= 3.35)
rather than by copying the table.

Revision ID: 0003
Revises: 0002
Create Date: 2025-04-01
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("top_ups", recreate="never") as batch:
        batch.add_column(sa.Column("refunded_cents", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
        batch.add_column(sa.Column("credits_refunded", sa.BigInteger(), server_default=sa.text("0"), nullable=False))

    op.create_table(
        "payment_events",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("top_up_id", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_payment_events"),
    )
    op.create_index("ix_payment_events_intent_received", "payment_events", ["payment_intent_id", "received_at"])

    _rename_migrated_top_up_lots()


def _hashed(*parts: str) -> str:
    return "lot_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _rename_migrated_top_up_lots() -> None:
    """Give the lots 0002 made from top-up transactions the id the core derives from the PaymentIntent.
    Collects (old id, new id) into a temporary table a batch at a time, then renames set-wise."""
    conn = op.get_bind()
    tx = sa.table("credit_transactions", sa.column("id", sa.String()), sa.column("kind", sa.String()),
                  sa.column("reference_id", sa.String()))
    lots = sa.table("credit_lots", sa.column("id", sa.String()))
    page = (
        sa.select(tx.c.id, tx.c.reference_id)
        .where(tx.c.kind == "top_up", tx.c.id > sa.bindparam("after"))
        .order_by(tx.c.id)
        .limit(_BATCH)
    )
    existing = sa.select(lots.c.id).where(lots.c.id.in_(sa.bindparam("ids", expanding=True)))
    conn.execute(
        sa.text("CREATE TEMPORARY TABLE lot_renames (old_id VARCHAR(64) PRIMARY KEY, new_id VARCHAR(64) NOT NULL)")
    )
    renames = sa.table("lot_renames", sa.column("old_id", sa.String()), sa.column("new_id", sa.String()))
    found = 0
    after = ""
    while rows := conn.execute(page, {"after": after}).all():
        wanted = {_hashed("0002", row.id): _hashed("top_up", row.reference_id) for row in rows}
        present = conn.execute(existing, {"ids": list(wanted)}).scalars().all()
        if present:
            conn.execute(sa.insert(renames), [{"old_id": old, "new_id": wanted[old]} for old in present])
            found += len(present)
        after = rows[-1].id
    if found:
        for name, column in (("credit_lots", "id"), ("postings", "lot_id"), ("hold_allocations", "lot_id")):
            table = sa.table(name, sa.column(column, sa.String()))
            lot = table.c[column]
            new_id = sa.select(renames.c.new_id).where(renames.c.old_id == lot).scalar_subquery()
            conn.execute(sa.update(table).values({column: new_id}).where(lot.in_(sa.select(renames.c.old_id))))
    conn.execute(sa.text("DROP TABLE lot_renames"))


def downgrade() -> None:
    """Lossy: the event log and the refunded amounts are dropped (top-up statuses are kept). Renamed
    lots keep their new ids: lot ids mean nothing to 0002."""
    op.drop_index("ix_payment_events_intent_received", table_name="payment_events")
    op.drop_table("payment_events")
    with op.batch_alter_table("top_ups", recreate="never") as batch:
        batch.drop_column("credits_refunded")
        batch.drop_column("refunded_cents")
