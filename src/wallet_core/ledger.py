"""The double-entry credit ledger.

Every movement of credits is one transaction made of postings between accounts, and the postings of
a transaction always sum to zero. A user has two accounts: `wallet` (spendable credits) and `held`
(credits reserved by open holds). The system accounts are where credits come from and go to:
`stripe_funding` (paid credits), `promotions` (promotional credits), `revenue` (spent credits) and
`expired` (promotional credits that ran out). A user's account balance is the sum of its postings;
the ledger also keeps it on the account row, updated in the same database transaction.

Credits sit in lots: each top-up makes a paid lot, each admin grant a promotional lot (or a paid one,
for money received outside Stripe) that may expire, and that may start counting only from a future
`effective_at`. Spending takes promotional credits first (lowest priority number first, then the
soonest-expiring, then the oldest), then paid credits in the same order. Postings on a user's accounts
name the lot they touch, so every transaction says which lots paid (`sources_of`).

Nothing is edited or deleted: a correction is a new transaction of kind `revert` that names the one it
reverts (wallet_core.reverts).
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
    REVERT = "revert"  # a correction: undoes a grant, spend or capture (wallet_core.reverts)


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
    OFFLINE_FUNDING = "offline_funding"  # paid credits an admin granted for money received outside Stripe
    PROMOTIONS = "promotions"
    REVENUE = "revenue"
    EXPIRED = "expired"
    DISPUTED = "disputed"  # credits frozen by open disputes

    @property
    def per_user(self) -> bool:
        return self in (Account.WALLET, Account.HELD)


class CreditKind(StrEnum):
    """A lot's category: paid (bought, with Stripe or outside it) or promotional (given)."""

    PAID = "paid"
    PROMOTIONAL = "promotional"


DEFAULT_PRIORITY = 50  # a lot's place among lots of its category: lower numbers are spent first
MIN_PRIORITY, MAX_PRIORITY = 0, 100


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
    priority: int = DEFAULT_PRIORITY
    effective_at: datetime | None = None  # spendable only from then (None: from its creation)
    source_transaction_id: str | None = None  # the top-up or grant that made it

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def pending(self, now: datetime) -> bool:
        """Granted, but not spendable before its `effective_at`."""
        return self.effective_at is not None and self.effective_at > now

    def spendable(self, now: datetime) -> bool:
        return not self.expired(now) and not self.pending(now)

    def spend_order(self) -> tuple[int, int, int, datetime, datetime, str]:
        """Promotional before paid; within each, lower priority number first; then soonest expiry
        (never-expiring last); then oldest."""
        expires = self.expires_at or self.created_at
        return (
            0 if self.kind is CreditKind.PROMOTIONAL else 1,
            self.priority,
            0 if self.expires_at is not None else 1,
            expires,
            self.created_at,
            self.id,
        )


@dataclass(frozen=True)
class LotChange:
    """What a booking changes on an existing lot: amounts added to what it has and holds, and, for a
    revert of the grant that made it, the time the lot ends (its expiry, if that is sooner)."""

    lot_id: str
    remaining: Credits = Credits(0)  # noqa: RUF009 (Credits is frozen)
    held: Credits = Credits(0)  # noqa: RUF009
    ends_at: datetime | None = None


@dataclass(frozen=True)
class WalletState:
    """A user's accounts and live lots, read under the wallet's lock."""

    user_id: str
    available: Credits
    held: Credits
    lots: tuple[Lot, ...] = ()

    def spendable(self, now: datetime) -> Credits:
        return Credits(sum(lot.remaining.minor for lot in self.lots if lot.spendable(now)))

    @property
    def debts(self) -> tuple[Lot, ...]:
        """Lots gone negative: credits taken back (refund, dispute) after they were spent."""
        return tuple(lot for lot in self.lots if lot.remaining.minor < 0)

    def expired_lots(self, now: datetime) -> list[Lot]:
        return [lot for lot in self.lots if lot.expired(now) and lot.remaining.is_positive()]


