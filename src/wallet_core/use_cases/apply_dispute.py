"""The buyer's bank disputes a payment: freeze its credits while the dispute is open; if the
dispute is lost they are gone with the money, if it is won they come back.

A payment may have several disputes. Each freezes its share, but all of them together with the
refunds never take more than the payment granted (wallet_core.refunds.room_to_take_back); a won
dispute gives back exactly what it froze, never more."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from wallet_core.clock import Clock
from wallet_core.ids import new_id
from wallet_core.ledger import Account, Booking, Posting, TransactionKind
from wallet_core.lifecycle import can_move, paid
from wallet_core.money import Credits, Usd
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import Dispute
from wallet_core.ports import UnitOfWork
from wallet_core.refunds import (
    credits_for_refund,
    dispute_closed_reference,
    dispute_reference,
    give_back_booking,
    room_to_take_back,
    take_back_booking,
    top_up_lot_id,
)
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases.apply_refund import taken_back
from wallet_core.use_cases.recording import book
from wallet_core.use_cases.wallet_lock import lock_and_sweep

CLOSED_WON = frozenset({"won", "warning_closed"})
CLOSED_LOST = frozenset({"lost"})


def apply_dispute(tx: UnitOfWork, top_up: TopUp, dispute: Dispute, now: Clock) -> PaymentEventOutcome:
    if not paid(top_up.status):
        return PaymentEventOutcome.IGNORED
    frozen = tx.ledger.find_transaction_by_reference(dispute_reference(dispute.id))
    at = now()
    state = lock_and_sweep(tx, top_up.user_id, at)
    lot_id = top_up_lot_id(top_up.intent_id)
    closed_reference = dispute_closed_reference(dispute.id)
    if frozen is None:
        if tx.ledger.find_transaction_by_reference(closed_reference) is not None:
            return PaymentEventOutcome.IGNORED_LATE  # its close came first: nothing to freeze any more
        amount = Usd(min(dispute.amount.cents, top_up.amount.cents))
        # Never freeze more than the payment still carries after its refunds and other disputes.
        credits = min(
            credits_for_refund(top_up, Usd(0), amount, Credits(0)),
            room_to_take_back(top_up, taken_back(tx, top_up)),
        )
        if dispute.status in CLOSED_LOST:
            # Lost before we saw it open (its `created` event was missed): the money is gone, so the
            # credits go too, straight from the wallet.
            book(
                tx,
                take_back_booking(
                    state,
                    lot_id=lot_id,
                    credits=credits,
                    to_account=Account.STRIPE_FUNDING,
                    kind=TransactionKind.DISPUTE_LOST,
                    reference_id=closed_reference,
                    now=at,
                    reason=f"dispute {dispute.id} lost (never seen open); the credits are gone with the money",
                    metadata={"dispute_id": dispute.id, "top_up_id": top_up.id},
                ),
                extra=_about(top_up, dispute),
            )
            if can_move(top_up.status, TopUpStatus.DISPUTED):  # opened and lost in one step
                tx.top_ups.update(replace(top_up, status=TopUpStatus.DISPUTE_LOST), at)
            return PaymentEventOutcome.DISPUTE_LOST
        if dispute.status in CLOSED_WON:
            # Won before we saw it open: nothing was frozen. Record the close (moving nothing) so a
            # late `created` for it cannot freeze credits that nothing would ever release.
            book(tx, _closed_marker(top_up, dispute, at), extra=_about(top_up, dispute))
            return PaymentEventOutcome.IGNORED_LATE
        book(
            tx,
            take_back_booking(
                state,
                lot_id=lot_id,
                credits=credits,
                to_account=Account.DISPUTED,
                kind=TransactionKind.DISPUTE,
                reference_id=dispute_reference(dispute.id),
                now=at,
                reason=f"dispute {dispute.id} opened on top-up {top_up.id}; credits frozen",
                metadata={"dispute_id": dispute.id, "top_up_id": top_up.id},
            ),
            extra=_about(top_up, dispute),
        )
        _move(tx, top_up, TopUpStatus.DISPUTED, at)
        return PaymentEventOutcome.DISPUTE_OPENED
    held = -frozen.credits
    if dispute.status in CLOSED_WON:
        if tx.ledger.find_transaction_by_reference(closed_reference) is not None:
            return PaymentEventOutcome.DUPLICATE
        book(
            tx,
            give_back_booking(
                state,
                lot_id=lot_id,
                credits=held,
                from_account=Account.DISPUTED,
                kind=TransactionKind.DISPUTE_WON,
                reference_id=closed_reference,
                now=at,
                reason=f"dispute {dispute.id} won; credits given back",
                metadata={"dispute_id": dispute.id, "top_up_id": top_up.id},
            ),
            extra=_about(top_up, dispute),
        )
        if taken_back(tx, top_up).open_disputes:
            return PaymentEventOutcome.DISPUTE_WON  # another dispute of the payment is still open: it stays disputed
        _move(
            tx,
            top_up,
            TopUpStatus.REFUNDED
            if top_up.refunded >= top_up.amount
            else TopUpStatus.PARTIALLY_REFUNDED
            if top_up.refunded.cents
            else TopUpStatus.SUCCEEDED,
            at,
        )
        return PaymentEventOutcome.DISPUTE_WON
    if dispute.status in CLOSED_LOST:
        if tx.ledger.find_transaction_by_reference(closed_reference) is not None:
            return PaymentEventOutcome.DUPLICATE
        booking_id = new_id("ctx")
        book(
            tx,
            Booking(
                id=booking_id,
                user_id=top_up.user_id,
                kind=TransactionKind.DISPUTE_LOST,
                reference_id=closed_reference,
                created_at=at,
                postings=(Posting(Account.DISPUTED, -held), Posting(Account.STRIPE_FUNDING, held)),
                reason=f"dispute {dispute.id} lost; the frozen credits are gone with the money",
                actor="stripe",
                metadata={"dispute_id": dispute.id, "top_up_id": top_up.id},
            ),
            extra=_about(top_up, dispute),
        )
        _move(tx, top_up, TopUpStatus.DISPUTE_LOST, at)
        return PaymentEventOutcome.DISPUTE_LOST
    return PaymentEventOutcome.DISPUTE_OPEN  # an update while it is still open


def _about(top_up: TopUp, dispute: Dispute) -> dict[str, object]:
    """What a dispute event adds to its transaction's data."""
    return {"payment_intent_id": top_up.payment_intent_id, "dispute_status": dispute.status}


def _closed_marker(top_up: TopUp, dispute: Dispute, at: datetime) -> Booking:
    return Booking(
        id=new_id("ctx"),
        user_id=top_up.user_id,
        kind=TransactionKind.DISPUTE_WON,
        reference_id=dispute_closed_reference(dispute.id),
        created_at=at,
        postings=(Posting(Account.DISPUTED, Credits(0)), Posting(Account.STRIPE_FUNDING, Credits(0))),
        reason=f"dispute {dispute.id} closed ({dispute.status}) before it was seen open; nothing was frozen",
        actor="stripe",
    )


def _move(tx: UnitOfWork, top_up: TopUp, status: TopUpStatus, at: datetime) -> None:
    if can_move(top_up.status, status):
        tx.top_ups.update(replace(top_up, status=status), at)
