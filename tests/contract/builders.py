"""What the repository contracts build and read: bookings, holds, top-ups and events at fixed instants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from wallet_core.bookings import credit_booking, hold_booking, settle_hold_booking, spend_booking
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ids import new_id
from wallet_core.ledger import DEFAULT_PRIORITY, Booking, CreditKind, CreditTransaction, TransactionKind, WalletState
from wallet_core.money import Credits, Usd
from wallet_core.ports import StoredEvent, UnitOfWork
from wallet_core.topups import TopUp, TopUpStatus

Uow = Callable[..., UnitOfWork]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOUR = timedelta(hours=1)


# -- helpers ---------------------------------------------------------------------------------------
def credit(
    user: str = "alice",
    credits: int = 1000,
    *,
    kind: CreditKind = CreditKind.PROMOTIONAL,
    reference: str | None = None,
    at: datetime = T0,
    expires_at: datetime | None = None,
    metadata: dict[str, str] | None = None,
    booking_id: str | None = None,
    lot_id: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    effective_at: datetime | None = None,
    transaction_kind: TransactionKind | None = None,
) -> Booking:
    booking = credit_booking(
        user_id=user,
        credits=Credits(credits),
        kind=kind,
        reference_id=reference or new_id("ref"),
        now=at,
        reason="because",
        actor="admin",
        expires_at=expires_at,
        metadata=metadata,
        priority=priority,
        effective_at=effective_at,
        transaction_kind=transaction_kind,
    )
    if lot_id is not None:  # a chosen lot id, for checks that depend on the order of ids
        lot = replace(booking.new_lots[0], id=lot_id)
        postings = tuple(replace(p, lot_id=lot_id) if p.lot_id else p for p in booking.postings)
        booking = replace(booking, new_lots=(lot,), postings=postings)
    if booking_id is not None:  # the lot still names the booking that made it
        lot = replace(booking.new_lots[0], source_transaction_id=booking_id)
        booking = replace(booking, id=booking_id, new_lots=(lot,))
    return booking


def spend(state: WalletState, credits: int, *, reference: str | None = None, at: datetime = T0) -> Booking:
    return spend_booking(
        state, credits=Credits(credits), reference_id=reference or new_id("spend"), now=at, reason="used", actor="api"
    )


def place(tx: UnitOfWork, user: str, credits: int, *, at: datetime = T0, ttl: timedelta = HOUR) -> Hold:
    state = tx.ledger.lock_wallet(user, T0)
    hold_id = new_id("hold")
    booking, allocations = hold_booking(
        state,
        hold_id=hold_id,
        credits=Credits(credits),
        reference_id=f"hold:{hold_id}",
        now=at,
        reason="reserve",
        actor="api",
    )
    tx.ledger.record(booking)
    hold = Hold(
        id=hold_id,
        user_id=user,
        amount=Credits(credits),
        status=HoldStatus.OPEN,
        created_at=at,
        expires_at=at + ttl,
        allocations=allocations,
        reference_id=f"hold:{hold_id}",
        reason="reserve",
    )
    tx.holds.add(hold)
    return hold


def settle(tx: UnitOfWork, hold: Hold, capture: int, *, at: datetime = T0) -> CreditTransaction:
    kind = TransactionKind.CAPTURE if capture else TransactionKind.RELEASE
    tx.ledger.lock_wallet(hold.user_id, T0)
    booked = tx.ledger.record(
        settle_hold_booking(
            hold,
            capture=Credits(capture),
            kind=kind,
            reference_id=f"{kind}:{hold.id}",
            now=at,
            reason=None,
            actor="api",
        )
    )
    status = HoldStatus.CAPTURED if capture else HoldStatus.RELEASED
    tx.holds.update(hold.id, status, Credits(capture), T0)
    return booked


def balances(uow: Uow, user: str = "alice", now: datetime = T0) -> tuple[Credits, Credits]:
    with uow() as tx:
        return tx.ledger.balances(user, now)


def live_lots(uow: Uow, user: str = "alice") -> dict[str, tuple[int, int]]:
    """{lot id: (remaining, held)} of the lots lock_wallet returns (their order is not part of the contract)."""
    with uow() as tx:
        return {lot.id: (lot.remaining.minor, lot.held.minor) for lot in tx.ledger.lock_wallet(user, T0).lots}


def c(*values: int) -> tuple[Credits, ...]:
    return tuple(Credits(v) for v in values)


def top_up(
    top_up_id: str = "tu_1", *, user: str = "alice", intent: str = "pi_1", key: str | None = "key-1", cents: int = 1000
) -> TopUp:
    return TopUp(
        id=top_up_id,
        user_id=user,
        amount=Usd(cents),
        currency="usd",
        credits=Credits(cents * 10),
        status=TopUpStatus.PENDING,
        payment_intent_id=intent,
        created_at=T0,
        idempotency_key=key,
    )


# -- the payment event log -------------------------------------------------------------------------
def event(
    event_id: str,
    intent: str | None = "pi_1",
    *,
    at: datetime = T0,
    outcome: str = "granted",
    top_up_id: str | None = "tu_1",
    source: str = "webhook",
    kind: str = "payment_intent.succeeded",
) -> StoredEvent:
    return StoredEvent(
        event_id=event_id,
        type=kind,
        payment_intent_id=intent,
        top_up_id=top_up_id,
        received_at=at,
        outcome=outcome,
        source=source,
    )
