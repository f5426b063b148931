"""`wallet reconcile`: compare Stripe's PaymentIntents, their refunds and their disputes with the
ledger and apply what webhooks missed.

Idempotent and safe while the server runs: every repair goes through apply_payment_event with an
event id made from what it repairs (`reconcile:<pi>:succeeded`, `reconcile:<refund id>`,
`reconcile:<dispute id>:<state>`), so the ledger's unique references make a repair happen once,
whoever (webhook or reconcile) comes first. A second run finds everything correct and repairs nothing.

Per paid PaymentIntent the repairs come in the order the money moved: the grant, then the refunds,
then the disputes (a dispute never freezes more than the refunds left). When Stripe cannot list
disputes (an outage, or a test server without them, as localstripe), the run says so once, as a
line for review, checks no more disputes, and repairs the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import PaymentGatewayFailed
from wallet_core.lifecycle import paid
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, Dispute, PaymentEvent, PaymentIntent
from wallet_core.ports import PaymentGateway, UnitOfWorkFactory
from wallet_core.refunds import dispute_closed_reference, dispute_reference
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases.apply_dispute import CLOSED_LOST, CLOSED_WON
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
    disputes_checked: bool = True  # False once Stripe could not list them; the reviews say why


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
            top_up = tx.top_ups.find_by_payment_intent(intent.id)
            if top_up is None:
                top_up = _automatic_without_intent(tx.top_ups.get(intent.metadata[META_TOP_UP_ID]), intent)
        if top_up is None and intent.status == "canceled":
            report.correct += 1  # never paid and canceled: one the wallet gave up when it could not record it
            continue
        if top_up is None:
            report.needs_review += 1
            report.reviews.append(f"{intent.id}: {intent.status} at Stripe, but no top-up here")
            continue
        if intent.status == "succeeded" and top_up.status is TopUpStatus.CANCELED:
            report.needs_review += 1
            report.reviews.append(f"{intent.id}: succeeded at Stripe, but top-up {top_up.id} is canceled here")
            continue
        if paid(top_up.status) and intent.status != "succeeded":
            # Credits were granted for money Stripe says never arrived: the one state this run is for.
            report.needs_review += 1
            report.reviews.append(
                f"{intent.id}: granted here (top-up {top_up.id} is {top_up.status.value}), "
                f"but Stripe says the PaymentIntent is {intent.status}"
            )
            continue
        repairs = _repairs(top_up, intent, gateway, uow, report)
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
            report.actions.append(f"{description}: {outcome.outcome.value}")
            if outcome.outcome is PaymentEventOutcome.NEEDS_REVIEW:
                report.needs_review += 1
                report.reviews.append(f"{intent.id}: Stripe's amount or currency differs from top-up {top_up.id}")
    return report


def _automatic_without_intent(top_up: TopUp | None, intent: PaymentIntent) -> TopUp | None:
    """An automatic top-up whose intent the worker never stored (its answer was lost), as this intent's:
    apply_payment_event finds it by the same metadata and gives it the intent."""
    if top_up is None or not top_up.automatic or top_up.payment_intent_id is not None:
        return None
    if intent.metadata.get(META_USER_ID, top_up.user_id) != top_up.user_id:
        return None
    return replace(top_up, payment_intent_id=intent.id)


def _repairs(
    top_up: TopUp, intent: PaymentIntent, gateway: PaymentGateway, uow: UnitOfWorkFactory, report: ReconcileReport
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
        if report.disputes_checked:
            try:
                disputes = gateway.list_disputes(intent.id)
            except PaymentGatewayFailed as exc:
                report.disputes_checked = False
                report.needs_review += 1
                report.reviews.append(f"disputes not checked (from {intent.id} on): {exc}")
                disputes = []
            out.extend(_dispute_repairs(intent, disputes, uow))
    return out


def _dispute_repairs(
    intent: PaymentIntent, disputes: list[Dispute], uow: UnitOfWorkFactory
) -> list[tuple[str, PaymentEvent]]:
    """A dispute closed at Stripe whose close the ledger lacks is closed here (won: the credits come
    back; lost: they go, frozen or not); one still open that the ledger never froze is frozen."""
    out: list[tuple[str, PaymentEvent]] = []
    if not disputes:
        return out  # most payments: no read of the ledger
    with uow(read_only=True) as tx:
        for dispute in disputes:
            closed_here = tx.ledger.find_transaction_by_reference(dispute_closed_reference(dispute.id)) is not None
            if closed_here:
                continue
            about = f"dispute {dispute.id} ({dispute.amount} {dispute.currency}) of {intent.id}"
            if dispute.status in CLOSED_WON | CLOSED_LOST:
                event = PaymentEvent(f"reconcile:{dispute.id}:{dispute.status}", "charge.dispute.closed",
                                     dispute=dispute, payment_intent_id=intent.id)
                out.append((f"close {about}, {dispute.status}", event))
            elif tx.ledger.find_transaction_by_reference(dispute_reference(dispute.id)) is None:
                event = PaymentEvent(f"reconcile:{dispute.id}:opened", "charge.dispute.created",
                                     dispute=dispute, payment_intent_id=intent.id)
                out.append((f"freeze credits for {about}, {dispute.status}", event))
    return out
