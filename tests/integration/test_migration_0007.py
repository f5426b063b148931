"""Migration 0007 upgrades a ledger the previous release (revision 0006) wrote, on SQLite and PostgreSQL:
then `wallet verify` is clean, every lot names the transaction that made it, and transactions made
before the upgrade can be reverted.

The 0006 ledger is written the way 0006's code wrote it: bookings built by the core (a top-up, two
promotional grants, one expiring, a spend across two lots, a hold and its capture), stored with
explicit 0006 columns only (`write_as_0006`), so nothing of 0007 is there before the upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection, Engine

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import alembic_config, current_revision, head_revision, upgrade
from adapters.sql.tables import UtcDateTime
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.bookings import credit_booking, hold_booking, settle_hold_booking, spend_booking
from wallet_core.errors import NotRevertible
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ledger import Booking, CreditKind, Lot, Source, TransactionKind, WalletState
from wallet_core.money import Credits
from wallet_core.use_cases import read_wallet, revert_transaction
from wallet_core.use_cases.verify_ledger import check_ledger

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=2)


def _table(name: str, *columns: str, times: tuple[str, ...] = ()) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns), *(sa.column(t, UtcDateTime()) for t in times))


# The 0006 schema's columns, spelled out: nothing 0007 adds.
WALLETS = _table("wallets", "user_id", "available", "held", times=("updated_at",))
TRANSACTIONS = _table(
    "credit_transactions",
    "id",
    "user_id",
    "kind",
    "credits",
    "balance_after",
    "reference_id",
    "reason",
    "actor",
    "held_change",
    "metadata",
    "hold_id",
    times=("created_at",),
)
POSTINGS = _table("postings", "transaction_id", "account", "user_id", "lot_id", "amount")
LOTS = _table(
    "credit_lots", "id", "user_id", "kind", "granted", "remaining", "held", times=("created_at", "expires_at")
)
HOLDS = _table(
    "holds",
    "id",
    "user_id",
    "amount",
    "status",
    "captured",
    "reason",
    "reference_id",
    times=("created_at", "expires_at", "updated_at"),
)
ALLOCATIONS = _table("hold_allocations", "hold_id", "position", "lot_id", "amount")
TOP_UPS = _table(
    "top_ups",
    "id",
    "user_id",
    "amount_cents",
    "currency",
    "credits",
    "status",
    "payment_intent_id",
    "idempotency_key",
    "refunded_cents",
    "credits_refunded",
    times=("created_at", "updated_at"),
)


@dataclass
class Ledger0006:
    """What 0006's code kept for one user, mirrored here to build the next booking from."""

    conn: Connection
    user_id: str = "alice"
    available: int = 0
    held: int = 0
    lots: dict[str, Lot] = field(default_factory=dict)

    def state(self) -> WalletState:
        return WalletState(self.user_id, Credits(self.available), Credits(self.held), tuple(self.lots.values()))

    def write(self, booking: Booking) -> None:
        """record() as of 0006: the wallet, the transaction row, new lots, lot changes, postings."""
        first = self.available == 0 and self.held == 0 and not self.lots
        self.available += booking.credits.minor
        self.held += booking.held_change.minor
        wallet = {"available": self.available, "held": self.held, "updated_at": booking.created_at}
        if first:
            self.conn.execute(sa.insert(WALLETS).values(user_id=self.user_id, **wallet))
        else:
            self.conn.execute(sa.update(WALLETS).where(WALLETS.c.user_id == self.user_id).values(**wallet))
        self.conn.execute(
            sa.insert(TRANSACTIONS).values(
                id=booking.id,
                user_id=self.user_id,
                kind=booking.kind.value,
                credits=booking.credits.minor,
                balance_after=self.available,
                reference_id=booking.reference_id,
                reason=booking.reason,
                actor=booking.actor,
                held_change=booking.held_change.minor,
                metadata=None,
                hold_id=booking.hold_id,
                created_at=booking.created_at,
            )
        )
        for lot in booking.new_lots:
            self.conn.execute(
                sa.insert(LOTS).values(
                    id=lot.id,
                    user_id=lot.user_id,
                    kind=lot.kind.value,
                    granted=lot.granted.minor,
                    remaining=lot.remaining.minor,
                    held=lot.held.minor,
                    created_at=lot.created_at,
                    expires_at=lot.expires_at,
                )
            )
            self.lots[lot.id] = lot
        for change in booking.lot_changes:
            lot = self.lots[change.lot_id]
            self.lots[lot.id] = replace(lot, remaining=lot.remaining + change.remaining, held=lot.held + change.held)
            self.conn.execute(
                sa.update(LOTS)
                .where(LOTS.c.id == lot.id)
                .values(remaining=LOTS.c.remaining + change.remaining.minor, held=LOTS.c.held + change.held.minor)
            )
        self.conn.execute(
            sa.insert(POSTINGS),
            [
                {
                    "transaction_id": booking.id,
                    "account": p.account.value,
                    "user_id": p.user_id,
                    "lot_id": p.lot_id,
                    "amount": p.amount.minor,
                }
                for p in booking.postings
            ],
        )


