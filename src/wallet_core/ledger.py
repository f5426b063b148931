"""The double-entry credit ledger.

Every movement of credits is one transaction made of postings between accounts, and the postings of
a transaction always sum to zero. A user has two accounts: `wallet` (spendable credits) and `held`
(credits reserved by open holds). The system accounts are where credits come from and go to:
`stripe_funding` (paid credits), `promotions` (promotional credits), `revenue` (spent credits) and
`expired` (promotional credits that ran out). A user's account balance is the sum of its postings;
the ledger also keeps it on the account row, updated in the same database transaction.

Credits sit in lots: each top-up makes a paid lot, each admin grant a promotional lot that may
expire. Spending takes promotional credits first, the soonest-expiring first, then paid credits,
oldest first. Postings on a user's accounts name the lot they touch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from wallet_core.errors import InsufficientCredits
from wallet_core.money import Credits


class TransactionKind(StrEnum):
    TOP_UP = "top_up"  # credits bought with a Stripe payment
    GRANT = "grant"  # promotional credits given by an admin
    SPEND = "spend"  # credits used up
    HOLD = "hold"  # credits reserved for a cost not yet known
    CAPTURE = "capture"  # a hold turned into a spend (any remainder released)
    RELEASE = "release"  # a hold given back
    EXPIRY = "expiry"  # promotional credits past their expiry, booked out
    REFUND = "refund"  # paid credits taken back because Stripe refunded the payment
    DISPUTE = "dispute"  # credits frozen while the buyer's bank disputes the payment
    DISPUTE_WON = "dispute_won"  # frozen credits given back
    DISPUTE_LOST = "dispute_lost"  # frozen credits gone with the money


# The only movements that may take a lot below zero: credits taken back (or given back) for money that
# went back to the buyer, after they were spent (wallet_core.refunds, docs/ledger.md).
TAKE_BACK_KINDS = frozenset({TransactionKind.REFUND, TransactionKind.DISPUTE, TransactionKind.DISPUTE_WON})
# Every movement about money going back to the buyer (refunds, disputes and how they closed).
MONEY_BACK_KINDS = TAKE_BACK_KINDS | {TransactionKind.DISPUTE_LOST}


def explained_debt(remaining: Credits, taken_back: Credits) -> tuple[Credits, Credits]:
    """A lot's debt split into what take-backs explain and what nothing does. `taken_back`: the net
    credits refund and dispute postings took from the lot."""
    debt = max(0, -remaining.minor)
    explained = min(debt, max(0, taken_back.minor))
    return Credits(explained), Credits(debt - explained)


class Account(StrEnum):
    WALLET = "wallet"  # per user: spendable credits
    HELD = "held"  # per user: reserved by open holds
    STRIPE_FUNDING = "stripe_funding"
    PROMOTIONS = "promotions"
    REVENUE = "revenue"
    EXPIRED = "expired"
    DISPUTED = "disputed"  # credits frozen by open disputes

    @property
    def per_user(self) -> bool:
        return self in (Account.WALLET, Account.HELD)


class CreditKind(StrEnum):
    PAID = "paid"
    PROMOTIONAL = "promotional"


@dataclass(frozen=True)
class Posting:
    """One leg of a transaction: `amount` added to `account` (negative takes away)."""

    account: Account
    amount: Credits
    user_id: str | None = None
    lot_id: str | None = None


@dataclass(frozen=True)
class Lot:
    """A batch of credits from one top-up or grant: what is left, what holds reserve, when it ends."""

    id: str
    user_id: str
    kind: CreditKind
    granted: Credits
    remaining: Credits
    held: Credits
    created_at: datetime
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def spend_order(self) -> tuple[int, int, datetime, datetime, str]:
        """Promotional before paid; soonest expiry first (never-expiring last); then oldest."""
        expires = self.expires_at or self.created_at
        return (
            0 if self.kind is CreditKind.PROMOTIONAL else 1,
            0 if self.expires_at is not None else 1,
            expires,
            self.created_at,
            self.id,
        )


@dataclass(frozen=True)
class LotChange:
    lot_id: str
    remaining: Credits = Credits(0)  # noqa: RUF009 (Credits is frozen)
    held: Credits = Credits(0)  # noqa: RUF009


@dataclass(frozen=True)
class WalletState:
    """A user's accounts and live lots, read under the wallet's lock."""

    user_id: str
    available: Credits
    held: Credits
    lots: tuple[Lot, ...] = ()

    def spendable(self, now: datetime) -> Credits:
        return Credits(sum(lot.remaining.minor for lot in self.lots if not lot.expired(now)))

    @property
    def debts(self) -> tuple[Lot, ...]:
        """Lots gone negative: credits taken back (refund, dispute) after they were spent."""
        return tuple(lot for lot in self.lots if lot.remaining.minor < 0)

    def expired_lots(self, now: datetime) -> list[Lot]:
        return [lot for lot in self.lots if lot.expired(now) and lot.remaining.is_positive()]


def allocate(lots: Iterable[Lot], amount: Credits, now: datetime) -> list[tuple[Lot, Credits]]:
    """Which lots pay for `amount`, in spending order. Raises InsufficientCredits when they cannot."""
    lots = [lot for lot in lots if not lot.expired(now)]
    debt = -sum(min(0, lot.remaining.minor) for lot in lots)
    if debt:
        net = sum(lot.remaining.minor for lot in lots)
        raise InsufficientCredits(
            f"the wallet has {Credits(max(0, net))} spendable credits and owes {Credits(debt)} for refunded or "
            "disputed payments; the next top-up repays it first"
        )
    plan: list[tuple[Lot, Credits]] = []
    left = amount.minor
    for lot in sorted((lot for lot in lots if not lot.expired(now)), key=Lot.spend_order):
        if left == 0:
            break
        take = min(left, lot.remaining.minor)
        if take > 0:
            plan.append((lot, Credits(take)))
            left -= take
    if left > 0:
        have = amount.minor - left
        raise InsufficientCredits(f"the wallet has {Credits(have)} spendable credits, {amount} are needed")
    return plan


@dataclass(frozen=True)
class Booking:
    """A transaction the ledger is asked to record, with everything it changes.

    `reference_id` is unique across the ledger: a second booking with the same reference is refused,
    which is what makes a webhook redelivery or a retried request move nothing more.
    """

    id: str
    user_id: str
    kind: TransactionKind
    reference_id: str
    created_at: datetime
    postings: tuple[Posting, ...]
    reason: str | None = None
    actor: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    hold_id: str | None = None
    new_lots: tuple[Lot, ...] = ()
    lot_changes: tuple[LotChange, ...] = ()

    def __post_init__(self) -> None:
        if sum(p.amount.minor for p in self.postings) != 0:
            raise ValueError(f"unbalanced booking {self.id}: postings must sum to zero")
        for p in self.postings:
            if p.account.per_user != (p.user_id is not None):
                raise ValueError(f"posting on {p.account} must {'' if p.account.per_user else 'not '}name a user")
            if p.user_id is not None and p.user_id != self.user_id:
                raise ValueError("a booking moves one user's credits only")

    def _sum(self, account: Account) -> Credits:
        return Credits(sum(p.amount.minor for p in self.postings if p.account is account))

    @property
    def credits(self) -> Credits:
        """The change to the user's spendable (wallet) balance."""
        return self._sum(Account.WALLET)

    @property
    def held_change(self) -> Credits:
        return self._sum(Account.HELD)


@dataclass(frozen=True)
class CreditTransaction:
    """A recorded transaction, as the user's history shows it."""

    id: str
    user_id: str
    kind: TransactionKind
    credits: Credits  # change to the spendable balance (negative for spend, hold, expiry, refund)
    held_change: Credits  # change to the held balance
    balance_after: Credits  # spendable balance right after
    reference_id: str
    created_at: datetime
    reason: str | None = None
    actor: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    hold_id: str | None = None


@dataclass(frozen=True)
class WalletView:
    user_id: str
    balance: Credits  # spendable now (promotional credits past expiry do not count)
    held: Credits = Credits(0)  # noqa: RUF009
    transactions: list[CreditTransaction] = field(default_factory=list)

    @property
    def debt(self) -> Credits:
        """What the user owes (else 0): `balance` goes negative when Stripe took back (refund, lost or
        open dispute) credits the user had already spent, and spending is refused until new credits
        repay it."""
        return Credits(max(0, -self.balance.minor))


@dataclass(frozen=True)
class TransactionCursor:
    """Where a page of history ends: the last row's time and id (rows are newest first)."""

    created_at: datetime
    id: str
