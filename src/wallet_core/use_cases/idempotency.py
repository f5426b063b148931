"""Idempotent requests: the same key and the same request return the first result; a different
request under a used key is refused (Stripe's and TigerBeetle's rule)."""

from __future__ import annotations

from wallet_core.errors import DuplicateReference, IdempotencyConflict, InvalidInput
from wallet_core.ids import check_idempotency_key
from wallet_core.ledger import CreditTransaction, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork


def required_key(value: str | None) -> str:
    key = check_idempotency_key(value)
    if key is None:
        raise InvalidInput("Idempotency-Key", "is required, so a retry never moves credits twice")
    return key


def check_same_request(
    earlier: CreditTransaction,
    *,
    kind: TransactionKind,
    user_id: str,
    credits: Credits,
    reason: str | None,
) -> None:
    """Raise IdempotencyConflict unless `earlier` was made by the same request."""
    if earlier.kind is not kind or earlier.user_id != user_id or earlier.credits != credits or earlier.reason != reason:
        raise IdempotencyConflict(
            "this Idempotency-Key was used for a different request; use a new key for a new request"
        )


def race_winner(tx: UnitOfWork, reference: str, lost: DuplicateReference) -> CreditTransaction:
    """record() refused `reference`: a concurrent request with the same key booked it first. Roll back
    and return the transaction that won, for the caller to replay; re-raise `lost` if there is none."""
    tx.rollback()
    earlier = tx.ledger.find_transaction_by_reference(reference)
    if earlier is None:
        raise lost
    return earlier
