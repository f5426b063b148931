"""A PaymentGateway that keeps PaymentIntents in memory: no network, same contract as Stripe's.

Tests drive it: `succeed(pi_id)` marks an intent paid and returns a signed `payment_intent.succeeded`
event (payload and Stripe-Signature header) ready to post to the webhook; `fail_next(...)` makes the
next call fail the way an outage would; `configured=False` behaves like missing Stripe keys.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import stripe

from adapters.stripe_webhooks import TOLERANCE_SECONDS, parse_webhook
from wallet_core.errors import NotFound, PaymentGatewayFailed, PaymentsNotConfigured
from wallet_core.payments import PaymentEvent, PaymentIntent, PaymentIntentRequest


class FakePaymentGateway:
    def __init__(
        self,
        webhook_secrets: Sequence[str] = ("whsec_fake",),
        *,
        configured: bool = True,
        allow_unsigned_webhooks: bool = False,
    ) -> None:
        self.webhook_secrets = tuple(webhook_secrets)
        self.configured = configured
        self.allow_unsigned_webhooks = allow_unsigned_webhooks
        self.intents: dict[str, PaymentIntent] = {}
        self.create_calls: list[PaymentIntentRequest] = []
        self._by_key: dict[str, tuple[PaymentIntentRequest, str]] = {}
        self._failures: list[Exception] = []
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
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
            self._by_key[request.idempotency_key] = (request, intent.id)
            return intent

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        with self._lock:
            self._check()
            try:
                return self.intents[payment_intent_id]
            except KeyError:
                raise NotFound(f"no PaymentIntent {payment_intent_id}") from None

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        return parse_webhook(
            payload,
            signature_header,
            self.webhook_secrets,
            allow_unsigned=self.allow_unsigned_webhooks,
            tolerance=TOLERANCE_SECONDS,
        )

    # -- test controls ---------------------------------------------------------------------------
    def fail_next(self, error: Exception | None = None) -> None:
        self._failures.append(error or PaymentGatewayFailed("Stripe could not be reached (simulated)"))

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

    def _check(self) -> None:
        if not self.configured:
            raise PaymentsNotConfigured("STRIPE_SECRET_KEY is not set, so no payment can be taken")
        if self._failures:
            raise self._failures.pop(0)
