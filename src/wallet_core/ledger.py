"""The credit ledger: every movement of credits is one transaction, tied to a reference id."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from wallet_core.money import Credits


class TransactionKind(StrEnum):
    TOP_UP = "top_up"  # credits bought with a Stripe payment
    GRANT = "grant"  # credits given by an admin


@dataclass(frozen=True)
class NewTransaction:
    """A movement the ledger is asked to book.

    `reference_id` is unique across the ledger: a second movement with the same reference is refused,
    which is what makes a webhook redelivery or a retried grant book nothing more.
    """

    id: str
    user_id: str
    kind: TransactionKind
    credits: Credits
    reference_id: str
    created_at: datetime
    reason: str | None = None
    actor: str | None = None


@dataclass(frozen=True)
class CreditTransaction:
    """A booked movement, with the wallet balance right after it."""

    id: str
    user_id: str
    kind: TransactionKind
    credits: Credits
    balance_after: Credits
    reference_id: str
    created_at: datetime
    reason: str | None = None
    actor: str | None = None


@dataclass(frozen=True)
class WalletView:
    user_id: str
    balance: Credits
    transactions: list[CreditTransaction] = field(default_factory=list)
