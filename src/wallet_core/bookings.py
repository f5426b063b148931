"""How each movement of credits is written as balanced postings. Pure functions: state in, Booking out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from wallet_core.holds import Hold
from wallet_core.ids import new_id
from wallet_core.ledger import (
    DEFAULT_PRIORITY,
    Account,
    Booking,
    CreditKind,
    Lot,
    LotChange,
    Posting,
    TransactionKind,
    WalletState,
    allocate,
)
from wallet_core.money import Credits

# Where credits coming in come from: a Stripe payment, money paid outside Stripe (an admin's paid
# grant, e.g. a bank transfer), or the promotions budget.
_SOURCE = {
    (TransactionKind.TOP_UP, CreditKind.PAID): Account.STRIPE_FUNDING,
    (TransactionKind.GRANT, CreditKind.PAID): Account.OFFLINE_FUNDING,
    (TransactionKind.GRANT, CreditKind.PROMOTIONAL): Account.PROMOTIONS,
}


def funding_account(kind: TransactionKind, category: CreditKind) -> Account:
    """The system account a top-up or grant of `category` credits draws from."""
    return _SOURCE[(kind, category)]


def credit_booking(
    *,
    user_id: str,
    credits: Credits,
    kind: CreditKind,
    reference_id: str,
    now: datetime,
    reason: str | None,
    actor: str | None,
    expires_at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
    lot_id: str | None = None,
    debts: tuple[Lot, ...] = (),
    priority: int = DEFAULT_PRIORITY,
    effective_at: datetime | None = None,
    transaction_kind: TransactionKind | None = None,
) -> Booking:
    """Credits coming in: a new lot on the user's wallet, funded by Stripe (a top-up), by money paid
    outside Stripe or by promotions (an admin's grant: `transaction_kind` GRANT, the default for
    promotional credits).

    When the wallet is in debt (`debts`: lots gone negative after a refund or dispute), the new
    credits repay it first, oldest debt first: a move inside the wallet from the new lot to the
    indebted one. Credits not effective yet (`effective_at` after `now`) repay nothing: they are not
    spendable, so they cannot pay a debt until the next credits come in."""
    tx_kind = transaction_kind or (TransactionKind.TOP_UP if kind is CreditKind.PAID else TransactionKind.GRANT)
    repay: list[tuple[Lot, int]] = []
    left = credits.minor
    repayable = debts if effective_at is None or effective_at <= now else ()
    for debt in sorted(repayable, key=lambda lot: (lot.created_at, lot.id)):
        amount = min(left, -debt.remaining.minor)
        if amount > 0:
            repay.append((debt, amount))
            left -= amount
    booking_id = new_id("ctx")
    lot = Lot(
        id=lot_id or new_id("lot"),
        user_id=user_id,
        kind=kind,
        granted=credits,
        remaining=Credits(left),
        held=Credits(0),
        created_at=now,
        expires_at=expires_at,
        priority=priority,
        effective_at=effective_at,
        source_transaction_id=booking_id,
    )
    moves: list[Posting] = []
    for debt, amount in repay:
        moves.append(Posting(Account.WALLET, Credits(-amount), user_id, lot.id))
        moves.append(Posting(Account.WALLET, Credits(amount), user_id, debt.id))
    return Booking(
        id=booking_id,
        user_id=user_id,
        kind=tx_kind,
        reference_id=reference_id,
        created_at=now,
        postings=(
            Posting(Account.WALLET, credits, user_id, lot.id),
            Posting(funding_account(tx_kind, kind), -credits),
            *moves,
        ),
        reason=reason,
        actor=actor,
        metadata=dict(metadata or {}),
        new_lots=(lot,),
        lot_changes=tuple(LotChange(debt.id, remaining=Credits(amount)) for debt, amount in repay),
    )


def spend_booking(
    state: WalletState,
    *,
    credits: Credits,
    reference_id: str,
    now: datetime,
    reason: str | None,
    actor: str | None,
    metadata: Mapping[str, str] | None = None,
) -> Booking:
    """Credits used up: taken from lots in spending order, into revenue. InsufficientCredits if short."""
    plan = allocate(state.lots, credits, now)
    postings = [Posting(Account.WALLET, -take, state.user_id, lot.id) for lot, take in plan]
    postings.append(Posting(Account.REVENUE, credits))
    return Booking(
        id=new_id("ctx"),
        user_id=state.user_id,
        kind=TransactionKind.SPEND,
        reference_id=reference_id,
        created_at=now,
        postings=tuple(postings),
        reason=reason,
        actor=actor,
        metadata=dict(metadata or {}),
        lot_changes=tuple(LotChange(lot.id, remaining=-take) for lot, take in plan),
    )


def hold_booking(
    state: WalletState,
    *,
    hold_id: str,
    credits: Credits,
    reference_id: str,
    now: datetime,
    reason: str | None,
    actor: str | None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Booking, tuple[tuple[str, Credits], ...]]:
    """Credits reserved: moved from the wallet to the user's held account, lot by lot."""
    plan = allocate(state.lots, credits, now)
    postings: list[Posting] = []
    for lot, take in plan:
        postings.append(Posting(Account.WALLET, -take, state.user_id, lot.id))
        postings.append(Posting(Account.HELD, take, state.user_id, lot.id))
    booking = Booking(
        id=new_id("ctx"),
        user_id=state.user_id,
        kind=TransactionKind.HOLD,
        reference_id=reference_id,
        created_at=now,
        postings=tuple(postings),
        reason=reason,
        actor=actor,
        metadata=dict(metadata or {}),
        hold_id=hold_id,
        lot_changes=tuple(LotChange(lot.id, remaining=-take, held=take) for lot, take in plan),
    )
    return booking, tuple((lot.id, take) for lot, take in plan)


