"""Saving a card for payments made without the user (automatic top-up): start a setup, learn that it
succeeded (the user's browser says so, or Stripe's webhook does), read the saved card, forget it.

Stripe is never asked while a writing unit of work is open; each request commits once at most.

- start_card_setup: the user's Stripe Customer is made once. Its id is read first; when there is
  none, Stripe is asked to make one under the idempotency key `wallet-customer-<user id>` (so two
  concurrent first requests get the same Customer back from Stripe) and the id is stored insert-if-
  absent (so the database ends with one, the first committed, whatever Stripe answered). Then a
  SetupIntent (usage=off_session, the user id in its metadata) is made for that Customer; it is not
  stored: its succeeding is what matters, and both ways of learning it check whose it is.
- complete_card_setup (the browser, right after Stripe.js confirmed the card) and
  apply_setup_succeeded (the signed setup_intent.succeeded webhook, through apply_payment_event) save
  the card of a succeeded SetupIntent of the user's Customer: brand, last four digits and expiry as
  Stripe reads them (card_details). Either may come first, both may come, and the webhook may be
  redelivered: the card saved already is answered as it is, nothing is written again.
- A card saved replaces the user's earlier one, which is then detached at Stripe (best effort, after
  the commit), so it can never be charged again. A card that is no longer attached to the Customer
  (detached because a later card replaced it or the user forgot it; a webhook can arrive late) is
  never saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from wallet_core.clock import Clock, utc_now
from wallet_core.errors import CardSetupIncomplete, InvalidInput, NotFound, PaymentsNotConfigured
from wallet_core.ids import check_setup_intent_id, check_user_id, new_id
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import PaymentEvent
from wallet_core.ports import PaymentGateway, StoredEvent, UnitOfWorkFactory
from wallet_core.saved_cards import CardDetails, SavedCard, SetupIntent

log = logging.getLogger(__name__)

SETUP_SUCCEEDED = "setup_intent.succeeded"


def customer_idempotency_key(user_id: str) -> str:
    """The Stripe idempotency key of the user's Customer: every first request of one user asks for the
    same Customer (Stripe keeps a key's answer for at least 24 hours)."""
    return f"wallet-customer-{user_id}"


@dataclass(frozen=True)
class CardSetup:
    """What the user's browser needs to confirm a card with Stripe.js (confirmCardSetup)."""

    setup_intent_id: str
    customer_id: str
    client_secret: str | None = field(repr=False)


def start_card_setup(
    *, user_id: str, gateway: PaymentGateway, uow: UnitOfWorkFactory, now: Clock = utc_now
) -> CardSetup:
    user_id = check_user_id(user_id)
    with uow(read_only=True) as tx:
        customer_id = tx.saved_cards.customer_id(user_id)
    if customer_id is None:
        made = gateway.create_customer(user_id, customer_idempotency_key(user_id))
        with uow() as tx:
            customer_id = tx.saved_cards.set_customer(user_id, made, now())
            tx.commit()
        if customer_id != made:
            # Only when the stored one is older than Stripe keeps idempotency keys (24 hours).
            log.warning("user %s has Stripe Customer %s; %s, made just now, is not used", user_id, customer_id, made)
    intent = gateway.create_setup_intent(customer_id, user_id, new_id("wallet-setup"))
    return CardSetup(setup_intent_id=intent.id, customer_id=customer_id, client_secret=intent.client_secret)


def complete_card_setup(
    *,
    user_id: str,
    setup_intent_id: str,
    gateway: PaymentGateway,
    uow: UnitOfWorkFactory,
    now: Clock = utc_now,
) -> SavedCard:
    """Save the card of the user's succeeded SetupIntent, as Stripe has it now. Raises NotFound when
    it is not the user's (another user's, or unknown), CardSetupIncomplete when it has not succeeded
    or its card was removed since."""
    user_id = check_user_id(user_id)
    setup_intent_id = check_setup_intent_id(setup_intent_id)
    intent = gateway.retrieve_setup_intent(setup_intent_id)
    with uow(read_only=True) as tx:
        customer_id = tx.saved_cards.customer_id(user_id)
        current = tx.saved_cards.get(user_id)
    if intent.user_id != user_id or customer_id is None or intent.customer_id != customer_id:
        raise NotFound(f"no SetupIntent {setup_intent_id} of this user")
    payment_method_id = intent.payment_method_id
    if not intent.succeeded or payment_method_id is None:
        raise CardSetupIncomplete(
            f"SetupIntent {setup_intent_id} has not succeeded (it is {intent.status}): confirm the card with "
            "Stripe.js first"
        )
    if current is not None and current.payment_method_id == payment_method_id:
        return current
    details = gateway.card_details(payment_method_id)
    if details.customer_id != intent.customer_id:
        raise CardSetupIncomplete(
            f"the card of SetupIntent {setup_intent_id} was removed since; set up a card again"
        )
    saved = _save(uow, intent, user_id, details, now)
    assert saved is not None, "no event, so never logged already"
    _detach_replaced(gateway, saved)
    return saved.card


def apply_setup_succeeded(
    event: PaymentEvent,
    *,
    uow: UnitOfWorkFactory,
    gateway: PaymentGateway | None,
    now: Clock = utc_now,
    source: str = "webhook",
) -> PaymentEventOutcome:
    """setup_intent.succeeded (apply_payment_event hands it here): save the card of the SetupIntent if
    it is one of a user's Customer, once per event id (the PaymentEventLog), and log what it did. The
    card is read from Stripe before the writing unit of work; a failure to read it raises (the webhook
    answers an error, nothing is logged, and Stripe sends the event again later)."""

    def logged(outcome: PaymentEventOutcome) -> PaymentEventOutcome:
        with uow() as tx:
            if tx.events.find(event.id) is not None:
                return PaymentEventOutcome.DUPLICATE
            tx.events.add(_stored(event, outcome, now, source))
            tx.commit()
        return outcome

    intent = event.setup_intent
    if intent is None or intent.user_id is None or intent.payment_method_id is None or not intent.succeeded:
        return logged(PaymentEventOutcome.IGNORED)
    user_id, payment_method_id = intent.user_id, intent.payment_method_id
    if not _valid_user(user_id):
        return logged(PaymentEventOutcome.IGNORED)
    with uow(read_only=True) as tx:
        if tx.events.find(event.id) is not None:
            return PaymentEventOutcome.DUPLICATE
        customer_id = tx.saved_cards.customer_id(user_id)
        current = tx.saved_cards.get(user_id)
    if customer_id is None or customer_id != intent.customer_id:
        log.warning(
            "event %s: SetupIntent %s is not of user %s's Stripe Customer; ignored", event.id, intent.id, user_id
        )
        return logged(PaymentEventOutcome.IGNORED)
    if current is not None and current.payment_method_id == payment_method_id:
        return logged(PaymentEventOutcome.CARD_ALREADY_SAVED)
    if gateway is None:
        raise PaymentsNotConfigured("saving a card needs the payment gateway, to read the card")
    try:
        details = gateway.card_details(payment_method_id)
    except NotFound:
        log.warning("event %s: the card of SetupIntent %s is gone at Stripe; not saved", event.id, intent.id)
        return logged(PaymentEventOutcome.IGNORED)
    if details.customer_id != intent.customer_id:
        # Detached since: a later card replaced it, or the user forgot it. Late news.
        return logged(PaymentEventOutcome.IGNORED_LATE)
    saved = _save(uow, intent, user_id, details, now, event=event, source=source)
    if saved is None:
        return PaymentEventOutcome.DUPLICATE
    _detach_replaced(gateway, saved)
    return PaymentEventOutcome.CARD_SAVED if saved.new else PaymentEventOutcome.CARD_ALREADY_SAVED


def saved_card(*, user_id: str, uow: UnitOfWorkFactory) -> SavedCard | None:
    user_id = check_user_id(user_id)
    with uow(read_only=True) as tx:
        return tx.saved_cards.get(user_id)


def forget_card(*, user_id: str, gateway: PaymentGateway, uow: UnitOfWorkFactory) -> SavedCard | None:
    """Forget the user's card (None if there was none) and detach it at Stripe (best effort, after the
    commit): nothing can charge it any more. The Customer stays, for the next card."""
    user_id = check_user_id(user_id)
    with uow() as tx:
        card = tx.saved_cards.forget(user_id)
        if card is not None:
            tx.commit()
    if card is not None:
        _detach(gateway, card.payment_method_id)
    return card


# -- the one write ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Saved:
    card: SavedCard
    replaced: SavedCard | None  # the user's card before (the same card when `new` is False)
    new: bool  # False: this card was saved already (a concurrent request saved it first)


def _save(
    uow: UnitOfWorkFactory,
    intent: SetupIntent,
    user_id: str,
    details: CardDetails,
    now: Clock,
    *,
    event: PaymentEvent | None = None,
    source: str = "webhook",
) -> _Saved | None:
    """Store the card as the user's, with the event (if any) and what it did in the same commit. None
    when the event was logged already (a concurrent delivery of it)."""
    with uow() as tx:
        if event is not None and tx.events.find(event.id) is not None:
            return None
        current = tx.saved_cards.get(user_id)
        new = current is None or current.payment_method_id != details.payment_method_id
        card = current if current is not None and not new else SavedCard(
            user_id=user_id,
            customer_id=intent.customer_id,
            payment_method_id=details.payment_method_id,
            brand=details.brand,
            last4=details.last4,
            exp_month=details.exp_month,
            exp_year=details.exp_year,
            saved_at=now(),
        )
        if new:
            tx.saved_cards.save(card)
        if event is not None:
            outcome = PaymentEventOutcome.CARD_SAVED if new else PaymentEventOutcome.CARD_ALREADY_SAVED
            tx.events.add(_stored(event, outcome, now, source))
        tx.commit()
    return _Saved(card, current, new)


def _stored(event: PaymentEvent, outcome: PaymentEventOutcome, now: Clock, source: str) -> StoredEvent:
    return StoredEvent(
        event_id=event.id,
        type=event.type,
        payment_intent_id=None,
        top_up_id=None,
        received_at=now(),
        outcome=outcome.value,
        source=source,
    )


def _valid_user(user_id: str) -> bool:
    try:
        check_user_id(user_id)
    except InvalidInput:
        return False
    return True


def _detach_replaced(gateway: PaymentGateway, saved: _Saved) -> None:
    if saved.new and saved.replaced is not None:
        _detach(gateway, saved.replaced.payment_method_id)


def _detach(gateway: PaymentGateway, payment_method_id: str) -> None:
    """Detach a card the wallet no longer keeps. A failure is only logged: the wallet has forgotten the
    card either way, but while it stays attached to the Customer a late setup_intent.succeeded naming
    it would save it again."""
    try:
        gateway.detach_payment_method(payment_method_id)
    except Exception as exc:  # noqa: BLE001
        log.error("card %s was replaced or forgotten, but could not be detached at Stripe: %s", payment_method_id, exc)
