"""Apply a verified Stripe event to the wallet, once per event id, and log what it did.

| event | effect |
|---|---|
| payment_intent.succeeded | grants the top-up's credits, exactly once (reference = PaymentIntent id) |
| payment_intent.payment_failed | pending -> failed (the buyer may still retry; a later success grants) |
| payment_intent.canceled | pending/failed -> canceled; never grants |
| charge.refunded, refund.created/updated, charge.refund.updated | takes back credits in proportion, once per refund |
| charge.dispute.created, charge.dispute.updated | freezes the disputed credits (once) |
| charge.dispute.closed | won: gives them back; lost: books them out |
| setup_intent.succeeded | saves the user's card (use_cases.save_card), replacing an earlier one |
| anything else | nothing (answered 200) |

An automatic top-up (wallet_core.auto_top_up) is recorded before its PaymentIntent exists, and its
webhook may arrive before the worker stored the intent's id: a payment_intent.* event that names no
known intent is matched by the top-up id in its metadata to such a top-up, which gets the intent then.
Its grant or failure also ends it being in flight and is told as auto_top_up.* too.

Exactly-once rests on the ledger: each movement's reference id is unique in the database, so a
duplicate or concurrent redelivery moves nothing more and is still acknowledged. Status only moves
forward (wallet_core.lifecycle): late news never undoes what happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from wallet_core.bookings import credit_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.errors import DuplicateReference
from wallet_core.event_types import EventType
from wallet_core.ledger import CreditKind
from wallet_core.lifecycle import can_move, paid
from wallet_core.money import Credits
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import (
    MAX_EVENT_TYPE_LENGTH,
    MAX_OBJECT_ID_LENGTH,
    META_TOP_UP_ID,
    META_USER_ID,
    PaymentEvent,
    PaymentIntent,
    Refund,
    printable,
    unstorable_value,
    value_problem,
)
from wallet_core.ports import PaymentGateway, StoredEvent, UnitOfWork, UnitOfWorkFactory
from wallet_core.refunds import top_up_lot_id
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases.apply_dispute import apply_dispute
from wallet_core.use_cases.apply_refund import apply_refunds
from wallet_core.use_cases.auto_top_up_trigger import auto_top_up_failed, auto_top_up_paid
from wallet_core.use_cases.recording import book, tell
from wallet_core.use_cases.save_card import SETUP_SUCCEEDED, apply_setup_succeeded
from wallet_core.use_cases.wallet_lock import lock_and_sweep

log = logging.getLogger(__name__)

SUCCEEDED = "payment_intent.succeeded"
FAILED = "payment_intent.payment_failed"
CANCELED = "payment_intent.canceled"
_GROUPABLE = frozenset({SUCCEEDED, FAILED, CANCELED})
REFUND_EVENTS = frozenset({"charge.refunded", "refund.created", "refund.updated", "charge.refund.updated"})
# An update is applied like the others (the dispute as it stands now): it freezes the credits of a
# dispute whose `created` was missed, and is `dispute_open` otherwise.
DISPUTE_EVENTS = frozenset({"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"})


class _GrantedConcurrently(Exception):
    """A concurrent delivery granted the payment first (the ledger refused the second grant's
    reference). Never leaves this module: the delivery answers `already_granted` and logs nothing."""

    def __init__(self, top_up_id: str) -> None:
        super().__init__(top_up_id)
        self.top_up_id = top_up_id


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    event_type: str
    outcome: PaymentEventOutcome
    top_up_id: str | None = None
    credits_granted: Credits | None = None


def groupable(event: PaymentEvent) -> bool:
    """Whether the event may be applied in a group's transaction (use_cases.write_group): a payment's
    success, failure or cancelation, which asks Stripe nothing (nor does an unstorable one, only logged)."""
    return event.type in _GROUPABLE


def event_wallet(event: PaymentEvent) -> str | None:
    """The wallet a payment event's metadata names (the one it will lock), for a group's lock order."""
    intent = event.payment_intent
    return intent.metadata.get(META_USER_ID) if intent is not None else None


def apply_payment_event(
    event: PaymentEvent,
    *,
    uow: UnitOfWorkFactory,
    gateway: PaymentGateway | None = None,
    now: Clock = utc_now,
    source: str = "webhook",
) -> WebhookOutcome:
    """Apply `event` in one unit of work, committed once. `gateway` is asked for a charge's refunds
    when a charge.refunded event does not list them, and for the card of a setup_intent.succeeded."""
    if (unstorable := unstorable_value(event)) is not None:
        return _ignore_unstorable(event, unstorable.field, unstorable.problem, uow=uow, now=now, source=source)
    if event.type == SETUP_SUCCEEDED:
        outcome = apply_setup_succeeded(event, uow=uow, gateway=gateway, now=now, source=source)
        return WebhookOutcome(event.id, event.type, outcome)
    refunds = event.refunds
    if event.type == "charge.refunded" and not event.refunds_listed and event.about and gateway is not None:
        refunds = tuple(gateway.list_refunds(event.about))  # before the transaction: no lock held on I/O
    with uow() as tx:
        seen, top_up = tx.events.find_with_top_up(event.id, event.about)
        if seen is not None:
            return WebhookOutcome(event.id, event.type, PaymentEventOutcome.DUPLICATE, seen.top_up_id)
        if top_up is None:
            top_up = _automatic_by_metadata(tx, event, now)
        try:
            result = _apply(tx, event, top_up, refunds, now)
        except _GrantedConcurrently as race:
            tx.rollback()
            return WebhookOutcome(event.id, event.type, PaymentEventOutcome.ALREADY_GRANTED, race.top_up_id)
        tx.events.add(
            StoredEvent(
                event_id=event.id,
                type=event.type,
                payment_intent_id=event.about,
                top_up_id=result.top_up_id,
                received_at=now(),
                outcome=result.outcome.value,
                source=source,
            )
        )
        tx.commit()
    return result


def _automatic_by_metadata(tx: UnitOfWork, event: PaymentEvent, now: Clock) -> TopUp | None:
    """The automatic top-up a payment_intent.* event's metadata names, when it has no PaymentIntent yet
    (the worker has not stored the one Stripe made): it gets this one now. None otherwise."""
    intent = event.payment_intent
    if intent is None or event.about is None:
        return None
    top_up_id = intent.metadata.get(META_TOP_UP_ID)
    found = tx.top_ups.get(top_up_id) if top_up_id else None
    if found is None or not found.automatic or found.payment_intent_id is not None:
        return None
    if intent.metadata.get(META_USER_ID, found.user_id) != found.user_id:
        log.error("event %s names top-up %s of another user; not applied to it", event.id, found.id)
        return None
    tx.top_ups.set_payment_intent(found.id, event.about, now())
    return replace(found, payment_intent_id=event.about)


def _ignore_unstorable(
    event: PaymentEvent, field: str, problem: str, *, uow: UnitOfWorkFactory, now: Clock, source: str
) -> WebhookOutcome:
    """An event with a value no database column could hold unchanged (too long, a NUL): answered
    `ignored`, so Stripe stops sending it, with one warning. It is logged under its id when that id
    itself can be stored; then nothing else of it that cannot be (a bad type is shown cleaned up, a bad
    PaymentIntent id not at all). Nothing moves."""
    event_id, event_type = printable(event.id), printable(event.type, MAX_EVENT_TYPE_LENGTH)
    log.warning("Stripe event %s (%s) ignored: its %s %s", event_id, event_type, field, problem)
    if field == "event id":
        return WebhookOutcome(event_id, event_type, PaymentEventOutcome.IGNORED)
    about = event.about if event.about and value_problem(event.about, MAX_OBJECT_ID_LENGTH) is None else None
    with uow() as tx:
        if tx.events.find(event.id) is not None:
            return WebhookOutcome(event.id, event_type, PaymentEventOutcome.DUPLICATE)
        ignored = PaymentEventOutcome.IGNORED
        tx.events.add(
            StoredEvent(event.id, event_type, about, None, received_at=now(), outcome=ignored.value, source=source)
        )
        tx.commit()
    return WebhookOutcome(event.id, event_type, ignored)


def _apply(
    tx: UnitOfWork, event: PaymentEvent, top_up: TopUp | None, refunds: tuple[Refund, ...], now: Clock
) -> WebhookOutcome:
    def outcome(
        name: PaymentEventOutcome, top_up: TopUp | None = None, credits: Credits | None = None
    ) -> WebhookOutcome:
        return WebhookOutcome(event.id, event.type, name, top_up.id if top_up else None, credits)

    handled = event.type in (SUCCEEDED, FAILED, CANCELED) or event.type in REFUND_EVENTS | DISPUTE_EVENTS
    if not handled or event.about is None:
        return outcome(PaymentEventOutcome.IGNORED)
    if top_up is None:
        ours = event.payment_intent is not None and META_TOP_UP_ID in event.payment_intent.metadata
        if ours:
            log.error("event %s is about %s, a top-up this wallet has no record of", event.id, event.about)
        return outcome(PaymentEventOutcome.UNKNOWN_TOP_UP if ours else PaymentEventOutcome.IGNORED)

    if event.type == SUCCEEDED and event.payment_intent is not None:
        return outcome(*_succeeded(tx, top_up, event.payment_intent, now))
    if event.type in (FAILED, CANCELED):
        failed = event.type == FAILED
        target = TopUpStatus.FAILED if failed else TopUpStatus.CANCELED
        if not can_move(top_up.status, target):
            return outcome(PaymentEventOutcome.IGNORED_LATE, top_up)
        at = now()
        tx.top_ups.set_status(top_up.id, target, at)
        if failed:
            tell(tx, EventType.TOP_UP_FAILED, top_up.user_id, at, _top_up_data(top_up))
        if top_up.automatic and failed:
            intent = event.payment_intent
            auto_top_up_failed(
                tx, top_up.id, at=at, payment_intent_id=event.about,
                code=intent.last_error_code if intent is not None else None,
                message=(intent.last_error_message if intent is not None else None) or "the payment failed",
            )
        elif top_up.automatic:
            tx.auto_top_ups.finish_charge(top_up.id)  # canceled: no longer in flight, no card failure
        return outcome(PaymentEventOutcome.FAILED if failed else PaymentEventOutcome.CANCELED, top_up)
    if event.type in REFUND_EVENTS or event.dispute is not None:
        if not paid(top_up.status):
            return outcome(PaymentEventOutcome.IGNORED, top_up)  # no money arrived, so none can go back or be disputed
        # Take the wallet's lock, then read the top-up again: concurrent refunds and disputes of one
        # payment take turns, and each works from the totals the one before it left.
        lock_and_sweep(tx, top_up.user_id, now())
        fresh = tx.top_ups.find_by_payment_intent(event.about)
        assert fresh is not None
        if event.type in REFUND_EVENTS:
            return outcome(apply_refunds(tx, fresh, refunds, now), fresh)
        assert event.dispute is not None
        return outcome(apply_dispute(tx, fresh, event.dispute, now), fresh)
    return outcome(PaymentEventOutcome.IGNORED, top_up)


def _top_up_data(top_up: TopUp) -> dict[str, object]:
    return {
        "top_up_id": top_up.id,
        "payment_intent_id": top_up.payment_intent_id,
        "amount_usd": str(top_up.amount),
        "credits": str(top_up.credits),
    }


def _succeeded(
    tx: UnitOfWork, top_up: TopUp, intent: PaymentIntent, now: Clock
) -> tuple[PaymentEventOutcome, TopUp, Credits | None]:
    if paid(top_up.status):
        return PaymentEventOutcome.ALREADY_GRANTED, top_up, None
    # A person decides about a payment Stripe once reported differently, not a later event.
    if top_up.status is TopUpStatus.NEEDS_REVIEW:
        return PaymentEventOutcome.NEEDS_REVIEW, top_up, None
    if top_up.status is TopUpStatus.CANCELED:
        return PaymentEventOutcome.CANCELED, top_up, None
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
        tx.top_ups.set_status(top_up.id, TopUpStatus.NEEDS_REVIEW, now())
        return PaymentEventOutcome.NEEDS_REVIEW, top_up, None
    at = now()
    state = lock_and_sweep(tx, top_up.user_id, at, crediting=True)
    try:
        booked = book(
            tx,
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
            ),
            extra={"top_up_id": top_up.id, "payment_intent_id": intent.id},
        )
    except DuplicateReference as exc:
        raise _GrantedConcurrently(top_up.id) from exc  # this delivery changes nothing
    tx.top_ups.set_status(top_up.id, TopUpStatus.SUCCEEDED, at)
    data = {**_top_up_data(top_up), "transaction_id": booked.id, "balance": str(booked.balance_after)}
    tell(tx, EventType.TOP_UP_SUCCEEDED, top_up.user_id, at, data)
    if top_up.automatic:
        auto_top_up_paid(tx, top_up, intent.id, data, at)
    return PaymentEventOutcome.GRANTED, top_up, top_up.credits