@dataclass(frozen=True)
class Written:
    top_up: Booking
    expiring: Booking
    forever: Booking
    spend: Booking
    hold: Booking
    capture: Booking


def fill_as_0006(conn: Connection) -> Written:
    """alice: a 1000.00 top-up, 400.00 promotional expiring in 30 days, 1000.00 promotional without
    expiry; 500.00 spent (the 400.00 expiring, then 100.00 of the other grant); a hold of 300.00 (on that
    grant) captured for 250.00. She holds 1650.00: 1000.00 paid, 650.00 promotional."""
    ledger = Ledger0006(conn)
    common: dict[str, Any] = {"user_id": "alice", "actor": "admin"}
    top_up = credit_booking(
        credits=Credits(100_000),
        kind=CreditKind.PAID,
        reference_id="pi_1",
        now=T0,
        reason="top-up tu_1",
        metadata={"top_up_id": "tu_1"},
        **common,
    )
    expiring = credit_booking(
        credits=Credits(40_000),
        kind=CreditKind.PROMOTIONAL,
        reference_id="grant:k1",
        now=T0 + timedelta(minutes=1),
        reason="welcome",
        expires_at=NOW + timedelta(days=30),
        **common,
    )
    forever = credit_booking(
        credits=Credits(100_000),
        kind=CreditKind.PROMOTIONAL,
        reference_id="grant:k2",
        now=T0 + timedelta(minutes=2),
        reason="loyalty",
        **common,
    )
    for booking in (top_up, expiring, forever):
        ledger.write(booking)
    conn.execute(
        sa.insert(TOP_UPS).values(
            id="tu_1",
            user_id="alice",
            amount_cents=1000,
            currency="usd",
            credits=100_000,
            status="succeeded",
            payment_intent_id="pi_1",
            idempotency_key="order-1",
            refunded_cents=0,
            credits_refunded=0,
            created_at=T0,
            updated_at=T0,
        )
    )
    spend = spend_booking(
        ledger.state(),
        credits=Credits(50_000),
        reference_id="spend:s1",
        now=T0 + timedelta(minutes=3),
        reason="usage",
        actor="api",
    )
    ledger.write(spend)
    held_at = T0 + timedelta(minutes=4)
    hold, allocations = hold_booking(
        ledger.state(),
        hold_id="hold_1",
        credits=Credits(30_000),
        reference_id="hold:h1",
        now=held_at,
        reason="reserve",
        actor="api",
    )
    ledger.write(hold)
    conn.execute(
        sa.insert(HOLDS).values(
            id="hold_1",
            user_id="alice",
            amount=30_000,
            status="open",
            captured=0,
            reason="reserve",
            reference_id="hold:h1",
            created_at=held_at,
            expires_at=held_at + timedelta(minutes=15),
            updated_at=held_at,
        )
    )
    conn.execute(
        sa.insert(ALLOCATIONS),
        [
            {"hold_id": "hold_1", "position": n, "lot_id": lot_id, "amount": amount.minor}
            for n, (lot_id, amount) in enumerate(allocations)
        ],
    )
    opened = Hold(
        id="hold_1",
        user_id="alice",
        amount=Credits(30_000),
        status=HoldStatus.OPEN,
        created_at=held_at,
        expires_at=held_at + timedelta(minutes=15),
        allocations=allocations,
        reference_id="hold:h1",
    )
    captured_at = T0 + timedelta(minutes=5)
    capture = settle_hold_booking(
        opened,
        capture=Credits(25_000),
        kind=TransactionKind.CAPTURE,
        reference_id="capture:hold_1",
        now=captured_at,
        reason=None,
        actor="api",
    )
    ledger.write(capture)
    conn.execute(
        sa.update(HOLDS)
        .where(HOLDS.c.id == "hold_1")
        .values(status="captured", captured=25_000, updated_at=captured_at)
    )
    return Written(top_up, expiring, forever, spend, hold, capture)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    engine = create_wallet_engine(url)
    yield engine
    engine.dispose()


