"""Every change to a wallet is recorded here: the ledger transaction, the outbound event it means, the
balance alerts it fires and the automatic top-up it starts, in the caller's unit of work (one commit
makes all of them real, or none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from wallet_core.alerts import AlertState, crossings, level_of
from wallet_core.event_types import EventType
from wallet_core.ledger import Booking, CreditTransaction
from wallet_core.money import Credits
from wallet_core.outbound_events import event_for_transaction, new_event
from wallet_core.ports import UnitOfWork
from wallet_core.use_cases.auto_top_up_trigger import note_auto_top_up


def book(
    tx: UnitOfWork,
    booking: Booking,
    *,
    event: EventType | None = None,
    extra: Mapping[str, object] | None = None,
    unspendable: Credits = Credits(0),  # noqa: B008 (Credits is frozen)
) -> CreditTransaction:
    """Record `booking` (raises DuplicateReference like LedgerRepository.record), add its event
    (`event` overrides the one its kind means; `extra` adds to its data) and the alerts the new
    balance crosses, and the automatic top-up a balance below the wallet's rule's threshold starts
    (use_cases.auto_top_up_trigger). The wallet must be locked (LedgerRepository.lock_wallet). `unspendable`: credits
    the booking leaves on lots past their expiry, which the caller books out next (a revert giving
    credits back to an ended lot): the event's balance and the alerts leave them out."""
    booked = tx.ledger.record(booking)
    _tell_booked(tx, booked, event, extra, unspendable)
    return booked


def book_many(tx: UnitOfWork, bookings: Sequence[Booking]) -> list[CreditTransaction]:
    """`book` for each booking, in order (their events and alerts in that order), recorded in as few
    statements as the ledger allows (LedgerRepository.record_many: bookings that create no lots, on locked
    wallets). Raises DuplicateReference like record_many: the caller must roll back."""
    booked = tx.ledger.record_many(bookings)
    for one in booked:
        _tell_booked(tx, one, None, None, Credits(0))
    return booked


def _tell_booked(
    tx: UnitOfWork, booked: CreditTransaction, event: EventType | None, extra: Mapping[str, object] | None,
    unspendable: Credits,
) -> None:
    balance = booked.balance_after - unspendable
    told = event_for_transaction(booked, event, {**(extra or {}), "balance": str(balance)})
    if told is not None:
        tx.outbox.add(told)
    note_balance(tx, booked, balance)
    note_auto_top_up(tx, booked.user_id, balance, booked.created_at)


def note_balance(tx: UnitOfWork, booked: CreditTransaction, balance: Credits | None = None) -> None:
    """Fire the alerts the wallet's new spendable balance (`balance`, else the booking's balance after)
    crosses, once, and remember its level (read and written under the wallet's lock, so concurrent
    writers cannot both fire one crossing)."""
    spendable = booked.balance_after if balance is None else balance
    alerts = tx.alerts.get(booked.user_id)
    threshold = alerts.low_balance if alerts.low_balance is not None else tx.low_balance_default
    after = level_of(spendable, threshold)
    if after is alerts.level:
        return
    for fired in crossings(alerts.level, after, threshold=threshold):
        data: dict[str, object] = {
            "balance": str(spendable),
            "low_balance_credits": None if threshold is None else str(threshold),
            "transaction_id": booked.id,
        }
        tx.outbox.add(new_event(fired, booked.user_id, booked.created_at, data))
    tx.alerts.set(booked.user_id, AlertState(alerts.low_balance, after), booked.created_at)


def tell(tx: UnitOfWork, event: EventType, user_id: str, at: datetime, data: Mapping[str, object]) -> None:
    """Add an event that is not about one ledger transaction (a top-up that failed, ...)."""
    tx.outbox.add(new_event(event, user_id, at, data))
