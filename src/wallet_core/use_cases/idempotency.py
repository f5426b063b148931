"""Idempotent requests: the same key and the same request return the first result; a different
request under a used key is refused (Stripe's and TigerBeetle's rule).

"The same request" means every field the client sent: each use case names its request's fields
(`asked`) and reads the same fields back from what the first request stored (`stored`: its ledger
transaction, and for a hold the hold row), and check_same_request compares them all. Nothing extra is
stored for this: the ledger keeps every field a spend, hold or grant request has.
"""

from __future__ import annotations

from collections.abc import Mapping

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


def transaction_request(
    *, kind: TransactionKind, user_id: str, credits: Credits, reason: str | None, metadata: Mapping[str, str]
) -> dict[str, object]:
    """The fields of a request that books one ledger transaction, as check_same_request compares them."""
    return {"kind": kind, "user_id": user_id, "credits": credits, "reason": reason, "metadata": dict(metadata)}


def recorded_request(earlier: CreditTransaction) -> dict[str, object]:
    """transaction_request() as the first request stored it."""
    return transaction_request(
        kind=earlier.kind,
        user_id=earlier.user_id,
        credits=earlier.credits,
        reason=earlier.reason,
        metadata=earlier.metadata,
    )


def check_same_request(stored: Mapping[str, object], asked: Mapping[str, object]) -> None:
    """Raise IdempotencyConflict, naming the fields that differ, unless `asked` equals `stored`."""
    differ = sorted(name for name in stored.keys() | asked.keys() if stored.get(name) != asked.get(name))
    if differ:
        raise IdempotencyConflict(
            f"this Idempotency-Key was used for a request with another {', '.join(differ)}; "
            "use a new key for a new request"
        )


def race_winner(tx: UnitOfWork, reference: str, lost: DuplicateReference) -> CreditTransaction:
    """record() refused `reference`: a concurrent request with the same key booked it first. Roll back
    and return the transaction that won, for the caller to replay; re-raise `lost` if there is none."""
    tx.rollback()
    earlier = tx.ledger.find_transaction_by_reference(reference)
    if earlier is None:
        raise lost
    return earlier
