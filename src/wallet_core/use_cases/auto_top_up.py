"""Automatic top-up (wallet_core.auto_top_up): a user or an admin puts, reads or removes a wallet's rule,
and the worker charges the automatic top-ups the rule recorded.

Putting a rule charges nothing by itself: the next change that leaves the wallet below the threshold
does (use_cases.auto_top_up_trigger, in that change's unit of work). Putting it again re-enables a rule
disabled after failures. Removing it stops charges not yet sent; one sent already is awaited as usual.

The worker's round (`charge_auto_top_ups`), each step its own short unit of work, none open while
Stripe is asked:
1. claim the charges due (a lease: a worker killed mid-charge leaves its charge to be claimed again when
   the lease ends, and sent again under the same idempotency key, the top-up id: the same charge);
2. charge each saved card off-session;
3. record what Stripe said: accepted (the credits come with payment_intent.succeeded, or reconcile), a
   card failure (declined, authentication_required: counted, the third in a row disables the rule), or
   Stripe failed or could not be reached (no card failure: sent again later, same key).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from wallet_core.auto_top_up import (
    AttemptOutcome,
    AutoCharge,
    AutoTopUpAttempt,
    AutoTopUpRule,
    AutoTopUpStatus,
    check_terms,
    month_start,
    status_of,
    with_card,
)
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import NotFound, PaymentDeclined, PaymentGatewayFailed, PaymentsNotConfigured
from wallet_core.ids import check_user_id
from wallet_core.lifecycle import can_move
from wallet_core.money import Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, OffSessionCharge, PaymentIntent
from wallet_core.ports import PaymentGateway, UnitOfWork, UnitOfWorkFactory
from wallet_core.topups import CURRENCY, TopUp, TopUpPolicy, TopUpStatus
from wallet_core.use_cases.auto_top_up_trigger import auto_top_up_failed
from wallet_core.use_cases.wallet_lock import lock_and_sweep

log = logging.getLogger(__name__)

CHARGE_LEASE = timedelta(minutes=2)  # far longer than one charge may take (Stripe's timeout, retries)
RETRY_AFTER_OUTAGE = (timedelta(minutes=1), timedelta(hours=1))  # first wait, longest wait
CHARGE_BATCH = 10
META_AUTOMATIC = "wallet_automatic"


@dataclass(frozen=True)
class AutoTopUpView:
    """A wallet's rule as the API shows it."""

    user_id: str
    rule: AutoTopUpRule
    status: AutoTopUpStatus
    charged_this_month: Usd
    in_flight_top_up_id: str | None


@dataclass(frozen=True)
class ChargeRound:
    claimed: int
    accepted: int  # Stripe charged the card (or is processing it): the webhook brings the credits
    declined: int  # card failures recorded
    deferred: int  # Stripe failed or was unreachable: to be sent again later, same idempotency key
    canceled: int  # the rule was removed before the charge was first sent


# -- the rule ------------------------------------------------------------------------------------


def put_rule(
    *,
    user_id: str,
    threshold_credits: object,
    target_credits: object = None,
    amount_usd: object = None,
    monthly_limit_usd: object = None,
    policy: TopUpPolicy,
    uow: UnitOfWorkFactory,
    now: Clock = utc_now,
) -> AutoTopUpView:
    """Store the wallet's rule (replacing its earlier one): enabled, its failures forgotten. InvalidInput
    (nothing written) when the threshold is not below the target, or an amount is outside the policy."""
    user_id = check_user_id(user_id)
    terms = check_terms(
        threshold_credits=threshold_credits,
        target_credits=target_credits,
        amount_usd=amount_usd,
        monthly_limit_usd=monthly_limit_usd,
        policy=policy,
    )
    with uow() as tx:
        at = now()
        lock_and_sweep(tx, user_id, at)  # rules change under the wallet's lock, as balances do
        earlier = tx.auto_top_ups.get(user_id)
        rule = AutoTopUpRule(
            user_id=user_id,
            threshold=terms.threshold,
            target=terms.target,
            amount=terms.amount,
            monthly_limit=terms.monthly_limit,
            updated_at=at,
            last_attempt=earlier.last_attempt if earlier is not None else None,
        )
        tx.auto_top_ups.put(rule)
        view = _view(tx, rule, at)
        tx.commit()
    return view