def test_a_ledger_written_by_0006_upgrades_verifies_and_its_transactions_revert(engine: Engine) -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
    with engine.begin() as conn:
        written = fill_as_0006(conn)
    upgrade(engine)
    assert current_revision(engine) == head_revision()  # 0007 and every migration after it
    uow = sql_unit_of_work_factory(engine)
    assert check_ledger(uow=uow).violations == []

    paid, expiring, forever = (b.new_lots[0].id for b in (written.top_up, written.expiring, written.forever))
    with uow(read_only=True) as tx:
        lots = {lot.id: lot for lot in tx.ledger.lots([paid, expiring, forever])}
        spend_row = tx.ledger.find_transaction(written.spend.id)
        capture_row = tx.ledger.find_transaction(written.capture.id)
    # each lot names the transaction that made it (not the spend, hold or capture that touched it later)
    assert {lot_id: lot.source_transaction_id for lot_id, lot in lots.items()} == {
        paid: written.top_up.id,
        expiring: written.expiring.id,
        forever: written.forever.id,
    }
    assert {(lot.priority, lot.effective_at) for lot in lots.values()} == {(50, None)}
    assert {lot_id: lot.remaining for lot_id, lot in lots.items()} == {
        paid: Credits(100_000),
        expiring: Credits(0),
        forever: Credits(65_000),
    }
    assert spend_row is not None and capture_row is not None
    assert (spend_row.reverts, spend_row.reverted_by) == (None, None)
    assert spend_row.sources == (
        Source(expiring, CreditKind.PROMOTIONAL, Credits(40_000)),
        Source(forever, CreditKind.PROMOTIONAL, Credits(10_000)),
    )
    assert capture_row.sources == (Source(forever, CreditKind.PROMOTIONAL, Credits(25_000)),)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pending_until FROM wallets")).scalars().all() == [None]

    view = read_wallet(user_id="alice", uow=uow)
    assert (view.balance, view.pending, view.by_category) == (
        Credits(165_000),
        Credits(0),
        {CreditKind.PAID: Credits(100_000), CreditKind.PROMOTIONAL: Credits(65_000)},
    )

    def revert(transaction_id: str, key: str) -> tuple[Credits, Credits]:
        done = revert_transaction(
            transaction_id=transaction_id, reason="support ticket", idempotency_key=key, actor="admin", uow=uow
        )
        assert check_ledger(uow=uow).violations == []
        return done.credits_reverted, done.balance

    # the spend: its 500.00 go back to the two grants' lots
    assert revert(written.spend.id, "r-spend") == (Credits(50_000), Credits(215_000))
    # the grant without expiry: what is left of it (650.00 + 100.00 given back) is taken back; it ends
    assert revert(written.forever.id, "r-grant") == (Credits(75_000), Credits(140_000))
    # the capture: its 250.00 go back to the grant's lot, which has ended, so they lapse at once
    assert revert(written.capture.id, "r-capture") == (Credits(25_000), Credits(140_000))
    with pytest.raises(NotRevertible, match="Stripe"):
        revert(written.top_up.id, "r-top-up")
    with pytest.raises(NotRevertible, match="already reverted"):
        revert(written.spend.id, "r-spend-again")

    view = read_wallet(user_id="alice", uow=uow)
    assert (view.balance, view.held) == (Credits(140_000), Credits(0))
    assert {lot.id: lot.remaining for lot in view.lots} == {paid: Credits(100_000), expiring: Credits(40_000)}
    history = {t.id: t for t in view.transactions}
    assert {history[t.id].reverted_by is not None for t in (written.spend, written.forever, written.capture)} == {True}
    check = check_ledger(uow=uow)
    assert check.violations == [] and check.accounts_checked == 2