def allocate(lots: Iterable[Lot], amount: Credits, now: datetime) -> list[tuple[Lot, Credits]]:
    """Which lots pay for `amount`, in spending order. Raises InsufficientCredits when they cannot.
    Lots past expiry or not yet effective pay nothing; a lot in debt (however it came) blocks spending."""
    lots = [lot for lot in lots if lot.spendable(now) or lot.remaining.minor < 0]
    debt = -sum(min(0, lot.remaining.minor) for lot in lots)
    if debt:
        net = sum(lot.remaining.minor for lot in lots)
        raise InsufficientCredits(
            f"the wallet has {Credits(max(0, net))} spendable credits and owes {Credits(debt)} for refunded or "
            "disputed payments; the next top-up repays it first"
        )
    plan: list[tuple[Lot, Credits]] = []
    left = amount.minor
    for lot in sorted(lots, key=Lot.spend_order):
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
    reverts: str | None = None  # the transaction this one reverts (kind REVERT only)

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

    def sources(self, categories: Mapping[str, CreditKind]) -> tuple[Source, ...]:
        """Which lots paid, or were paid back (see sources_of); `categories`: each lot's category."""
        return sources_of(self.kind, self.postings, categories)


@dataclass(frozen=True)
class Source:
    """One lot's part in a transaction: the credits it paid (spend, hold, capture, expiry, refund) or
    was paid back or given (grant, top-up, release, revert). Always positive."""

    lot_id: str
    category: CreditKind
    credits: Credits


def categories(lots: Iterable[Lot]) -> dict[str, CreditKind]:
    """Each lot's category by lot id: what sources_of needs."""
    return {lot.id: lot.kind for lot in lots}


def sources_of(
    kind: TransactionKind, postings: Iterable[Posting], categories: Mapping[str, CreditKind]
) -> tuple[Source, ...]:
    """Which lots a transaction moved credits from or to, in the order its postings name them.

    For most kinds that is each lot's net change in the spendable (`wallet`) account. A capture moves
    credits out of `held`: the captured credits came from the hold's lots in the hold's order (the
    order of the capture's `held` postings), the rest went back; so its sources are the captured part
    only. A lot whose net change is zero (a hold's own reservation moves within the user) is left out."""
    legs = list(postings)
    net: dict[str, int] = {}
    if kind is TransactionKind.CAPTURE:
        left = sum(p.amount.minor for p in legs if p.account is Account.REVENUE)
        for p in legs:
            if p.account is Account.HELD and p.lot_id is not None and left > 0:
                take = min(left, -p.amount.minor)
                net[p.lot_id] = net.get(p.lot_id, 0) + take
                left -= take
    else:
        for p in legs:
            if p.account is Account.WALLET and p.lot_id is not None:
                net[p.lot_id] = net.get(p.lot_id, 0) + p.amount.minor
    return tuple(
        Source(lot_id, categories.get(lot_id, CreditKind.PAID), Credits(abs(amount)))
        for lot_id, amount in net.items()
        if amount
    )


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
    reverts: str | None = None  # the transaction this one reverts
    reverted_by: str | None = None  # the revert of this one, if any
    sources: tuple[Source, ...] = ()  # which lots paid or were paid back (see sources_of)


@dataclass(frozen=True)
class WalletView:
    user_id: str
    balance: Credits  # spendable now (credits past expiry or not yet effective do not count)
    held: Credits = Credits(0)  # noqa: RUF009
    transactions: list[CreditTransaction] = field(default_factory=list)
    pending: Credits = Credits(0)  # noqa: RUF009  (granted with an effective_at still ahead)
    # Spendable credits by category (they add up to `balance`; a debt shows in `paid`).
    by_category: Mapping[CreditKind, Credits] = field(default_factory=dict)
    # Every lot with something remaining, held or pending (not those past expiry), in spending order.
    lots: tuple[Lot, ...] = ()

    @classmethod
    def of_lots(
        cls, user_id: str, lots: Iterable[Lot], *, held: Credits, now: datetime,
        transactions: list[CreditTransaction] | None = None,
    ) -> WalletView:
        """The view of a wallet from its live lots (remaining, held or pending) as of `now`."""
        shown = sorted((lot for lot in lots if not lot.expired(now) or lot.remaining.minor < 0), key=Lot.spend_order)
        by_category = {kind: Credits(0) for kind in CreditKind}
        pending = 0
        for lot in shown:
            if lot.pending(now):
                pending += lot.remaining.minor
            else:
                by_category[lot.kind] = by_category[lot.kind] + lot.remaining
        balance = Credits(sum(c.minor for c in by_category.values()))
        return cls(
            user_id=user_id, balance=balance, held=held, transactions=list(transactions or []),
            pending=Credits(pending), by_category=by_category, lots=tuple(shown),
        )

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
