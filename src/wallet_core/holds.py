"""Holds: credits reserved before the final cost is known, then captured or released."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from wallet_core.money import Credits

DEFAULT_HOLD_TTL = timedelta(minutes=15)
MAX_HOLD_TTL = timedelta(days=7)


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"  # released by the expiry run because nobody captured it in time


@dataclass(frozen=True)
class Hold:
    id: str
    user_id: str
    amount: Credits
    status: HoldStatus
    created_at: datetime
    expires_at: datetime
    # Which lots the reserved credits came from, in spending order.
    allocations: tuple[tuple[str, Credits], ...]
    reference_id: str
    captured: Credits = Credits(0)  # noqa: RUF009 (Credits is frozen)
    reason: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    @property
    def ttl(self) -> timedelta:
        """How long the hold was placed for."""
        return self.expires_at - self.created_at
