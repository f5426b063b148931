"""An admin grants promotional credits by hand, saying why, optionally until a date. Idempotent with a key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wallet_core.bookings import credit_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference, InvalidInput
from wallet_core.ids import check_idempotency_key, check_reason, check_user_id, new_id
from wallet_core.ledger import CreditKind, CreditTransaction, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases.idempotency import check_same_request, race_winner, recorded_request, transaction_request
from wallet_core.use_cases.wallet_lock import lock_and_sweep

EXPIRES_AT = "expires_at"  # kept in the grant's metadata, so a retry can be compared
MAX_GRANT = Credits(100_000_000 * 100)  # one hundred million credits in one grant is a typo


@dataclass(frozen=True)
class GrantResult:
    user_id: str
    credits_granted: Credits
    balance: Credits  # right after this grant
    transaction_id: str
    expires_at: datetime | None = None
    replayed: bool = False


def grant_credits(
    *,
    user_id: str,
    credits: object,
    reason: object,
    granted_by: str,
    uow: UnitOfWorkFactory,
    idempotency_key: str | None = None,
    expires_at: datetime | None = None,
    now: Clock = utc_now,
) -> GrantResult:
    user_id = check_user_id(user_id)
    amount = Credits.amount(credits, "credits")
    if not amount.is_positive():
        raise InvalidInput("credits", "must be greater than 0")
    if amount > MAX_GRANT:
        raise InvalidInput("credits", f"must be at most {MAX_GRANT} in one grant")
    why = check_reason(reason)
    key = check_idempotency_key(idempotency_key)
    at = now()
    if expires_at is not None and expires_at <= at:
        raise InvalidInput("expires_at", "must be in the future")
    reference = f"grant:{key}" if key is not None else new_id("grant")

    expiry_note = {EXPIRES_AT: expires_at.isoformat()} if expires_at is not None else {}

    # The expiry is kept in the grant's metadata; compared under its own name.
    asked = transaction_request(kind=TransactionKind.GRANT, user_id=user_id, credits=amount, reason=why, metadata={})
    asked[EXPIRES_AT] = expiry_note.get(EXPIRES_AT)

    def replay(earlier: CreditTransaction) -> GrantResult:
        stored = recorded_request(earlier)
        stored_metadata = dict(earlier.metadata)
        stored[EXPIRES_AT] = stored_metadata.pop(EXPIRES_AT, None)
        stored["metadata"] = stored_metadata
        check_same_request(stored, asked)
        return GrantResult(
            earlier.user_id, earlier.credits, earlier.balance_after, earlier.id, expires_at, replayed=True
        )

    with uow() as tx:
        earlier = tx.ledger.find_transaction_by_reference(reference) if key is not None else None
        if earlier is not None:
            return replay(earlier)
        state = lock_and_sweep(tx.ledger, user_id, at, crediting=True)
        booking = credit_booking(
            user_id=user_id,
            credits=amount,
            kind=CreditKind.PROMOTIONAL,
            reference_id=reference,
            now=at,
            reason=why,
            actor=granted_by,
            expires_at=expires_at,
            metadata=expiry_note,
            debts=state.debts,
        )
        try:
            booked = tx.ledger.record(booking)
        except DuplicateReference as lost:
            return replay(race_winner(tx, reference, lost))
        tx.commit()
    return GrantResult(user_id, amount, booked.balance_after, booked.id, expires_at)