def get_rule(*, user_id: str, uow: UnitOfWorkFactory, now: Clock = utc_now) -> AutoTopUpView:
    """The wallet's rule; NotFound when it has none."""
    user_id = check_user_id(user_id)
    with uow(read_only=True) as tx:
        rule = tx.auto_top_ups.get(user_id)
        if rule is None:
            raise NotFound(f"wallet {user_id} has no automatic top-up rule")
        return _view(tx, rule, now())


def delete_rule(*, user_id: str, uow: UnitOfWorkFactory, now: Clock = utc_now) -> None:
    """Remove the wallet's rule; NotFound when it has none. A charge not yet sent is not sent (the
    worker cancels it); one Stripe has already is awaited, and its credits are granted as usual."""
    user_id = check_user_id(user_id)
    with uow() as tx:
        tx.ledger.lock_wallet(user_id, now())
        if not tx.auto_top_ups.delete(user_id):
            raise NotFound(f"wallet {user_id} has no automatic top-up rule")
        tx.commit()


def _view(tx: UnitOfWork, rule: AutoTopUpRule, at: datetime) -> AutoTopUpView:
    card = tx.saved_cards.get(rule.user_id)
    saved_at = card.saved_at if card is not None else None
    charge = tx.auto_top_ups.charge_of(rule.user_id)
    return AutoTopUpView(
        user_id=rule.user_id,
        rule=with_card(rule, saved_at),
        status=status_of(rule, saved_at),
        charged_this_month=tx.auto_top_ups.charged_since(rule.user_id, month_start(at)),
        in_flight_top_up_id=charge.top_up_id if charge is not None else None,
    )


# -- the worker ----------------------------------------------------------------------------------


def charge_auto_top_ups(
    *, uow: UnitOfWorkFactory, gateway: PaymentGateway, now: Clock = utc_now, limit: int = CHARGE_BATCH
) -> ChargeRound:
    """One round: claim the automatic top-ups due, charge each saved card, record what Stripe said."""
    at = now()
    with uow() as tx:
        claimed = tx.auto_top_ups.claim_charges(at, at + CHARGE_LEASE, limit)
        if claimed:
            tx.commit()
    counts = {"accepted": 0, "declined": 0, "deferred": 0, "canceled": 0}
    for charge in claimed:
        counts[_charge(charge, uow=uow, gateway=gateway, now=now)] += 1
    return ChargeRound(len(claimed), **counts)


def _charge(charge: AutoCharge, *, uow: UnitOfWorkFactory, gateway: PaymentGateway, now: Clock) -> str:
    with uow(read_only=True) as tx:
        top_up = tx.top_ups.get(charge.top_up_id)
        rule = tx.auto_top_ups.get(charge.user_id)
        card = tx.saved_cards.get(charge.user_id)
    if top_up is None:  # cannot happen: recorded in the same unit of work as the charge
        log.error("automatic top-up %s has a charge but no record; not charged", charge.top_up_id)
        return "canceled"
    if charge.attempts == 1:  # never sent yet: what changed since it was recorded still counts
        if (rule is None or card is None) and _cancel(charge, uow=uow, now=now, rule_gone=rule is None):
            return "canceled"  # the rule or the card was removed: nothing is charged
        if card is not None and (card.customer_id, card.payment_method_id) != (
            charge.customer_id, charge.payment_method_id
        ):
            # Another card was saved meanwhile: charge that one, and from now on only that one (a charge
            # sent again must carry the same parameters under its idempotency key).
            charge = replace(charge, customer_id=card.customer_id, payment_method_id=card.payment_method_id)
            with uow() as tx:
                if not tx.auto_top_ups.save_charge(charge):
                    return "canceled"  # ended meanwhile
                tx.commit()
    request = charge_request(charge, top_up)
    try:
        intent = gateway.charge_off_session(request)
    except PaymentDeclined as declined:
        with uow() as tx:
            auto_top_up_failed(
                tx, charge.top_up_id, at=now(), payment_intent_id=declined.payment_intent_id,
                code=declined.code, message=declined.description,
            )
            tx.commit()
        log.warning("automatic top-up %s of %s: the card was refused (%s)", top_up.id, top_up.user_id, declined.code)
        return "declined"
    except (PaymentGatewayFailed, PaymentsNotConfigured) as failed:
        # Not the card's fault: sent again later, with the same idempotency key (the same charge).
        wait = min(RETRY_AFTER_OUTAGE[0] * 2 ** (charge.attempts - 1), RETRY_AFTER_OUTAGE[1])
        with uow() as tx:
            tx.auto_top_ups.save_charge(replace(charge, due_at=now() + wait))
            tx.commit()
        log.warning(
            "automatic top-up %s of %s not charged yet (%s); sent again in %s",
            top_up.id, top_up.user_id, failed.description, wait,
        )
        return "deferred"
    _accepted(charge, top_up, intent, uow=uow, now=now)
    return "accepted"


