"""The types of outbound event (wallet_core.outbound_events), on their own so every module can name them."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    CREDITS_GRANTED = "credits.granted"  # an admin grant or a paid top-up
    CREDITS_SPENT = "credits.spent"
    CREDITS_EXPIRED = "credits.expired"
    CREDITS_REVERTED = "credits.reverted"
    HOLD_CREATED = "hold.created"
    HOLD_CAPTURED = "hold.captured"
    HOLD_RELEASED = "hold.released"
    HOLD_EXPIRED = "hold.expired"
    TOP_UP_SUCCEEDED = "top_up.succeeded"
    TOP_UP_FAILED = "top_up.failed"
    TOP_UP_REFUNDED = "top_up.refunded"
    AUTO_TOP_UP_SUCCEEDED = "auto_top_up.succeeded"  # an automatic top-up was paid: its credits granted
    AUTO_TOP_UP_FAILED = "auto_top_up.failed"  # its card was declined or needed the customer
    AUTO_TOP_UP_DISABLED = "auto_top_up.disabled"  # the rule stopped after consecutive failures
    DISPUTE_OPENED = "dispute.opened"
    DISPUTE_CLOSED = "dispute.closed"
    BALANCE_LOW = "wallet.balance_low"
    DEPLETED = "wallet.depleted"
    RECOVERED = "wallet.recovered"


EVENT_TYPES = frozenset(t.value for t in EventType)
