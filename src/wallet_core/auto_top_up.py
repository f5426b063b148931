"""Automatic top-ups (issue 13): a wallet's rule to buy credits with its saved card when its spendable
balance falls below a threshold.

A rule either tops up *to a target* (the credits missing, in USD rounded up to the cent, raised to the
policy's minimum and capped at its maximum: a capped charge is one charge, and the next change below the
threshold tops up again) or buys a *fixed amount*. An optional monthly limit caps what automatic
top-ups may charge in one calendar month (UTC), counting pending and paid ones: a top-up that would
exceed it is skipped, and the skip is recorded as the rule's last attempt.

The rule lives beside the wallet and is read and changed under the wallet's lock. The charge in flight
(`AutoCharge`) is its own record, at most one per wallet (the store enforces it): it exists from the
change that recorded the automatic top-up until Stripe's answer is known for good (credits granted, or
the card declined), and the worker claims it with a lease, so a worker killed mid-charge leaves it to be
sent again, with the same idempotency key (the top-up id).

Three consecutive card failures (a decline, or a charge that needs the customer) disable the rule until
the user saves a card (a card saved after the rule was disabled re-enables it) or puts the rule again.
Stripe being unreachable is no card failure: the charge is sent again later under the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from wallet_core.alerts import MAX_THRESHOLD
from wallet_core.errors import InvalidInput
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpPolicy

MAX_CONSECUTIVE_FAILURES = 3
_CENT = Decimal("0.01")


class AutoTopUpStatus(StrEnum):
    ACTIVE = "active"
    PAUSED_NO_PAYMENT_METHOD = "paused_no_payment_method"  # no saved card: nothing can be charged
    DISABLED_AFTER_FAILURES = "disabled_after_failures"  # until a card is saved or the rule is put again


class AttemptOutcome(StrEnum):
    PENDING = "pending"  # recorded; the charge is on its way to Stripe, or Stripe's answer is awaited
    SUCCEEDED = "succeeded"  # paid: its credits were granted
    FAILED = "failed"  # the card was declined, or the charge needs the customer (authentication)
    SKIPPED_MONTHLY_LIMIT = "skipped_monthly_limit"  # it would have exceeded monthly_limit_usd
    CANCELED = "canceled"  # the saved card was removed before the charge was sent: nothing was charged


@dataclass(frozen=True)
class AutoTopUpAttempt:
    """The last thing the rule did: what it tried to charge, when, and what became of it."""

    at: datetime
    outcome: AttemptOutcome
    amount: Usd
    top_up_id: str | None = None
    payment_intent_id: str | None = None
    error_code: str | None = None  # Stripe's decline code (card_declined, authentication_required, ...)
    error: str | None = None  # what Stripe said, or why it was skipped


@dataclass(frozen=True)
class AutoTopUpRule:
    """A wallet's automatic top-up rule. Exactly one of `target` and `amount` is set."""

    user_id: str
    threshold: Credits
    target: Credits | None
    amount: Usd | None
    monthly_limit: Usd | None
    updated_at: datetime
    consecutive_failures: int = 0
    disabled_at: datetime | None = None  # when the third consecutive failure disabled it
    last_attempt: AutoTopUpAttempt | None = None


@dataclass(frozen=True)
class AutoCharge:
    """An automatic top-up being charged: the wallet's in-flight marker (one per wallet at most) and the
    worker's job. `due_at`: when a worker may claim it (again); None once Stripe accepted the charge and
    only its webhook is awaited. `attempts`: claims so far (a claim whose worker died counts)."""

    top_up_id: str
    user_id: str
    amount: Usd
    customer_id: str
    payment_method_id: str
    created_at: datetime
    due_at: datetime | None
    attempts: int = 0
    payment_intent_id: str | None = None


@dataclass(frozen=True)
class RuleTerms:
    threshold: Credits
    target: Credits | None
    amount: Usd | None
    monthly_limit: Usd | None


