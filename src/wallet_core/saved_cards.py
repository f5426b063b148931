"""Saving a card: a user's Stripe Customer, the SetupIntent that saves a card for off-session
payments (automatic top-up), and the card the wallet remembers.

The card itself stays at Stripe: the wallet keeps only the PaymentMethod id and what a user needs
to recognise it (brand, last four digits, expiry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class SavedCard:
    """The one card a user saved for payments made without them (one per user)."""

    user_id: str
    customer_id: str  # the user's Stripe Customer, to which the PaymentMethod is attached
    payment_method_id: str
    brand: str  # e.g. "visa"
    last4: str
    exp_month: int
    exp_year: int
    saved_at: datetime


@dataclass(frozen=True)
class SetupIntent:
    """A Stripe SetupIntent, in our words. `user_id` comes from its metadata (payments.META_USER_ID;
    None if it has none: not one the wallet created). `client_secret` lets the user's browser confirm it; never logged,
    never in a repr."""

    id: str
    customer_id: str
    client_secret: str | None = field(repr=False)
    status: str  # requires_payment_method | requires_confirmation | requires_action | processing | succeeded | canceled
    payment_method_id: str | None
    user_id: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class CardDetails:
    """What Stripe says about a card PaymentMethod."""

    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    # The Customer it is attached to now; None when attached to none (never, or detached: a card the
    # wallet replaced or forgot, which can never be charged again).
    customer_id: str | None = None
