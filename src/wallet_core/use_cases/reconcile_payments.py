"""`wallet reconcile`: compare Stripe's PaymentIntents and refunds with the ledger and apply what
webhooks missed.

Idempotent and safe while the server runs: every repair goes through apply_payment_event with an
event id made from what it repairs (`reconcile:<pi>:succeeded`, `reconcile:<refund id>`), so the
ledger's unique references make a repair happen once, whoever (webhook or reconcile) comes first.
A second run finds everything correct and repairs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from wallet_core.clock import Clock, utc_now
from wallet_core.lifecycle import paid
from wallet_core.payments import META_TOP_UP_ID, PaymentEvent, PaymentIntent
from wallet_core.ports import PaymentGateway, UnitOfWorkFactory
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases.apply_payment_event import apply_payment_event
from wallet_core.use_cases.apply_refund import refund_reference


@dataclass
class ReconcileReport:
    checked: int = 0
    correct: int = 0
    repaired: int = 0
    needs_review: int = 0
    actions: list[str] = field(default_factory=list)  # one line per repair (or planned repair)
    reviews: list[str] = field(default_factory=list)  # one line per payment a person must look at


def reconcile_payments(
    *,
    uow: UnitOfWorkFactory,
    gateway: PaymentGateway,
    since: datetime | None = None,
    dry_run: bool = False,
    now: Clock = utc_now,
    progress: Callable[[PaymentIntent], None] | None = None,
) -> ReconcileReport:
    report = ReconcileReport()
    for intent in gateway.list_payment_intents(created_after=since):
        if progress is not None:
            progress(intent)
        if META_TOP_UP_ID not in intent.metadata:
            continue  # not one of ours (another product on the same Stripe account)
        report.checked += 1
        with uow(read_only=True) as tx:
            top_up = tx.ledger.find_top_up_by_payment_intent(intent.id)
        if top_up is None:
            report.needs_review += 1
            report.reviews.append(f"{intent.id}: {intent.status} at Stripe, but no top-up here")
            continue
        if intent.status == "succeeded" and top_up.status is TopUpStatus.CANCELED:
            report.needs_review += 1
            report.reviews.append(f"{intent.id}: succeeded at Stripe, but top-up {top_up.id} is canceled here")
            continue
        repairs = _repairs(top_up, intent, gateway, uow)
        if top_up.status is TopUpStatus.NEEDS_REVIEW:
            report.needs_review += 1
            report.reviews.append(f"{intent.id}: top-up {top_up.id} is marked needs_review")
            continue
        if not repairs:
            report.correct += 1
            continue
        report.repaired += 1
        for description, event in repairs:
            if dry_run:
                report.actions.append(f"would {description}")
                continue
            outcome = apply_payment_event(event, uow=uow, gateway=gateway, now=now, source="reconcile")
            report.actions.append(f"{description}: {outcome.outcome}")
            if outcome.outcome == "needs_review":
                report.needs_review += 1
                report.reviews.append(f"{intent.id}: Stripe's amount or currency differs from top-up {top_up.id}")
    return report


def _repairs(
    top_up: TopUp, intent: PaymentIntent, gateway: PaymentGateway, uow: UnitOfWorkFactory
) -> list[tuple[str, PaymentEvent]]:
    out: list[tuple[str, PaymentEvent]] = []
    if intent.status == "succeeded" and not paid(top_up.status):
        out.append(
            (
                f"grant top-up {top_up.id} ({intent.id} succeeded)",
                PaymentEvent(f"reconcile:{intent.id}:succeeded", "payment_intent.succeeded", intent),
            )
        )
    elif intent.status == "canceled" and top_up.status in (TopUpStatus.PENDING, TopUpStatus.FAILED):
        out.append(
            (
                f"cancel top-up {top_up.id} ({intent.id} canceled)",
                PaymentEvent(f"reconcile:{intent.id}:canceled", "payment_intent.canceled", intent),
            )
        )
    if intent.status == "succeeded":
        refunds = gateway.list_refunds(intent.id)
        with uow(read_only=True) as tx:
            missing = [
                r
                for r in refunds
                if r.status == "succeeded" and tx.ledger.find_transaction_by_reference(refund_reference(r.id)) is None
            ]
        for refund in missing:
            out.append(
                (
                    f"take back credits for refund {refund.id} ({refund.amount} {refund.currency}) of {intent.id}",
                    PaymentEvent(
                        f"reconcile:{refund.id}", "refund.updated", refunds=(refund,), payment_intent_id=intent.id
                    ),
                )
            )
    return out