def settle_hold_booking(
    hold: Hold,
    *,
    capture: Credits,
    kind: TransactionKind,
    reference_id: str,
    now: datetime,
    reason: str | None,
    actor: str | None,
    expired_lots: frozenset[str] = frozenset(),
) -> Booking:
    """Close a hold: `capture` credits go to revenue (taken in the hold's lot order), the rest go back
    to the wallet. A release is a settlement that captures nothing. What would go back to a
    promotional lot that expired meanwhile goes to `expired` instead, so it never counts again."""
    postings: list[Posting] = []
    changes: list[LotChange] = []
    to_capture = capture.minor
    lapsed = 0
    for lot_id, reserved in hold.allocations:
        taken = min(to_capture, reserved.minor)
        to_capture -= taken
        back = reserved.minor - taken
        postings.append(Posting(Account.HELD, -reserved, hold.user_id, lot_id))
        if back and lot_id in expired_lots:
            lapsed += back
            back = 0
        if back:
            postings.append(Posting(Account.WALLET, Credits(back), hold.user_id, lot_id))
        changes.append(LotChange(lot_id, remaining=Credits(back), held=-reserved))
    if capture.is_positive():
        postings.append(Posting(Account.REVENUE, capture))
    if lapsed:
        postings.append(Posting(Account.EXPIRED, Credits(lapsed)))
    return Booking(
        id=new_id("ctx"),
        user_id=hold.user_id,
        kind=kind,
        reference_id=reference_id,
        created_at=now,
        postings=tuple(postings),
        reason=reason,
        actor=actor,
        hold_id=hold.id,
        lot_changes=tuple(changes),
    )


def expiry_booking(state: WalletState, now: datetime) -> Booking | None:
    """Promotional credits past expiry, booked out of the wallet into `expired`. None if there are none."""
    lots = state.expired_lots(now)
    if not lots:
        return None
    total = Credits(sum(lot.remaining.minor for lot in lots))
    postings = [Posting(Account.WALLET, -lot.remaining, state.user_id, lot.id) for lot in lots]
    postings.append(Posting(Account.EXPIRED, total))
    booking_id = new_id("ctx")
    return Booking(
        id=booking_id,
        user_id=state.user_id,
        kind=TransactionKind.EXPIRY,
        reference_id=f"expiry:{booking_id}",
        created_at=now,
        postings=tuple(postings),
        reason=f"{len(lots)} promotional lot(s) expired",
        actor="system",
        lot_changes=tuple(LotChange(lot.id, remaining=-lot.remaining) for lot in lots),
    )
