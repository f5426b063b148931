"""Apply a verified Stripe event. `payment_intent.succeeded` grants the top-up's credits once.

Exactly-once rests on the ledger: the grant's reference id is the PaymentIntent id, and the ledger
refuses a second movement with the same reference (a unique constraint in the database). A duplicate
or concurrent redelivery therefore books nothing more and is still acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from wallet_core.bookings import credit_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference
from wallet_core.ledger import CreditKind
from wallet_core.money import Credits
from wallet_core.payments import META_TOP_UP_ID, PaymentEvent
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.refunds import top_up_lot_id
from wallet_core.topups import TopUpStatus
from wallet_core.use_cases.wallet_lock import lock_and_sweep

log = logging.getLogger(__name__)

SUCCEEDED = "payment_intent.succeeded"


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    event_type: str
    outcome: str  # granted | already_granted | ignored | unknown_top_up | needs_review
    top_up_id: str | None = None
    credits_granted: Credits | None = None


def apply_payment_event(event: PaymentEvent, *, uow: UnitOfWorkFactory, now: Clock = utc_now) -> WebhookOutcome:
    intent = event.payment_intent
    if event.type != SUCCEEDED or intent is None:
        return WebhookOutcome(event.id, event.type, "ignored")

    with uow() as tx:
        top_up = tx.ledger.find_top_up_by_payment_intent(intent.id)
        if top_up is None:
            ours = META_TOP_UP_ID in intent.metadata
            if ours:
                log.error("payment %s succeeded for a top-up this wallet has no record of", intent.id)
            return WebhookOutcome(event.id, event.type, "unknown_top_up" if ours else "ignored")
        if top_up.status is TopUpStatus.SUCCEEDED:
            return WebhookOutcome(event.id, event.type, "already_granted", top_up.id)
        if top_up.status is TopUpStatus.NEEDS_REVIEW:
            # Stripe once reported a different amount; a person decides, not a later event.
            return WebhookOutcome(event.id, event.type, "needs_review", top_up.id)

        received = intent.amount_received if intent.amount_received is not None else intent.amount
        if received != top_up.amount or intent.currency.lower() != top_up.currency:
            log.error(
                "payment %s received %s %s but top-up %s expects %s %s; not granting",
                intent.id,
                received,
                intent.currency,
                top_up.id,
                top_up.amount,
                top_up.currency,
            )
            tx.ledger.set_top_up_status(top_up.id, TopUpStatus.NEEDS_REVIEW)
            tx.commit()
            return WebhookOutcome(event.id, event.type, "needs_review", top_up.id)

        at = now()
        state = lock_and_sweep(tx.ledger, top_up.user_id, at)
        try:
            tx.ledger.record(
                credit_booking(
                    user_id=top_up.user_id,
                    credits=top_up.credits,
                    kind=CreditKind.PAID,
                    reference_id=intent.id,
                    now=at,
                    reason=f"top-up {top_up.id}",
                    actor="stripe",
                    metadata={"top_up_id": top_up.id},
                    lot_id=top_up_lot_id(intent.id),
                    debts=state.debts,
                )
            )
        except DuplicateReference:
            tx.rollback()
            return WebhookOutcome(event.id, event.type, "already_granted", top_up.id)
        tx.ledger.set_top_up_status(top_up.id, TopUpStatus.SUCCEEDED)
        tx.commit()
    return WebhookOutcome(event.id, event.type, "granted", top_up.id, top_up.credits)