def check_terms(
    *,
    threshold_credits: object,
    target_credits: object = None,
    amount_usd: object = None,
    monthly_limit_usd: object = None,
    policy: TopUpPolicy,
) -> RuleTerms:
    """The rule's terms as a caller gives them, or InvalidInput naming the field at fault."""
    if threshold_credits is None:
        raise InvalidInput("threshold_credits", "is required")
    threshold = Credits.amount(threshold_credits, "threshold_credits")
    if not threshold.is_positive():
        raise InvalidInput("threshold_credits", "must be greater than 0")
    if threshold > MAX_THRESHOLD:
        raise InvalidInput("threshold_credits", f"must be at most {MAX_THRESHOLD}")
    if (target_credits is None) == (amount_usd is None):
        field = "target_credits" if target_credits is not None else "amount_usd"
        raise InvalidInput(field, "give either target_credits (top up to a target) or amount_usd (a fixed amount)")
    target: Credits | None = None
    amount: Usd | None = None
    if target_credits is not None:
        target = Credits.amount(target_credits, "target_credits")
        if target <= threshold:
            raise InvalidInput("target_credits", "must be above threshold_credits")
        if target > MAX_THRESHOLD:
            raise InvalidInput("target_credits", f"must be at most {MAX_THRESHOLD}")
    else:
        amount = Usd.amount(amount_usd, "amount_usd")
        policy.check(amount)  # InvalidInput("amount_usd", ...) outside TOP_UP_MIN_USD..TOP_UP_MAX_USD
    limit: Usd | None = None
    if monthly_limit_usd is not None:
        limit = Usd.amount(monthly_limit_usd, "monthly_limit_usd")
        least = amount if amount is not None else policy.min_amount
        if limit < least:
            what = "amount_usd" if amount is not None else "the smallest top-up"
            raise InvalidInput("monthly_limit_usd", f"must be at least {least} USD ({what})")
    return RuleTerms(threshold, target, amount, limit)


def amount_due(rule: AutoTopUpRule, spendable: Credits, policy: TopUpPolicy) -> Usd:
    """What one automatic top-up charges with the wallet at `spendable`: the fixed amount, or the credits
    missing to the target in USD rounded up to the cent, raised to the minimum and capped at the maximum."""
    if rule.amount is not None:
        return rule.amount
    assert rule.target is not None
    missing = rule.target - spendable
    usd = (missing.decimal / policy.credits_per_usd).quantize(_CENT, rounding=ROUND_CEILING)
    cents = int(usd * 100)
    return Usd(min(max(cents, policy.min_amount.cents), policy.max_amount.cents))


def month_start(at: datetime) -> datetime:
    """The first instant of `at`'s calendar month, UTC: where the monthly limit starts counting."""
    utc = at.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def with_card(rule: AutoTopUpRule, card_saved_at: datetime | None) -> AutoTopUpRule:
    """The rule as it stands given the wallet's saved card: a card saved after the rule was disabled
    re-enables it, with its failures forgotten."""
    if rule.disabled_at is not None and card_saved_at is not None and card_saved_at > rule.disabled_at:
        return replace(rule, disabled_at=None, consecutive_failures=0)
    return rule


def status_of(rule: AutoTopUpRule, card_saved_at: datetime | None) -> AutoTopUpStatus:
    """`card_saved_at`: when the wallet's saved card was saved, None without one."""
    rule = with_card(rule, card_saved_at)
    if rule.disabled_at is not None:
        return AutoTopUpStatus.DISABLED_AFTER_FAILURES
    if card_saved_at is None:
        return AutoTopUpStatus.PAUSED_NO_PAYMENT_METHOD
    return AutoTopUpStatus.ACTIVE


def after_failure(rule: AutoTopUpRule, attempt: AutoTopUpAttempt) -> AutoTopUpRule:
    """The rule once a charge failed at the card: one more consecutive failure, disabled at the third."""
    failures = rule.consecutive_failures + 1
    disabled = attempt.at if failures >= MAX_CONSECUTIVE_FAILURES and rule.disabled_at is None else rule.disabled_at
    return replace(rule, consecutive_failures=failures, disabled_at=disabled, last_attempt=attempt)
