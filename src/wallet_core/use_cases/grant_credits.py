"""An admin grants credits by hand, saying why. Idempotent when given a key."""

from __future__ import annotations

from dataclasses import dataclass

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference, IdempotencyConflict, InvalidInput
from wallet_core.ids import check_idempotency_key, check_reason, check_user_id, new_id
from wallet_core.ledger import CreditTransaction, NewTransaction, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory

MAX_GRANT = Credits(100_000_000 * 100)  # one hundred million credits in one grant is a typo


@dataclass(frozen=True)
class GrantResult:
    user_id: str
    credits_granted: Credits
    balance: Credits  # right after this grant
    transaction_id: str
    replayed: bool = False


def grant_credits(
    *,
    user_id: str,
    credits: object,
    reason: object,
    granted_by: str,
    uow: UnitOfWorkFactory,
    idempotency_key: str | None = None,
    now: Clock = utc_now,
) -> GrantResult:
    user_id = check_user_id(user_id)
    amount = Credits.parse(credits, "credits")
    if not amount.is_positive():
        raise InvalidInput("credits", "must be greater than 0")
    if amount > MAX_GRANT:
        raise InvalidInput("credits", f"must be at most {MAX_GRANT} in one grant")
    why = check_reason(reason)
    key = check_idempotency_key(idempotency_key)
    reference = f"grant:{key}" if key is not None else new_id("grant")

    with uow() as tx:
        earlier = tx.ledger.find_transaction_by_reference(reference) if key is not None else None
        if earlier is not None:
            return _replay(earlier, user_id, amount, why)
        try:
            booked = tx.ledger.post(
                NewTransaction(
                    id=new_id("ctx"),
                    user_id=user_id,
                    kind=TransactionKind.GRANT,
                    credits=amount,
                    reference_id=reference,
                    created_at=now(),
                    reason=why,
                    actor=granted_by,
                )
            )
        except DuplicateReference:
            # A concurrent request with the same key won the race.
            tx.rollback()
            earlier = tx.ledger.find_transaction_by_reference(reference)
            if earlier is None:
                raise
            return _replay(earlier, user_id, amount, why)
        tx.commit()
    return GrantResult(user_id, amount, booked.balance_after, booked.id)


def _replay(earlier: CreditTransaction, user_id: str, amount: Credits, reason: str | None) -> GrantResult:
    if (
        earlier.kind is not TransactionKind.GRANT
        or earlier.user_id != user_id
        or earlier.credits != amount
        or earlier.reason != reason
    ):
        raise IdempotencyConflict(
            "this Idempotency-Key was used for a different grant; use a new key for a new grant"
        )
    return GrantResult(earlier.user_id, earlier.credits, earlier.balance_after, earlier.id, replayed=True)
