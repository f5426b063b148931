"""Spend credits: promotional first (soonest-expiring first), then paid. Never below zero.

The wallet is locked for the whole unit of work (a row lock on PostgreSQL, the writer lock on
SQLite), so concurrent spends from one wallet take turns and each sees what the others left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wallet_core.bookings import spend_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference, InsufficientCredits, InvalidInput
from wallet_core.ids import check_reason, check_user_id, has_control_characters
from wallet_core.ledger import CreditTransaction, Source, TransactionKind, categories
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory
from wallet_core.use_cases.idempotency import (
    check_same_request,
    race_winner,
    recorded_request,
    required_key,
    transaction_request,
)
from wallet_core.use_cases.recording import book
from wallet_core.use_cases.wallet_lock import lock_and_sweep

MAX_METADATA_KEYS = 20


@dataclass(frozen=True)
class SpendResult:
    user_id: str
    credits_spent: Credits
    balance: Credits  # spendable right after this spend
    transaction_id: str
    replayed: bool = False
    sources: tuple[Source, ...] = ()  # the lots that paid


def check_amount(value: object, field: str = "credits") -> Credits:
    amount = Credits.amount(value, field)
    if not amount.is_positive():
        raise InvalidInput(field, "must be greater than 0")
    return amount


def check_metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_METADATA_KEYS:
        raise InvalidInput("metadata", f"must be an object of at most {MAX_METADATA_KEYS} string values")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or not 0 < len(k) <= 40 or len(v) > 500:
            raise InvalidInput("metadata", "keys must be 1-40 characters and values strings of at most 500")
        if has_control_characters(k + v):
            raise InvalidInput("metadata", "must not contain control characters")
        out[k] = v
    return out


def spend_credits(
    *,
    user_id: str,
    credits: object,
    idempotency_key: str | None,
    reason: object,
    actor: str,
    uow: UnitOfWorkFactory,
    metadata: object = None,
    now: Clock = utc_now,
) -> SpendResult:
    user_id = check_user_id(user_id)
    amount = check_amount(credits)
    why = check_reason(reason)
    meta = check_metadata(metadata)
    key = required_key(idempotency_key)
    reference = f"spend:{key}"

    asked = transaction_request(kind=TransactionKind.SPEND, user_id=user_id, credits=-amount, reason=why, metadata=meta)

    def replay(tx: UnitOfWork, earlier: CreditTransaction) -> SpendResult:
        check_same_request(recorded_request(earlier), asked)
        full = tx.ledger.find_transaction(earlier.id)
        sources = full.sources if full is not None else ()
        return SpendResult(user_id, amount, earlier.balance_after, earlier.id, replayed=True, sources=sources)

    with uow() as tx:
        earlier = tx.ledger.find_transaction_by_reference(reference)
        if earlier is not None:
            return replay(tx, earlier)
        at = now()
        state = lock_and_sweep(tx, user_id, at)
        try:
            if state.available.minor < 0:
                raise InsufficientCredits(f"the wallet owes {-state.available} credits; top up to spend again")
            booking = spend_booking(
                state, credits=amount, reference_id=reference, now=at, reason=why, actor=actor, metadata=meta
            )
        except InsufficientCredits:
            # A concurrent request with this key may have spent the credits and committed while this one
            # waited for the lock: then this is a repeat of it, answered as one, not a refusal.
            committed = tx.ledger.find_transaction_by_reference(reference)
            if committed is not None:
                return replay(tx, committed)
            raise
        try:
            booked = book(tx, booking)
        except DuplicateReference as lost:
            return replay(tx, race_winner(tx, reference, lost))
        tx.commit()
    return SpendResult(
        user_id, amount, booked.balance_after, booked.id, sources=booking.sources(categories(state.lots))
    )
