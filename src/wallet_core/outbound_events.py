"""Outbound events: what the wallet tells the host application, written in the same unit of work as
the change they describe (the transactional outbox), then delivered by a worker or pulled by cursor.

Every event: `{"id": "evt_...", "type": ..., "created_at": ISO 8601, "user_id": ..., "data": {...}}`.
`data` carries the ids a consumer needs to act on (transaction, top-up, PaymentIntent, hold) and the
wallet's spendable balance after the change, as decimal strings like every amount the API answers.
docs/events.md lists each type with an example.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from wallet_core.event_types import EventType
from wallet_core.ids import new_id
from wallet_core.ledger import CreditTransaction, TransactionKind

# What a ledger transaction of each kind is, as an event (a hold's release is hold.expired when the
# expiry run released it: the caller says so). Refunds and disputes are told as top-up and dispute events.
_BY_KIND = {
    TransactionKind.TOP_UP: EventType.CREDITS_GRANTED,
    TransactionKind.GRANT: EventType.CREDITS_GRANTED,
    TransactionKind.SPEND: EventType.CREDITS_SPENT,
    TransactionKind.EXPIRY: EventType.CREDITS_EXPIRED,
    TransactionKind.REVERT: EventType.CREDITS_REVERTED,
    TransactionKind.HOLD: EventType.HOLD_CREATED,
    TransactionKind.CAPTURE: EventType.HOLD_CAPTURED,
    TransactionKind.RELEASE: EventType.HOLD_RELEASED,
    TransactionKind.REFUND: EventType.TOP_UP_REFUNDED,
    TransactionKind.DISPUTE: EventType.DISPUTE_OPENED,
    TransactionKind.DISPUTE_WON: EventType.DISPUTE_CLOSED,
    TransactionKind.DISPUTE_LOST: EventType.DISPUTE_CLOSED,
}


@dataclass(frozen=True)
class WalletEvent:
    id: str
    type: EventType
    created_at: datetime
    user_id: str
    data: Mapping[str, object] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        """The event as it is delivered and listed."""
        return {
            "id": self.id,
            "type": self.type.value,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "user_id": self.user_id,
            "data": dict(self.data),
        }


def new_event(type_: EventType, user_id: str, at: datetime, data: Mapping[str, object]) -> WalletEvent:
    return WalletEvent(new_id("evt"), type_, at, user_id, dict(data))


def transaction_data(booked: CreditTransaction) -> dict[str, object]:
    """What every event about a ledger transaction says of it."""
    data: dict[str, object] = {
        "transaction_id": booked.id,
        "kind": booked.kind.value,
        "credits": str(booked.credits),
        "held_change": str(booked.held_change),
        "balance": str(booked.balance_after),
        "reason": booked.reason,
    }
    if booked.hold_id is not None:
        data["hold_id"] = booked.hold_id
    if booked.reverts is not None:
        data["reverts"] = booked.reverts
    if booked.metadata:
        data["metadata"] = dict(booked.metadata)
    return data


def event_for_transaction(
    booked: CreditTransaction, type_: EventType | None = None, extra: Mapping[str, object] | None = None
) -> WalletEvent | None:
    """The event a recorded transaction means (None for a kind no consumer acts on)."""
    kind = type_ or _BY_KIND.get(booked.kind)
    if kind is None:
        return None
    return new_event(kind, booked.user_id, booked.created_at, {**transaction_data(booked), **(extra or {})})