def charge_request(charge: AutoCharge, top_up: TopUp) -> OffSessionCharge:
    """The charge as sent to Stripe: the same every time it is sent (Stripe compares the parameters of a
    request sent again under one idempotency key)."""
    return OffSessionCharge(
        amount=charge.amount,
        currency=CURRENCY,
        customer_id=charge.customer_id,
        payment_method_id=charge.payment_method_id,
        metadata={
            META_TOP_UP_ID: top_up.id,
            META_USER_ID: top_up.user_id,
            "credits": str(top_up.credits),
            META_AUTOMATIC: "true",
        },
        idempotency_key=top_up.id,
    )


def _accepted(charge: AutoCharge, top_up: TopUp, intent: PaymentIntent, *, uow: UnitOfWorkFactory, now: Clock) -> None:
    """Stripe took the charge: store its PaymentIntent (unless its webhook did first) and wait for the
    webhook, which grants the credits and ends the charge."""
    with uow() as tx:
        at = now()
        tx.ledger.lock_wallet(top_up.user_id, at)
        stored = tx.top_ups.get(top_up.id)
        if stored is not None and stored.payment_intent_id is None:
            tx.top_ups.set_payment_intent(top_up.id, intent.id, at)
        if tx.auto_top_ups.save_charge(replace(charge, due_at=None, payment_intent_id=intent.id)):
            rule = tx.auto_top_ups.get(top_up.user_id)
            if rule is not None:
                sent = AutoTopUpAttempt(at, AttemptOutcome.PENDING, top_up.amount, top_up.id, intent.id)
                tx.auto_top_ups.put(replace(rule, last_attempt=sent))
        tx.commit()
    log.info("automatic top-up %s of %s charged: PaymentIntent %s %s", top_up.id, top_up.user_id, intent.id,
             intent.status)


def _cancel(charge: AutoCharge, *, uow: UnitOfWorkFactory, now: Clock, rule_gone: bool) -> bool:
    """The rule, or the saved card, was removed before the charge was first sent: cancel the top-up.
    False when they are back meanwhile, or the charge is gone (then it is sent, or was ended, as usual)."""
    with uow() as tx:
        at = now()
        tx.ledger.lock_wallet(charge.user_id, at)
        if tx.auto_top_ups.get(charge.user_id) is not None and tx.saved_cards.get(charge.user_id) is not None:
            return False
        if tx.auto_top_ups.finish_charge(charge.top_up_id) is None:
            return False
        top_up = tx.top_ups.get(charge.top_up_id)
        if top_up is not None and can_move(top_up.status, TopUpStatus.CANCELED):
            tx.top_ups.set_status(top_up.id, TopUpStatus.CANCELED, at)
        rule = tx.auto_top_ups.get(charge.user_id)
        if rule is not None:  # the card was removed: the rule says what became of its top-up
            why = "the saved card was removed before the charge was sent"
            canceled = AutoTopUpAttempt(at, AttemptOutcome.CANCELED, charge.amount, charge.top_up_id, error=why)
            tx.auto_top_ups.put(replace(rule, last_attempt=canceled))
        tx.commit()
    log.info("automatic top-up %s of %s canceled: its %s was removed", charge.top_up_id, charge.user_id,
             "rule" if rule_gone else "saved card")
    return True
