"""An admin grants credits by hand, saying why: promotional (the default) or paid (money received
outside Stripe, e.g. a bank transfer), optionally spendable only from a future `effective_at`, until an
`expires_at`, and with a `priority` among lots of their category. Idempotent with a key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from wallet_core.bookings import credit_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference, InvalidInput
from wallet_core.ids import check_idempotency_key, check_reason, check_user_id, new_id
from wallet_core.ledger import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    CreditKind,
    CreditTransaction,
    TransactionKind,
)
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases.idempotency import check_same_request, race_winner, recorded_request, transaction_request
from wallet_core.use_cases.recording import book
from wallet_core.use_cases.wallet_lock import lock_and_sweep

EXPIRES_AT = "expires_at"  # kept in the grant's metadata, so a retry can be compared
# The other options, kept in the grant's metadata too when not their default.
EFFECTIVE_AT, PRIORITY, CATEGORY = "effective_at", "priority", "category"
OPTIONS = (EXPIRES_AT, EFFECTIVE_AT, PRIORITY, CATEGORY)
MAX_GRANT = Credits(100_000_000 * 100)  # one hundred million credits in one grant is a typo
MAX_EFFECTIVE_AHEAD = timedelta(days=365)


def check_priority(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidInput("priority", f"must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}")
    return value


def check_category(value: object) -> CreditKind:
    if isinstance(value, CreditKind):
        return value
    if isinstance(value, str) and value in {kind.value for kind in CreditKind}:
        return CreditKind(value)
    raise InvalidInput("category", 'must be "promotional" or "paid"')


@dataclass(frozen=True)
class GrantResult:
    user_id: str
    credits_granted: Credits
    balance: Credits  # right after this grant
    transaction_id: str
    expires_at: datetime | None = None
    replayed: bool = False
    effective_at: datetime | None = None
    priority: int = DEFAULT_PRIORITY
    category: CreditKind = CreditKind.PROMOTIONAL


def grant_credits(
    *,
    user_id: str,
    credits: object,
    reason: object,
    granted_by: str,
    uow: UnitOfWorkFactory,
    idempotency_key: str | None = None,
    expires_at: datetime | None = None,
    effective_at: datetime | None = None,
    priority: object = DEFAULT_PRIORITY,
    category: object = CreditKind.PROMOTIONAL,
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
    rank = check_priority(priority)
    kind = check_category(category)
    for name, when in ((EXPIRES_AT, expires_at), (EFFECTIVE_AT, effective_at)):
        if when is not None and when.utcoffset() is None:
            raise InvalidInput(name, "needs a timezone, e.g. 2027-01-01T00:00:00Z")
    if expires_at is not None and expires_at <= at:
        raise InvalidInput("expires_at", "must be in the future")
    if effective_at is not None:
        if effective_at < at:
            raise InvalidInput("effective_at", "must not be in the past (leave it out to grant credits spendable now)")
        if effective_at > at + MAX_EFFECTIVE_AHEAD:
            raise InvalidInput("effective_at", "must be at most 1 year ahead")
        if expires_at is not None and expires_at <= effective_at:
            raise InvalidInput("expires_at", "must be after effective_at")
    reference = f"grant:{key}" if key is not None else new_id("grant")

    # The options are kept in the grant's metadata (those not at their default), each compared on a retry.
    options: dict[str, str] = {}
    if expires_at is not None:
        options[EXPIRES_AT] = expires_at.isoformat()
    if effective_at is not None:
        options[EFFECTIVE_AT] = effective_at.isoformat()
    if rank != DEFAULT_PRIORITY:
        options[PRIORITY] = str(rank)
    if kind is not CreditKind.PROMOTIONAL:
        options[CATEGORY] = kind.value

    asked = transaction_request(kind=TransactionKind.GRANT, user_id=user_id, credits=amount, reason=why, metadata={})
    asked.update({name: options.get(name) for name in OPTIONS})

    def replay(earlier: CreditTransaction) -> GrantResult:
        stored = recorded_request(earlier)
        stored_metadata = dict(earlier.metadata)
        stored.update({name: stored_metadata.pop(name, None) for name in OPTIONS})
        stored["metadata"] = stored_metadata
        check_same_request(stored, asked)
        return GrantResult(
            earlier.user_id, earlier.credits, earlier.balance_after, earlier.id, expires_at, replayed=True,
            effective_at=effective_at, priority=rank, category=kind,
        )

    with uow() as tx:
        earlier = tx.ledger.find_transaction_by_reference(reference) if key is not None else None
        if earlier is not None:
            return replay(earlier)
        state = lock_and_sweep(tx, user_id, at, crediting=True)
        booking = credit_booking(
            user_id=user_id,
            credits=amount,
            kind=kind,
            reference_id=reference,
            now=at,
            reason=why,
            actor=granted_by,
            expires_at=expires_at,
            metadata=options,
            debts=state.debts,
            priority=rank,
            effective_at=effective_at,
            transaction_kind=TransactionKind.GRANT,
        )
        try:
            booked = book(tx, booking)
        except DuplicateReference as lost:
            return replay(race_winner(tx, reference, lost))
        tx.commit()
    return GrantResult(
        user_id, amount, booked.balance_after, booked.id, expires_at,
        effective_at=effective_at, priority=rank, category=kind,
    )
