"""Top-ups: buying credits with money. The policy (limits, rate) and the record of each attempt."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from wallet_core.errors import InvalidInput, TooManyTopUps
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
OPEN_STATUSES = frozenset({TopUpStatus.PENDING, TopUpStatus.FAILED})  # its PaymentIntent can still be paid
# What an automatic top-up counts against its rule's monthly limit: charges pending or paid.
CHARGED_STATUSES = frozenset(
    {
        TopUpStatus.PENDING,
        TopUpStatus.SUCCEEDED,
        TopUpStatus.PARTIALLY_REFUNDED,
        TopUpStatus.REFUNDED,
        TopUpStatus.DISPUTED,
        TopUpStatus.DISPUTE_LOST,
    }
)
OPEN_WINDOW = timedelta(hours=24)  # an open top-up older than this no longer counts against the user
RATE_WINDOW = timedelta(hours=1)  # the hourly limit counts the top-ups recorded within this


@dataclass(frozen=True)
class TopUpActivity:
    """What one user started lately, as the top-ups table holds it: the open top-ups (pending or
    failed, created within OPEN_WINDOW) and every top-up created within RATE_WINDOW, whatever became
    of it, each with the creation time of its oldest."""

    open_top_ups: int = 0
    oldest_open_top_up: datetime | None = None
    started: int = 0
    oldest_started: datetime | None = None


@dataclass(frozen=True)
class TopUpLimits:
    """How many top-ups one user may start: at most `max_open` unpaid at a time, at most
    `max_per_hour` new ones an hour. 0 turns a limit off."""

    max_open: int = 5
    max_per_hour: int = 10

    def check(self, activity: TopUpActivity, now: datetime) -> None:
        """Raise TooManyTopUps (saying when to retry) when one more top-up would break a limit."""
        if self.max_per_hour and activity.started >= self.max_per_hour:
            assert activity.oldest_started is not None
            raise TooManyTopUps(
                f"at most {self.max_per_hour} top-ups can be started in an hour",
                _seconds_until(activity.oldest_started + RATE_WINDOW, now),
            )
        if self.max_open and activity.open_top_ups >= self.max_open:
            assert activity.oldest_open_top_up is not None
            raise TooManyTopUps(
                f"at most {self.max_open} top-ups can wait for payment at a time; pay one of them, "
                "or retry when the oldest one stops counting",
                _seconds_until(activity.oldest_open_top_up + OPEN_WINDOW, now),
            )


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


@dataclass(frozen=True)
class TopUpPolicy:
    min_amount: Usd
    max_amount: Usd
    credits_per_usd: Decimal
    limits: TopUpLimits | None = None  # per-user limits; None: none (WALLET_TOP_UP_* sets them for the server)

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
    payment_intent_id: str | None  # None only for an automatic top-up not yet charged at Stripe
    created_at: datetime
    idempotency_key: str | None = None
    refunded: Usd = Usd(0)  # noqa: RUF009 (Usd is frozen) - money Stripe gave back so far
    credits_refunded: Credits = Credits(0)  # noqa: RUF009 - credits taken back for it so far
    automatic: bool = False  # recorded by the wallet's automatic top-up rule (wallet_core.auto_top_up)

    @property
    def intent_id(self) -> str:
        """The PaymentIntent id of a top-up that has one: every top-up but an automatic one not charged
        yet (so every top-up found by its intent, or paid). Raises ValueError for one without."""
        if self.payment_intent_id is None:
            raise ValueError(f"top-up {self.id} has no PaymentIntent yet")
        return self.payment_intent_id
