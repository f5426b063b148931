"""Request a top-up: check the amount, create a Stripe PaymentIntent, record a pending top-up.

Order matters for money safety: the PaymentIntent is created first (with an idempotency key), and
the pending top-up is recorded in one commit afterwards. If Stripe fails, nothing is written. If the
database fails, the caller gets an error and never sees the client secret, so nobody can pay an
intent we have no record of. Without an Idempotency-Key nobody can ask for that intent again either,
so it is canceled at Stripe (best effort: `wallet reconcile` would otherwise list it for review on
every run). With a key it is left as it is: the client's retry gets the same intent back from Stripe
and records it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateTopUp, IdempotencyConflict
from wallet_core.ids import check_idempotency_key, check_user_id, derived_id, new_id
from wallet_core.money import Credits, Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, PaymentIntentRequest
from wallet_core.ports import PaymentGateway, UnitOfWorkFactory
from wallet_core.topups import CURRENCY, TopUp, TopUpPolicy, TopUpStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopUpResult:
    top_up_id: str
    payment_intent_id: str
    amount: Usd
    credits: Credits
    status: TopUpStatus
    client_secret: str | None = field(default=None, repr=False)
    replayed: bool = False  # True when an Idempotency-Key retry returned the earlier top-up


def request_top_up(
    *,
    user_id: str,
    amount_usd: object,
    policy: TopUpPolicy,
    gateway: PaymentGateway,
    uow: UnitOfWorkFactory,
    idempotency_key: str | None = None,
    now: Clock = utc_now,
) -> TopUpResult:
    user_id = check_user_id(user_id)
    key = check_idempotency_key(idempotency_key)
    amount = Usd.amount(amount_usd, "amount_usd")
    credits = policy.check(amount)

    if key is not None:
        # A writing unit of work although it only reads: where the store cannot take a write now
        # (SQLite locked), this fails before Stripe is asked for a PaymentIntent the wallet could not record.
        with uow() as tx:
            earlier = tx.ledger.find_top_up_by_idempotency_key(user_id, key)
        if earlier is not None:
            return _replay(earlier, amount, gateway)
        top_up_id = derived_id("tu", user_id, key)
        stripe_key = f"wallet-top-up-{top_up_id}"
    else:
        top_up_id = new_id("tu")
        stripe_key = f"wallet-top-up-{top_up_id}"

    intent = gateway.create_payment_intent(
        PaymentIntentRequest(
            amount=amount,
            currency=CURRENCY,
            metadata={META_TOP_UP_ID: top_up_id, META_USER_ID: user_id, "credits": str(credits)},
            idempotency_key=stripe_key,
        )
    )
    top_up = TopUp(
        id=top_up_id,
        user_id=user_id,
        amount=amount,
        currency=CURRENCY,
        credits=credits,
        status=TopUpStatus.PENDING,
        payment_intent_id=intent.id,
        created_at=now(),
        idempotency_key=key,
    )
    try:
        with uow() as tx:
            try:
                tx.ledger.add_top_up(top_up)
            except DuplicateTopUp:
                # A concurrent retry with the same key recorded it first; answer with that one.
                tx.rollback()
                earlier = tx.ledger.find_top_up_by_idempotency_key(user_id, key or "")
                if earlier is None:
                    raise
                return _replay(earlier, amount, gateway)
            tx.commit()
    except Exception:
        if key is None:
            _abandon(gateway, intent.id)
        raise
    return TopUpResult(
        top_up_id=top_up.id,
        payment_intent_id=intent.id,
        amount=amount,
        credits=credits,
        status=top_up.status,
        client_secret=intent.client_secret,
    )


def _abandon(gateway: PaymentGateway, payment_intent_id: str) -> None:
    """Cancel the intent of a top-up that could not be recorded; a failure is only logged (the
    caller's error is the one that matters, and the intent stays unpayable without its secret)."""
    try:
        gateway.cancel_payment_intent(payment_intent_id)
        log.warning("top-up not recorded: its PaymentIntent %s was canceled at Stripe", payment_intent_id)
    except Exception as exc:  # noqa: BLE001
        log.error("top-up not recorded, and its PaymentIntent %s could not be canceled: %s", payment_intent_id, exc)


def _replay(earlier: TopUp, amount: Usd, gateway: PaymentGateway) -> TopUpResult:
    if earlier.amount != amount:
        raise IdempotencyConflict(
            f"this Idempotency-Key was used for a top-up of {earlier.amount} USD; use a new key for a different amount"
        )
    # The client secret is not stored; ask the provider for it again.
    intent = gateway.retrieve_payment_intent(earlier.payment_intent_id)
    return TopUpResult(
        top_up_id=earlier.id,
        payment_intent_id=earlier.payment_intent_id,
        amount=earlier.amount,
        credits=earlier.credits,
        status=earlier.status,
        client_secret=intent.client_secret,
        replayed=True,
    )
