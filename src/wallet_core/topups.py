"""Top-ups: buying credits with money. The policy (limits, rate) and the record of each attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from wallet_core.errors import InvalidInput
from wallet_core.money import Credits, Usd, credits_for


class TopUpStatus(StrEnum):
    PENDING = "pending"  # PaymentIntent created, money not yet received
    SUCCEEDED = "succeeded"  # money received, credits granted
    NEEDS_REVIEW = "needs_review"  # Stripe reported an amount or currency we did not ask for
    FAILED = "failed"  # the last payment attempt failed; the buyer may still retry
    CANCELED = "canceled"  # the PaymentIntent was canceled; nothing will be paid
    PARTIALLY_REFUNDED = "partially_refunded"  # some of the money went back, credits taken back in proportion
    REFUNDED = "refunded"  # all of the money went back
    DISPUTED = "disputed"  # the buyer's bank disputes the payment; its credits are frozen
    DISPUTE_LOST = "dispute_lost"  # the dispute was lost; the frozen credits are gone


CURRENCY = "usd"


@dataclass(frozen=True)
class TopUpPolicy:
    min_amount: Usd
    max_amount: Usd
    credits_per_usd: Decimal

    def check(self, amount: Usd) -> Credits:
        """The credits `amount` buys, or InvalidInput saying which limit it breaks."""
        if amount < self.min_amount:
            raise InvalidInput("amount_usd", f"must be at least {self.min_amount} USD")
        if amount > self.max_amount:
            raise InvalidInput("amount_usd", f"must be at most {self.max_amount} USD")
        credits = credits_for(amount, self.credits_per_usd)
        if not credits.is_positive():
            raise InvalidInput("amount_usd", "buys no credits at the configured rate")
        return credits


@dataclass(frozen=True)
class TopUp:
    id: str
    user_id: str
    amount: Usd
    currency: str
    credits: Credits
    status: TopUpStatus
    payment_intent_id: str
    created_at: datetime
    idempotency_key: str | None = None
    refunded: Usd = Usd(0)  # noqa: RUF009 (Usd is frozen) - money Stripe gave back so far
    credits_refunded: Credits = Credits(0)  # noqa: RUF009 - credits taken back for it so far
