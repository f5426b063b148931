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
class Refund:
    id: str
    payment_intent_id: str | None
    amount: Usd
    currency: str
    status: str  # succeeded | pending | failed | canceled | requires_action


@dataclass(frozen=True)
class Dispute:
    id: str
    payment_intent_id: str | None
    amount: Usd
    currency: str
    status: str  # warning_needs_response | needs_response | under_review | won | lost | ...


@dataclass(frozen=True)
class PaymentEvent:
    """A verified webhook event, or one reconciliation made up from what Stripe lists.

    `payment_intent` is set for payment_intent.* events; `refunds` for charge.refunded (every refund
    of the charge, when Stripe includes them) and refund.* events; `dispute` for charge.dispute.*."""

    id: str
    type: str
    payment_intent: PaymentIntent | None = None
    refunds: tuple[Refund, ...] = ()
    dispute: Dispute | None = None
    # The PaymentIntent the event is about, for events whose object is a charge, refund or dispute.
    payment_intent_id: str | None = None
    refunds_listed: bool = True  # False when a charge.refunded event did not include its refunds

    @property
    def about(self) -> str | None:
        """The PaymentIntent id this event concerns, if any."""
        if self.payment_intent is not None:
            return self.payment_intent.id
        return self.payment_intent_id
