"""What the payment provider tells us, in our own words (filled in by the gateway adapter)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wallet_core.money import Usd

# Metadata keys we put on every PaymentIntent we create, and read back from webhooks.
META_TOP_UP_ID = "wallet_top_up_id"
META_USER_ID = "wallet_user_id"


@dataclass(frozen=True)
class PaymentIntentRequest:
    amount: Usd
    currency: str
    metadata: dict[str, str]
    idempotency_key: str


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    amount: Usd
    currency: str
    status: str
    metadata: dict[str, str] = field(default_factory=dict)
    # What Stripe says it received; None when the provider does not report it.
    amount_received: Usd | None = None
    # Lets the buyer's browser confirm the payment. Never logged, never shown in a repr.
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PaymentEvent:
    """A verified webhook event. `payment_intent` is set for payment_intent.* events."""

    id: str
    type: str
    payment_intent: PaymentIntent | None = None
