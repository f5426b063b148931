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
from wallet_core.payments import META_USER_ID, Dispute, PaymentEvent, PaymentIntent, Refund, printable
from wallet_core.saved_cards import SetupIntent

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300  # Stripe's default: older signatures are refused as replays

# payment_intent.* events whose object the wallet reads; others may come without one.
CONSUMED_INTENT_EVENTS = frozenset(
    {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"}
)
# The one setup_intent.* event the wallet reads (saving a card); others pass through bare.
SETUP_INTENT_SUCCEEDED = "setup_intent.succeeded"


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
    except ValueError:  # not UTF-8, not JSON, or an integer of more digits than Python reads
        raise InvalidWebhook("the webhook body is not JSON") from None
    except ArithmeticError:  # decimal.InvalidOperation: an exponent no Decimal can hold (1e10**18)
        raise InvalidWebhook("the webhook body holds a number out of any range") from None
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
    """Translate a Stripe event (already verified) into ours. Objects of the event types the wallet
    consumes must be well formed (InvalidWebhook otherwise); other types pass through bare."""
    if not isinstance(data, Mapping):
        raise InvalidWebhook("the webhook body is not a Stripe event object")
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise InvalidWebhook("the event has no id or type")
    body = data.get("data")
    obj = body.get("object") if isinstance(body, Mapping) else None
    kind = _object_kind(event_type)
    if kind is None:
        return PaymentEvent(id=event_id, type=event_type)
    if not isinstance(obj, Mapping):
        if kind == "payment_intent" and event_type not in CONSUMED_INTENT_EVENTS:
            return PaymentEvent(id=event_id, type=event_type)  # e.g. payment_intent.created: not used
        if kind == "setup_intent" and event_type != SETUP_INTENT_SUCCEEDED:
            return PaymentEvent(id=event_id, type=event_type)
        raise InvalidWebhook(f"the {event_type} event has no {kind} object")
    if kind == "payment_intent":
        return PaymentEvent(id=event_id, type=event_type, payment_intent=intent_from_dict(obj))
    if kind == "setup_intent":
        if event_type != SETUP_INTENT_SUCCEEDED or obj.get("customer") is None:
            # Not read; or not one of ours (the wallet makes every SetupIntent for a Customer).
            return PaymentEvent(id=event_id, type=event_type)
        return PaymentEvent(id=event_id, type=event_type, setup_intent=setup_intent_from_dict(obj))
    if kind == "charge":
        return _charge_event(event_id, event_type, obj)
    if kind == "refund":
        refund = refund_from_dict(obj)
        return PaymentEvent(
            id=event_id, type=event_type, refunds=(refund,), payment_intent_id=refund.payment_intent_id
        )
    dispute = dispute_from_dict(obj)
    return PaymentEvent(id=event_id, type=event_type, dispute=dispute, payment_intent_id=dispute.payment_intent_id)


def _object_kind(event_type: str) -> str | None:
    """What `data.object` is for the event types we translate."""
    if event_type.startswith("payment_intent."):
        return "payment_intent"
    if event_type.startswith("setup_intent."):
        return "setup_intent"
    if event_type == "charge.refunded":
        return "charge"
    if event_type.startswith(("refund.", "charge.refund.")):
        return "refund"
    if event_type.startswith("charge.dispute."):
        return "dispute"
    return None


def _charge_event(event_id: str, event_type: str, charge: Mapping[str, Any]) -> PaymentEvent:
    """charge.refunded: the charge lists its refunds only on older API versions (and then at most a
    page of them): `refunds_listed` says whether the event carries every one."""
    if not isinstance(charge.get("id"), str):
        raise InvalidWebhook("the charge object has no id")
    try:
        pi_id = _reference(charge.get("payment_intent"))
    except (TypeError, ValueError):
        raise InvalidWebhook("the charge object's payment_intent is not an id") from None
    listing = charge.get("refunds")
    if listing is None:
        return PaymentEvent(id=event_id, type=event_type, payment_intent_id=pi_id, refunds_listed=False)
    if not isinstance(listing, Mapping) or not isinstance(listing.get("data"), list):
        raise InvalidWebhook("the charge object's refunds are not a list")
    refunds = tuple(refund_from_dict(r, payment_intent_id=pi_id) for r in listing["data"])
    complete = listing.get("has_more") is not True
    return PaymentEvent(
        id=event_id, type=event_type, refunds=refunds, payment_intent_id=pi_id, refunds_listed=complete
    )


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
        error = obj.get("last_payment_error")
        code = message = None
        if isinstance(error, Mapping):
            found = error.get("decline_code") or error.get("code")
            code = printable(found, 60) if isinstance(found, str) else None
            message = printable(error["message"], 500) if isinstance(error.get("message"), str) else None
        return PaymentIntent(
            id=pi_id,
            amount=Usd(_minor(amount)),
            currency=currency.lower(),
            status=str(obj.get("status") or ""),
            metadata={str(k): str(v) for k, v in dict(metadata).items()},
            amount_received=Usd(_minor(received)) if received is not None else None,
            client_secret=obj.get("client_secret"),
            last_error_code=code,
            last_error_message=message,
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidWebhook("the payment_intent object is missing id, amount or currency") from None


def setup_intent_from_dict(obj: Mapping[str, Any]) -> SetupIntent:
    """Translate a Stripe SetupIntent (a dict or a StripeObject's to_dict()) into ours. It must name
    its Customer (every SetupIntent the wallet makes does); the user is its metadata's META_USER_ID."""
    try:
        seti_id, status = obj["id"], obj["status"]
        if not isinstance(seti_id, str) or not seti_id or not isinstance(status, str):
            raise TypeError
        customer = _reference(obj.get("customer"))
        if customer is None:
            raise ValueError("no customer")
        metadata = obj.get("metadata") or {}
        user_id = metadata.get(META_USER_ID) if isinstance(metadata, Mapping) else None
        secret = obj.get("client_secret")
        return SetupIntent(
            id=seti_id,
            customer_id=customer,
            client_secret=secret if isinstance(secret, str) else None,
            status=status,
            payment_method_id=_reference(obj.get("payment_method")),
            user_id=user_id if isinstance(user_id, str) else None,
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidWebhook("the setup_intent object is missing id, status or customer") from None


def refund_from_dict(obj: object, *, payment_intent_id: str | None = None) -> Refund:
    """Translate a Stripe Refund; `payment_intent_id` stands in when the refund does not name one
    (a refund listed inside its charge, or made through the charge)."""
    try:
        if not isinstance(obj, Mapping):
            raise TypeError
        refund_id, currency, status = obj["id"], obj["currency"], obj["status"]
        if not all(isinstance(v, str) and v for v in (refund_id, currency, status)):
            raise TypeError
        return Refund(
            id=refund_id,
            payment_intent_id=_reference(obj.get("payment_intent")) or payment_intent_id,
            amount=Usd(_minor(obj["amount"])),
            currency=currency.lower(),
            status=status,
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidWebhook("a refund object is missing id, amount, currency or status") from None


def dispute_from_dict(obj: Mapping[str, Any]) -> Dispute:
    try:
        dispute_id, currency, status = obj["id"], obj["currency"], obj["status"]
        if not all(isinstance(v, str) and v for v in (dispute_id, currency, status)):
            raise TypeError
        return Dispute(
            id=dispute_id,
            payment_intent_id=_reference(obj.get("payment_intent")),
            amount=Usd(_minor(obj["amount"])),
            currency=currency.lower(),
            status=status,
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidWebhook("the dispute object is missing id, amount, currency or status") from None


def _reference(value: object) -> str | None:
    """A related object's id: Stripe sends an id string, an expanded object, or null."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise ValueError("not an object id")
    return value


def _minor(value: object) -> int:
    """An amount in minor units (cents): a JSON integer, never negative. Stripe never sends a
    fraction or an exponent (parsed as Decimal here), nor a string, so those are refused, `100.0` too."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("amount is not an integer number of minor units")
    if value < 0:
        raise ValueError("amount is negative")
    return value
