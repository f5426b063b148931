"""Request a top-up: check the amount and the user's limits, create a Stripe PaymentIntent, record a
pending top-up. One commit at most, and none while Stripe is asked.

Order matters for money safety:

1. A unit of work that commits nothing (a writing one, so that where the store cannot take a write
   now, as a locked SQLite, this fails before Stripe is asked for an intent the wallet could not
   record): an Idempotency-Key retry of a recorded top-up is found here and answered (even when the
   user is at a limit); otherwise the user's limits are checked against the top-ups recorded
   (TopUpLimits: open top-ups, top-ups started in the last hour). Over a limit: TooManyTopUps,
   Stripe is not asked, nothing is written.
2. The PaymentIntent is created, with a Stripe idempotency key made from the top-up id (which the
   intent also carries in its metadata). No unit of work is open.
3. One writing unit of work, under the user's top-up lock (so concurrent requests of one user, in any
   process, take turns): the limits are checked again (requests of one user running at once all
   passed step 1), and within them the pending top-up is recorded: the one commit. Over a limit now,
   nothing is written and the request answers TooManyTopUps. If the database fails, the caller gets
   an error and never sees the client secret, so nobody can pay an intent we have no record of.

When step 2 or 3 fails or refuses and the request had no Idempotency-Key, nobody can ask for that
intent again, so it is canceled at Stripe once the unit of work is closed (best effort: `wallet
reconcile` would otherwise list it for review on every run). A step 2 whose outcome is unknown (a
timeout, a lost connection, a Stripe 5xx) may have created an intent whose id never arrived: the
create is sent once more under the same Stripe idempotency key, which returns that intent if there is
one (or makes it now), and that is canceled; if even that fails, an ERROR names the top-up id (the
intent's `wallet_top_up_id` metadata). With an Idempotency-Key the intent is left as it is: the
client's retry, under the limits, gets the same intent back from Stripe and records it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateTopUp, IdempotencyConflict, PaymentGatewayFailed
from wallet_core.ids import check_idempotency_key, check_user_id, derived_id, new_id
from wallet_core.money import Credits, Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, PaymentIntentRequest
from wallet_core.ports import PaymentGateway, UnitOfWork, UnitOfWorkFactory
from wallet_core.topups import CURRENCY, OPEN_WINDOW, RATE_WINDOW, TopUp, TopUpLimits, TopUpPolicy, TopUpStatus

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

    top_up_id = derived_id("tu", user_id, key) if key is not None else new_id("tu")
    # A writing unit of work although it commits nothing: where the store cannot take a write now
    # (SQLite locked), this fails before Stripe is asked for a PaymentIntent the wallet could not record.
    with uow() as tx:
        earlier = tx.top_ups.find_by_idempotency_key(user_id, key) if key is not None else None
        if earlier is None:
            _check_limits(tx, user_id, policy.limits, now())
    if earlier is not None:
        return _replay(earlier, amount, gateway)

    request = PaymentIntentRequest(
        amount=amount,
        currency=CURRENCY,
        metadata={META_TOP_UP_ID: top_up_id, META_USER_ID: user_id, "credits": str(credits)},
        idempotency_key=f"wallet-top-up-{top_up_id}",
    )
    try:
        intent = gateway.create_payment_intent(request)
    except PaymentGatewayFailed as failed:
        if key is None and failed.outcome_unknown:
            _abandon_unknown(gateway, request, top_up_id)
        raise
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
        earlier = _record(uow, top_up, policy.limits)
    except Exception:
        # TooManyTopUps (concurrent requests of this user filled a limit while Stripe was asked), or
        # the database failed. Without a key nobody can ask for this intent again: cancel it, now that
        # no unit of work is open. With one, the client's retry gets it back from Stripe and records it.
        if key is None:
            _abandon(gateway, intent.id)
        raise
    if earlier is not None:
        return _replay(earlier, amount, gateway)
    return TopUpResult(
        top_up_id=top_up.id,
        payment_intent_id=intent.id,
        amount=amount,
        credits=credits,
        status=top_up.status,
        client_secret=intent.client_secret,
    )


def _check_limits(tx: UnitOfWork, user_id: str, limits: TopUpLimits | None, at: datetime) -> None:
    """Raise TooManyTopUps when one more top-up would break the user's limits, as the top-ups
    recorded stand now."""
    if limits is None:
        return
    activity = tx.top_ups.activity(user_id, open_since=at - OPEN_WINDOW, started_since=at - RATE_WINDOW)
    limits.check(activity, at)


def _record(uow: UnitOfWorkFactory, top_up: TopUp, limits: TopUpLimits | None) -> TopUp | None:
    """Under the user's top-up lock, check the limits again and record the top-up: the request's one
    commit. None when recorded; the earlier top-up when a retry with the same key recorded it first;
    TooManyTopUps (nothing written) when the limits are reached now."""
    key = top_up.idempotency_key
    with uow() as tx:
        tx.top_ups.lock(top_up.user_id)  # the user's requests take turns from here
        earlier = tx.top_ups.find_by_idempotency_key(top_up.user_id, key) if key is not None else None
        if earlier is not None:
            return earlier
        _check_limits(tx, top_up.user_id, limits, top_up.created_at)
        try:
            tx.top_ups.add(top_up)
        except DuplicateTopUp:
            # Recorded by a concurrent retry with the same key that the store did not make wait.
            tx.rollback()
            earlier = tx.top_ups.find_by_idempotency_key(top_up.user_id, key or "")
            if earlier is None:
                raise
            return earlier
        tx.commit()
    return None


def _abandon_unknown(gateway: PaymentGateway, request: PaymentIntentRequest, top_up_id: str) -> None:
    """Creating the intent of a top-up without an Idempotency-Key failed, maybe after Stripe made it
    (a timeout): ask again under the same Stripe idempotency key, which answers with that intent if
    there is one, and cancel it. Best effort; a failure is only logged, naming the top-up id that the
    intent carries in its metadata (for `wallet reconcile`'s review line)."""
    try:
        intent = gateway.create_payment_intent(request)
    except Exception as exc:  # noqa: BLE001
        log.error(
            "top-up %s not recorded: whether Stripe made its PaymentIntent is unknown (metadata %s=%s): %s",
            top_up_id, META_TOP_UP_ID, top_up_id, exc,
        )
        return
    _abandon(gateway, intent.id)


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
    intent = gateway.retrieve_payment_intent(earlier.intent_id)
    return TopUpResult(
        top_up_id=earlier.id,
        payment_intent_id=earlier.intent_id,
        amount=earlier.amount,
        credits=earlier.credits,
        status=earlier.status,
        client_secret=intent.client_secret,
        replayed=True,
    )
