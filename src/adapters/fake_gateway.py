"""A PaymentGateway that keeps PaymentIntents in memory: no network, same contract as Stripe's.

Tests drive it. Each of these changes what the fake "Stripe" holds and returns a signed event
(payload and Stripe-Signature header) ready to post to the webhook, shaped as Stripe documents it:

- `succeed(pi_id)` -> payment_intent.succeeded; `fail(pi_id)` -> payment_intent.payment_failed;
  `cancel(pi_id)` -> payment_intent.canceled;
- `refund(pi_id, cents, event=...)` records a succeeded refund (then listed by `list_refunds`) and
  returns a charge.refunded or refund.created event, or None (`event=None`: the webhook was missed);
  `include_refunds=False` leaves the refunds out of charge.refunded, as newer API versions do;
- `dispute(pi_id, cents, status)` -> charge.dispute.created, then .updated / .closed for the same
  dispute (listed by `list_disputes` as it stands now).

Saving a card: `create_customer` / `create_setup_intent` keep Customers and SetupIntents (the same
idempotency key answers the same one); `succeed_setup_intent(seti_id, brand=..., last4=...)` is the
user confirming it with a card: it makes a PaymentMethod (read by `card_details`), marks the
SetupIntent succeeded and returns a signed setup_intent.succeeded; `detached` lists the
PaymentMethods `detach_payment_method` detached.

Charging a saved card off-session (automatic top-up): `charge_off_session` makes a PaymentIntent that
succeeded at once, for a PaymentMethod attached to the request's Customer; `decline_next_charge(code)`
declines the next charge (code card_declined, authentication_required, ...) and `always_decline(pm_id)`
every charge of that PaymentMethod (as Stripe's pm_card_chargeCustomerFail); a declined charge's intent
waits for another payment method. The same idempotency key answers the same intent, or the same refusal.
`time_out_next_charge()` makes the next charge happen and then fail as a timeout.

`fail_next(...)` makes the next call fail the way an outage would; `time_out_next_create()` makes
the next create make its intent and then fail, as a timeout after Stripe did the work; `configured=False` behaves like
missing Stripe keys; `clock` stamps each intent's creation time (for `list_payment_intents`).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import stripe

from adapters.stripe_webhooks import TOLERANCE_SECONDS, parse_webhook
from wallet_core.errors import NotFound, PaymentDeclined, PaymentGatewayFailed, PaymentsNotConfigured
from wallet_core.money import Usd
from wallet_core.payments import (
    META_USER_ID,
    Dispute,
    OffSessionCharge,
    PaymentEvent,
    PaymentIntent,
    PaymentIntentRequest,
    Refund,
)
from wallet_core.saved_cards import CardDetails, SetupIntent

RefundEvent = Literal["charge.refunded", "refund.created", "refund.updated", "charge.refund.updated"]
DISPUTE_CLOSED = frozenset({"won", "lost", "warning_closed"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FakePaymentGateway:
    def __init__(
        self,
        webhook_secrets: Sequence[str] = ("whsec_fake",),
        *,
        configured: bool = True,
        allow_unsigned_webhooks: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.webhook_secrets = tuple(webhook_secrets)
        self.configured = configured
        self.allow_unsigned_webhooks = allow_unsigned_webhooks
        self.clock = clock
        self.intents: dict[str, PaymentIntent] = {}  # in creation order
        self.created_at: dict[str, datetime] = {}
        self.refunds: dict[str, list[Refund]] = {}  # by PaymentIntent id, oldest first
        self.disputes: dict[str, Dispute] = {}  # by dispute id
        self.create_calls: list[PaymentIntentRequest] = []
        self._by_key: dict[str, tuple[PaymentIntentRequest, str]] = {}
        self._failures: list[Exception] = []
        self._lose_next_create = False
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
        self._refund_ids = itertools.count(1)
        self._dispute_ids = itertools.count(1)
        self.customers: dict[str, str] = {}  # Customer id -> the user id in its metadata
        self.setup_intents: dict[str, SetupIntent] = {}  # in creation order
        self.payment_methods: dict[str, CardDetails] = {}
        self.attached: dict[str, str] = {}  # PaymentMethod id -> Customer id, while attached
        self.detached: list[str] = []  # PaymentMethod ids, in the order they were detached
        self.customer_calls: list[str] = []  # the idempotency key of every create_customer
        self._customer_keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (user id, Customer id)
        self._setup_keys: dict[str, tuple[tuple[str, str], str]] = {}  # key -> ((customer, user), SetupIntent id)
        self._customer_ids = itertools.count(1)
        self._setup_ids = itertools.count(1)
        self._card_ids = itertools.count(1)
        self.charge_calls: list[OffSessionCharge] = []  # every charge_off_session, retries included
        self._charge_keys: dict[str, tuple[OffSessionCharge, str, PaymentDeclined | None]] = {}
        self._declines: list[str] = []  # codes of the next charges to decline
        self.declining: set[str] = set()  # PaymentMethod ids whose every charge is declined
        self._lose_next_charge = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FakePaymentGateway(configured={self.configured}, intents={len(self.intents)})"

    # -- the port -------------------------------------------------------------------------------
    def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        with self._lock:
            self._check()
            self.create_calls.append(request)
            if request.idempotency_key in self._by_key:
                first, pi_id = self._by_key[request.idempotency_key]
                if first != request:
                    raise PaymentGatewayFailed("idempotency key reused with different parameters")
                return self.intents[pi_id]
            n = next(self._ids)
            intent = PaymentIntent(
                id=f"pi_fake_{n}",
                amount=request.amount,
                currency=request.currency.lower(),  # Stripe stores and returns currencies lowercase
                status="requires_payment_method",
                metadata=dict(request.metadata),
                client_secret=f"pi_fake_{n}_secret_{n:04d}",
            )
            self.intents[intent.id] = intent
            self.created_at[intent.id] = self.clock()
            self._by_key[request.idempotency_key] = (request, intent.id)
            if self._lose_next_create:
                self._lose_next_create = False
                raise PaymentGatewayFailed("could not create a PaymentIntent: no answer in time (simulated)")
            return intent

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        with self._lock:
            self._check()
            try:
                return self.intents[payment_intent_id]
            except KeyError:
                raise NotFound(f"no PaymentIntent {payment_intent_id}") from None

    def cancel_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        """As Stripe: an intent that succeeded or was canceled already cannot be canceled."""
        with self._lock:
            self._check()
            intent = self.intents.get(payment_intent_id)
            if intent is None:
                raise NotFound(f"no PaymentIntent {payment_intent_id}")
            if intent.status in ("succeeded", "canceled"):
                raise PaymentGatewayFailed(
                    f"could not cancel a PaymentIntent: Stripe refused the request: it has a status of {intent.status}"
                )
            canceled = self.intents[payment_intent_id] = replace(intent, status="canceled")
            return canceled

    def list_payment_intents(self, created_after: datetime | None = None) -> Iterator[PaymentIntent]:
        """Newest first (by creation order), back to `created_after` (inclusive)."""
        with self._lock:
            self._check()
            listed = [
                self.intents[pi_id]
                for pi_id in reversed(self.intents)
                if created_after is None or self.created_at[pi_id] >= created_after
            ]
        return iter(listed)

    def list_refunds(self, payment_intent_id: str) -> list[Refund]:
        """Every refund of the intent, newest first (as Stripe lists them); none for an unknown id."""
        with self._lock:
            self._check()
            return list(reversed(self.refunds.get(payment_intent_id, [])))

    def list_disputes(self, payment_intent_id: str) -> list[Dispute]:
        """Every dispute of the intent as it stands now, newest first; none for an unknown id."""
        with self._lock:
            self._check()
            return [d for d in reversed(self.disputes.values()) if d.payment_intent_id == payment_intent_id]

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        return parse_webhook(
            payload,
            signature_header,
            self.webhook_secrets,
            allow_unsigned=self.allow_unsigned_webhooks,
            tolerance=TOLERANCE_SECONDS,
        )

    def create_customer(self, user_id: str, idempotency_key: str) -> str:
        with self._lock:
            self._check()
            self.customer_calls.append(idempotency_key)
            if idempotency_key in self._customer_keys:
                first_user, customer_id = self._customer_keys[idempotency_key]
                if first_user != user_id:
                    raise PaymentGatewayFailed("idempotency key reused with different parameters")
                return customer_id
            customer_id = f"cus_fake_{next(self._customer_ids)}"
            self.customers[customer_id] = user_id
            self._customer_keys[idempotency_key] = (user_id, customer_id)
            return customer_id

    def create_setup_intent(self, customer_id: str, user_id: str, idempotency_key: str) -> SetupIntent:
        with self._lock:
            self._check()
            if idempotency_key in self._setup_keys:
                first, seti_id = self._setup_keys[idempotency_key]
                if first != (customer_id, user_id):
                    raise PaymentGatewayFailed("idempotency key reused with different parameters")
                return self.setup_intents[seti_id]
            if customer_id not in self.customers:
                raise PaymentGatewayFailed(
                    f"could not create a SetupIntent: Stripe refused the request: No such customer: '{customer_id}'",
                    outcome_unknown=False,
                )
            n = next(self._setup_ids)
            intent = SetupIntent(
                id=f"seti_fake_{n}",
                customer_id=customer_id,
                client_secret=f"seti_fake_{n}_secret_{n:04d}",
                status="requires_payment_method",
                payment_method_id=None,
                user_id=user_id,
            )
            self.setup_intents[intent.id] = intent
            self._setup_keys[idempotency_key] = ((customer_id, user_id), intent.id)
            return intent

    def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        with self._lock:
            self._check()
            try:
                return self.setup_intents[setup_intent_id]
            except KeyError:
                raise NotFound(f"no SetupIntent {setup_intent_id}") from None

    def card_details(self, payment_method_id: str) -> CardDetails:
        with self._lock:
            self._check()
            try:
                details = self.payment_methods[payment_method_id]
            except KeyError:
                raise NotFound(f"no PaymentMethod {payment_method_id}") from None
            return replace(details, customer_id=self.attached.get(payment_method_id))

    def detach_payment_method(self, payment_method_id: str) -> None:
        """As Stripe: detaching one that is not attached (any more) is refused."""
        with self._lock:
            self._check()
            if payment_method_id not in self.payment_methods:
                raise NotFound(f"no PaymentMethod {payment_method_id}")
            if self.attached.pop(payment_method_id, None) is None:
                raise PaymentGatewayFailed(
                    "could not detach a PaymentMethod: Stripe refused the request: "
                    "The payment method you provided is not attached to a customer so detachment is impossible.",
                    outcome_unknown=False,
                )
            self.detached.append(payment_method_id)

    def charge_off_session(self, request: OffSessionCharge) -> PaymentIntent:
        with self._lock:
            self._check()
            self.charge_calls.append(request)
            if request.idempotency_key in self._charge_keys:
                first, pi_id, declined = self._charge_keys[request.idempotency_key]
                if first != request:
                    raise PaymentGatewayFailed(
                        "idempotency key reused with different parameters", outcome_unknown=False
                    )
                if declined is not None:
                    raise declined
                return self.intents[pi_id]
            n = next(self._ids)
            pi_id = f"pi_fake_{n}"
            declined = None
            if self.attached.get(request.payment_method_id) != request.customer_id:
                declined = PaymentDeclined(
                    f"No such PaymentMethod: '{request.payment_method_id}' on customer '{request.customer_id}'",
                    code="resource_missing",
                    payment_intent_id=pi_id,
                )
            elif self._declines or request.payment_method_id in self.declining:
                code = self._declines.pop(0) if self._declines else "card_declined"
                message = (
                    "This payment requires authentication by the customer."
                    if code == "authentication_required"
                    else "Your card was declined."
                )
                declined = PaymentDeclined(message, code=code, payment_intent_id=pi_id)
            intent = PaymentIntent(
                id=pi_id,
                amount=request.amount,
                currency=request.currency.lower(),
                status="requires_payment_method" if declined else "succeeded",
                metadata=dict(request.metadata),
                amount_received=None if declined else request.amount,
                client_secret=f"pi_fake_{n}_secret_{n:04d}",
            )
            self.intents[pi_id] = intent
            self.created_at[pi_id] = self.clock()
            self._charge_keys[request.idempotency_key] = (request, pi_id, declined)
            if self._lose_next_charge:
                self._lose_next_charge = False
                raise PaymentGatewayFailed("could not charge the card: no answer in time (simulated)")
            if declined is not None:
                raise declined
            return intent

    # -- test controls ---------------------------------------------------------------------------
    def decline_next_charge(self, code: str = "card_declined") -> None:
        """The next new off-session charge is declined with Stripe's `code`."""
        self._declines.append(code)

    def always_decline(self, payment_method_id: str) -> None:
        """Every off-session charge of this PaymentMethod is declined (Stripe's pm_card_chargeCustomerFail)."""
        self.declining.add(payment_method_id)

    def time_out_next_charge(self) -> None:
        """The next charge_off_session charges the card, then raises PaymentGatewayFailed (a timeout)."""
        self._lose_next_charge = True

    def succeed_setup_intent(
        self, setup_intent_id: str, *, brand: str = "visa", last4: str = "4242", exp_month: int = 12,
        exp_year: int = 2034,
    ) -> tuple[bytes, str]:
        """The user confirmed the SetupIntent with a new card: a PaymentMethod attached to its
        Customer, the SetupIntent succeeded. Return a signed setup_intent.succeeded (payload, header)."""
        with self._lock:
            intent = self.setup_intents[setup_intent_id]
            pm_id = f"pm_fake_{next(self._card_ids)}"
            self.payment_methods[pm_id] = CardDetails(pm_id, brand, last4, exp_month, exp_year)
            self.attached[pm_id] = intent.customer_id
            done = self.setup_intents[setup_intent_id] = replace(intent, status="succeeded", payment_method_id=pm_id)
        return self.signed_event("setup_intent.succeeded", self.setup_intent_object(done))

    @staticmethod
    def setup_intent_object(intent: SetupIntent) -> dict[str, Any]:
        """The SetupIntent as Stripe sends it in setup_intent.* events."""
        return {
            "id": intent.id,
            "object": "setup_intent",
            "customer": intent.customer_id,
            "client_secret": intent.client_secret,
            "status": intent.status,
            "usage": "off_session",
            "payment_method": intent.payment_method_id,
            "payment_method_types": ["card"],
            "metadata": {} if intent.user_id is None else {META_USER_ID: intent.user_id},
        }

    def fail_next(self, error: Exception | None = None) -> None:
        self._failures.append(error or PaymentGatewayFailed("Stripe could not be reached (simulated)"))

    def time_out_next_create(self) -> None:
        """The next create_payment_intent makes its intent, then raises PaymentGatewayFailed."""
        self._lose_next_create = True

    def succeed(self, payment_intent_id: str, *, amount_received: int | None = None,
                currency: str | None = None) -> tuple[bytes, str]:
        """Mark the intent paid; return a signed payment_intent.succeeded (payload, header)."""
        intent = self.intents[payment_intent_id]
        paid = replace(intent, status="succeeded")
        self.intents[payment_intent_id] = paid
        obj = self.intent_object(paid)
        obj["amount_received"] = paid.amount.cents if amount_received is None else amount_received
        if currency is not None:
            obj["currency"] = currency
        return self.signed_event("payment_intent.succeeded", obj)

    def fail(self, payment_intent_id: str, *, message: str = "Your card was declined.") -> tuple[bytes, str]:
        """A payment attempt failed: the intent waits for another payment method (as at Stripe);
        return a signed payment_intent.payment_failed."""
        failed = replace(self.intents[payment_intent_id], status="requires_payment_method")
        self.intents[payment_intent_id] = failed
        obj = self.intent_object(failed)
        obj["last_payment_error"] = {"type": "card_error", "code": "card_declined", "message": message}
        return self.signed_event("payment_intent.payment_failed", obj)

    def cancel(self, payment_intent_id: str) -> tuple[bytes, str]:
        """Cancel the intent; return a signed payment_intent.canceled."""
        canceled = replace(self.intents[payment_intent_id], status="canceled")
        self.intents[payment_intent_id] = canceled
        obj = self.intent_object(canceled)
        obj["cancellation_reason"] = "requested_by_customer"
        return self.signed_event("payment_intent.canceled", obj)

    def refund(
        self,
        payment_intent_id: str,
        cents: int,
        *,
        refund_id: str | None = None,
        event: RefundEvent | None = "charge.refunded",
        include_refunds: bool = True,
        status: str = "succeeded",
    ) -> tuple[bytes, str] | None:
        """Record a refund of `cents` (listed by `list_refunds` from now on) and return the signed
        `event` about it: charge.refunded (object: the charge, listing every refund of it unless
        `include_refunds=False`) or a refund.* event (object: the refund). None: no event at all, as
        when the webhook never arrived and only reconciliation can find the refund."""
        intent = self.intents[payment_intent_id]
        refund = Refund(
            id=refund_id or f"re_fake_{next(self._refund_ids)}",
            payment_intent_id=payment_intent_id,
            amount=Usd(cents),
            currency=intent.currency,
            status=status,
        )
        with self._lock:
            self.refunds.setdefault(payment_intent_id, []).append(refund)
        if event is None:
            return None
        if event == "charge.refunded":
            return self.signed_event(event, self.charge_object(intent, include_refunds=include_refunds))
        return self.signed_event(event, self.refund_object(refund, self.charge_id(payment_intent_id)))

    def dispute(
        self,
        payment_intent_id: str,
        cents: int,
        status: str = "needs_response",
        *,
        dispute_id: str | None = None,
        event: str | None = None,
    ) -> tuple[bytes, str]:
        """Open a dispute on the intent's charge, or move the one already open on it to `status`.
        The event is charge.dispute.created for a new dispute, charge.dispute.closed once `status`
        is won, lost or warning_closed, charge.dispute.updated otherwise (or `event` if given)."""
        intent = self.intents[payment_intent_id]
        if dispute_id is None:
            open_ = [d for d in self.disputes.values() if d.payment_intent_id == payment_intent_id]
            dispute_id = open_[-1].id if open_ else f"du_fake_{next(self._dispute_ids)}"
        new = dispute_id not in self.disputes
        dispute = Dispute(
            id=dispute_id,
            payment_intent_id=payment_intent_id,
            amount=Usd(cents),
            currency=intent.currency,
            status=status,
        )
        self.disputes[dispute_id] = dispute
        if event is None:
            event = (
                "charge.dispute.closed"
                if status in DISPUTE_CLOSED
                else "charge.dispute.created"
                if new
                else "charge.dispute.updated"
            )
        return self.signed_event(event, self.dispute_object(dispute, self.charge_id(payment_intent_id)))

    def signed_event(self, event_type: str, obj: dict[str, Any], *, secret: str | None = None,
                     timestamp: int | None = None) -> tuple[bytes, str]:
        event = {
            "id": f"evt_fake_{next(self._events)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
        payload = json.dumps(event).encode()
        header = stripe.WebhookSignature.generate_signature_header(
            payload.decode(), secret or self.webhook_secrets[0], timestamp
        )
        return payload, header

    @staticmethod
    def intent_object(intent: PaymentIntent) -> dict[str, Any]:
        return {
            "id": intent.id,
            "object": "payment_intent",
            "amount": intent.amount.cents,
            "amount_received": intent.amount_received.cents if intent.amount_received else 0,
            "currency": intent.currency,
            "status": intent.status,
            "metadata": dict(intent.metadata),
        }

    @staticmethod
    def charge_id(payment_intent_id: str) -> str:
        """The id of the (single) charge of an intent."""
        return "ch_" + payment_intent_id.removeprefix("pi_")

    def charge_object(self, intent: PaymentIntent, *, include_refunds: bool = True) -> dict[str, Any]:
        """The intent's charge as Stripe sends it in charge.refunded."""
        refunds = list(reversed(self.refunds.get(intent.id, [])))
        refunded = sum(r.amount.cents for r in refunds if r.status in ("succeeded", "pending"))
        charge_id = self.charge_id(intent.id)
        obj: dict[str, Any] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent.amount.cents,
            "amount_captured": intent.amount.cents,
            "amount_refunded": refunded,
            "currency": intent.currency,
            "captured": True,
            "paid": True,
            "refunded": refunded >= intent.amount.cents,
            "status": "succeeded",
            "payment_intent": intent.id,
            "metadata": {},
        }
        if include_refunds:
            obj["refunds"] = {
                "object": "list",
                "data": [self.refund_object(r, charge_id) for r in refunds],
                "has_more": False,
                "total_count": len(refunds),
                "url": f"/v1/charges/{charge_id}/refunds",
            }
        return obj

    @staticmethod
    def refund_object(refund: Refund, charge_id: str) -> dict[str, Any]:
        return {
            "id": refund.id,
            "object": "refund",
            "amount": refund.amount.cents,
            "charge": charge_id,
            "currency": refund.currency,
            "payment_intent": refund.payment_intent_id,
            "reason": "requested_by_customer",
            "status": refund.status,
            "created": int(time.time()),
            "metadata": {},
        }

    @staticmethod
    def dispute_object(dispute: Dispute, charge_id: str) -> dict[str, Any]:
        return {
            "id": dispute.id,
            "object": "dispute",
            "amount": dispute.amount.cents,
            "charge": charge_id,
            "currency": dispute.currency,
            "payment_intent": dispute.payment_intent_id,
            "reason": "fraudulent",
            "status": dispute.status,
            "is_charge_refundable": False,
            "created": int(time.time()),
            "metadata": {},
        }

    def _check(self) -> None:
        if not self.configured:
            raise PaymentsNotConfigured("STRIPE_SECRET_KEY is not set, so no payment can be taken")
        if self._failures:
            raise self._failures.pop(0)
