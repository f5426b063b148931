"""What automatic top-up does inside other use cases' units of work (wallet_core.auto_top_up says the
rules): the trigger every balance change passes (recording.book), and the recording of a charge's end,
paid (the webhook or reconcile) or failed at the card (the worker, or the webhook). The wallet is
locked by the caller, or here, before the rule is read or written.

Nothing here calls Stripe: the worker (use_cases.auto_top_up.charge_auto_top_ups) does, after commit.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from wallet_core.auto_top_up import (
    AttemptOutcome,
    AutoCharge,
    AutoTopUpAttempt,
    AutoTopUpStatus,
    after_failure,
    amount_due,
    month_start,
    status_of,
    with_card,
)
from wallet_core.event_types import EventType
from wallet_core.ids import new_id
from wallet_core.lifecycle import can_move
from wallet_core.money import Credits, credits_for
from wallet_core.outbound_events import new_event
from wallet_core.ports import UnitOfWork
from wallet_core.topups import CURRENCY, TopUp, TopUpStatus

log = logging.getLogger(__name__)


def note_auto_top_up(tx: UnitOfWork, user_id: str, spendable: Credits, at: datetime) -> TopUp | None:
    """After a change left the wallet at `spendable` (the wallet locked): when that is below its rule's
    threshold, the rule is active (a saved card, not disabled) and no automatic top-up of the wallet is
    in flight, record one (the top-up, pending, and its charge for the worker) in this unit of work, or
    record its skip when it would exceed the monthly limit. Returns the top-up recorded, if any."""
    rules = tx.auto_top_ups
    rule = rules.get(user_id)
    if rule is None or spendable >= rule.threshold:
        return None
    if rules.charge_of(user_id) is not None:
        return None  # one in flight: it is the answer to this crossing too
    card = tx.saved_cards.get(user_id)
    saved_at = card.saved_at if card is not None else None
    current = with_card(rule, saved_at)
    if card is None or status_of(current, saved_at) is not AutoTopUpStatus.ACTIVE:
        return None
    policy = tx.top_up_policy
    if policy is None:
        log.error("wallet %s is below its automatic top-up threshold, but automatic top-ups are off here", user_id)
        return None
    amount = amount_due(current, spendable, policy)
    if current.monthly_limit is not None:
        charged = rules.charged_since(user_id, month_start(at))
        if charged.cents + amount.cents > current.monthly_limit.cents:
            last = current.last_attempt
            if last is None or last.outcome is not AttemptOutcome.SKIPPED_MONTHLY_LIMIT or (
                month_start(last.at) != month_start(at) or last.amount != amount
            ):
                why = (
                    f"{charged} USD charged this month; {amount} USD more would exceed monthly_limit_usd "
                    f"{current.monthly_limit}"
                )
                skipped = AutoTopUpAttempt(at, AttemptOutcome.SKIPPED_MONTHLY_LIMIT, amount, error=why)
                rules.put(replace(current, last_attempt=skipped))
                log.info("automatic top-up of %s skipped: %s", user_id, why)
            return None
    top_up = TopUp(
        id=new_id("tu"),
        user_id=user_id,
        amount=amount,
        currency=CURRENCY,
        credits=credits_for(amount, policy.credits_per_usd),
        status=TopUpStatus.PENDING,
        payment_intent_id=None,
        created_at=at,
        automatic=True,
    )
    # The in-flight marker first: the store refuses a second one (AutoTopUpInFlight), whatever raced.
    rules.add_charge(
        AutoCharge(
            top_up_id=top_up.id,
            user_id=user_id,
            amount=amount,
            customer_id=card.customer_id,
            payment_method_id=card.payment_method_id,
            created_at=at,
            due_at=at,
        )
    )
    tx.top_ups.add(top_up)
    rules.put(replace(current, last_attempt=AutoTopUpAttempt(at, AttemptOutcome.PENDING, amount, top_up.id)))
    return top_up


def auto_top_up_paid(tx: UnitOfWork, top_up: TopUp, payment_intent_id: str, data: dict[str, object],
                     at: datetime) -> None:
    """The automatic top-up's credits were granted (the wallet locked): no longer in flight, the rule's
    failures forgotten, auto_top_up.succeeded told. `data`: what the event says of the grant."""
    tx.auto_top_ups.finish_charge(top_up.id)
    rule = tx.auto_top_ups.get(top_up.user_id)
    if rule is not None:
        paid = AutoTopUpAttempt(at, AttemptOutcome.SUCCEEDED, top_up.amount, top_up.id, payment_intent_id)
        tx.auto_top_ups.put(replace(rule, consecutive_failures=0, last_attempt=paid))
    tx.outbox.add(new_event(EventType.AUTO_TOP_UP_SUCCEEDED, top_up.user_id, at, data))


def auto_top_up_failed(
    tx: UnitOfWork,
    top_up_id: str,
    *,
    at: datetime,
    payment_intent_id: str | None,
    code: str | None,
    message: str | None,
) -> bool:
    """The automatic top-up's charge failed at the card (declined, or it needs the customer): locks the
    wallet, marks the top-up failed (top_up.failed, as for any top-up), counts one consecutive failure
    (disabling the rule at the third) and tells auto_top_up.failed (and auto_top_up.disabled). Only once
    per top-up, whoever learns it first (the worker from Stripe's answer, or the payment_failed webhook):
    False when it was counted before."""
    top_up = tx.top_ups.get(top_up_id)
    if top_up is None:
        return False
    tx.ledger.lock_wallet(top_up.user_id, at)
    if tx.auto_top_ups.finish_charge(top_up_id) is None:
        return False  # not in flight any more: counted before
    intent_id = top_up.payment_intent_id or payment_intent_id
    if top_up.payment_intent_id is None and payment_intent_id is not None:
        tx.top_ups.set_payment_intent(top_up_id, payment_intent_id, at)
    if can_move(top_up.status, TopUpStatus.FAILED):  # (the payment_failed webhook moved it already)
        tx.top_ups.set_status(top_up_id, TopUpStatus.FAILED, at)
        told = {"top_up_id": top_up_id, "payment_intent_id": intent_id, "amount_usd": str(top_up.amount),
                "credits": str(top_up.credits)}
        tx.outbox.add(new_event(EventType.TOP_UP_FAILED, top_up.user_id, at, told))  # like any top-up's failure
    attempt = AutoTopUpAttempt(
        at, AttemptOutcome.FAILED, top_up.amount, top_up_id, intent_id, code, (message or "")[:500] or None
    )
    failures = 1
    spendable, _ = tx.ledger.balances(top_up.user_id, at)
    rule = tx.auto_top_ups.get(top_up.user_id)
    disabled = False
    if rule is not None:
        card = tx.saved_cards.get(top_up.user_id)
        current = with_card(rule, card.saved_at if card is not None else None)
        updated = after_failure(current, attempt)
        tx.auto_top_ups.put(updated)
        failures = updated.consecutive_failures
        disabled = current.disabled_at is None and updated.disabled_at is not None
    data: dict[str, object] = {
        "top_up_id": top_up_id,
        "payment_intent_id": intent_id,
        "amount_usd": str(top_up.amount),
        "credits": str(top_up.credits),
        "error_code": code,
        "error": attempt.error,
        "consecutive_failures": failures,
        "balance": str(spendable),
    }
    tx.outbox.add(new_event(EventType.AUTO_TOP_UP_FAILED, top_up.user_id, at, data))
    if disabled:
        tx.outbox.add(
            new_event(
                EventType.AUTO_TOP_UP_DISABLED,
                top_up.user_id,
                at,
                {"reason": "consecutive_failures", "consecutive_failures": failures, "last_top_up_id": top_up_id,
                 "error_code": code, "balance": str(spendable)},
            )
        )
        log.warning("automatic top-up of %s disabled after %d consecutive failures", top_up.user_id, failures)
    return True
