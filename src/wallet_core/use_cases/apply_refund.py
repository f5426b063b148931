"""Stripe gave money back: take back the top-up's credits in proportion, once per refund id.

Only refunds Stripe reports as `succeeded` move credits (a pending refund may still fail). If the
user spent the credits already, the wallet goes into debt (see wallet_core.refunds).
"""

from __future__ import annotations

from dataclasses import replace

from wallet_core.clock import Clock
from wallet_core.errors import DuplicateReference
from wallet_core.ledger import Account, TransactionKind
from wallet_core.lifecycle import can_move, paid
from wallet_core.money import Usd
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import Refund
from wallet_core.ports import UnitOfWork
from wallet_core.refunds import (
    TakenBack,
    credits_for_refund,
    room_to_take_back,
    take_back_booking,
    taken_back_by_top_up,
    top_up_lot_id,
)
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases.recording import book
from wallet_core.use_cases.wallet_lock import lock_and_sweep


def refund_reference(refund_id: str) -> str:
    return f"refund:{refund_id}"


def taken_back(tx: UnitOfWork, top_up: TopUp) -> TakenBack:
    """What the refunds and disputes of `top_up` took so far, as the ledger says (read under the
    wallet's lock, so it holds until this unit of work ends)."""
    return taken_back_by_top_up(tx.ledger.take_backs(top_up.user_id)).get(top_up.id, TakenBack())


def apply_refunds(
    tx: UnitOfWork, top_up: TopUp, refunds: tuple[Refund, ...], now: Clock
) -> PaymentEventOutcome:
    """Book every succeeded refund not booked yet. Returns the outcome for the event log."""
    if not paid(top_up.status):
        return PaymentEventOutcome.IGNORED  # no money arrived, so none can go back
    booked = 0
    for refund in refunds:
        if refund.status != "succeeded" or refund.currency.lower() != top_up.currency:
            continue
        if tx.ledger.find_transaction_by_reference(refund_reference(refund.id)) is not None:
            continue
        try:
            top_up = _book(tx, top_up, refund, now)
        except DuplicateReference:
            continue  # booked meanwhile by a concurrent delivery; the ledger refused it, nothing moved
        booked += 1
    return PaymentEventOutcome.REFUNDED if booked else PaymentEventOutcome.ALREADY_REFUNDED


def _book(tx: UnitOfWork, top_up: TopUp, refund: Refund, now: Clock) -> TopUp:
    at = now()
    state = lock_and_sweep(tx, top_up.user_id, at)
    # In proportion, but never more than the payment has left after its refunds and disputes.
    credits = min(
        credits_for_refund(top_up, top_up.refunded, refund.amount, top_up.credits_refunded),
        room_to_take_back(top_up, taken_back(tx, top_up)),
    )
    # Recorded even when the refund is worth 0 credits (tiny refunds at low rates): the reference
    # is what makes the refund count once.
    book(
        tx,
        take_back_booking(
            state,
            lot_id=top_up_lot_id(top_up.intent_id),
            credits=credits,
            to_account=Account.STRIPE_FUNDING,
            kind=TransactionKind.REFUND,
            reference_id=refund_reference(refund.id),
            now=at,
            reason=f"refund {refund.id} of {refund.amount} {refund.currency} on top-up {top_up.id}",
            metadata={"refund_id": refund.id, "top_up_id": top_up.id},
        ),
        extra={"payment_intent_id": top_up.payment_intent_id, "amount_usd": str(refund.amount)},
    )
    refunded = Usd(min(top_up.amount.cents, top_up.refunded.cents + refund.amount.cents))
    status = TopUpStatus.REFUNDED if refunded >= top_up.amount else TopUpStatus.PARTIALLY_REFUNDED
    updated = replace(
        top_up,
        refunded=refunded,
        credits_refunded=top_up.credits_refunded + credits,
        status=status if can_move(top_up.status, status) else top_up.status,
    )
    tx.top_ups.update(updated, at)
    return updated
