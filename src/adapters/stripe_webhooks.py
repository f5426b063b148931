"""Verify a Stripe webhook (signature over the raw body) and translate it into a PaymentEvent.

Shared by the real Stripe gateway and the fake one, so both accept and refuse exactly the same input.
Verification uses the stripe SDK's own `WebhookSignature`, which needs no network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import stripe

from wallet_core.errors import InvalidWebhook, WebhooksNotConfigured
from wallet_core.money import Usd
from wallet_core.payments import PaymentEvent, PaymentIntent

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300  # Stripe's default: older signatures are refused as replays


def parse_webhook(
    payload: bytes,
    signature_header: str | None,
    secrets: Sequence[str],
    *,
    allow_unsigned: bool = False,
    tolerance: int = TOLERANCE_SECONDS,
) -> PaymentEvent:
    """Check the signature against every configured secret (several during a secret roll)."""
    if not secrets:
        if not allow_unsigned:
            raise WebhooksNotConfigured(
                "STRIPE_WEBHOOK_SECRET is not set, so webhook signatures cannot be checked"
            )
        log.warning(
            "accepting an UNSIGNED webhook: STRIPE_WEBHOOK_SECRET is unset and WALLET_ENV=development"
        )
    else:
        _verify(payload, signature_header, secrets, tolerance)
    try:
        data = json.loads(payload, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidWebhook("the webhook body is not JSON") from None
    return event_from_dict(data)


def _verify(payload: bytes, header: str | None, secrets: Sequence[str], tolerance: int) -> None:
    if not header:
        raise InvalidWebhook("the Stripe-Signature header is missing")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWebhook("the webhook body is not UTF-8") from None
    stale = False
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            # Only the secret that signed the body gets as far as the timestamp check; remember it
            # even when a later (wrong) secret of a roll fails with "no matching signature".
            stale = stale or "tolerance" in str(exc.user_message or exc).lower()
    if stale:
        raise InvalidWebhook("the Stripe-Signature timestamp is too old (possible replay)")
    raise InvalidWebhook("the Stripe-Signature does not match the body")


def event_from_dict(data: object) -> PaymentEvent:
    if not isinstance(data, Mapping):
        raise InvalidWebhook("the webhook body is not a Stripe event object")
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise InvalidWebhook("the event has no id or type")
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), Mapping) else None
    intent = None
    if event_type.startswith("payment_intent.") and isinstance(obj, Mapping):
        intent = intent_from_dict(obj)
    return PaymentEvent(id=event_id, type=event_type, payment_intent=intent)


def intent_from_dict(obj: Mapping[str, Any]) -> PaymentIntent:
    """Translate a Stripe PaymentIntent (a dict or a StripeObject) into ours."""
    try:
        pi_id = obj["id"]
        amount = obj["amount"]
        currency = obj["currency"]
        if not isinstance(pi_id, str) or not isinstance(currency, str):
            raise TypeError
        received = obj.get("amount_received")
        metadata = obj.get("metadata") or {}
        return PaymentIntent(
            id=pi_id,
            amount=Usd(_minor(amount)),
            currency=currency.lower(),
            status=str(obj.get("status") or ""),
            metadata={str(k): str(v) for k, v in dict(metadata).items()},
            amount_received=Usd(_minor(received)) if received is not None else None,
            client_secret=obj.get("client_secret"),
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidWebhook("the payment_intent object is missing id, amount or currency") from None


def _minor(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or value != int(value):
        raise ValueError("amount is not an integer number of minor units")
    return int(value)
