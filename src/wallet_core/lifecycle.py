"""A top-up's life after the PaymentIntent is created: which Stripe news moves it where.

```
           payment_failed            succeeded
 pending ───────────────▶ failed ─────────────────┐
    │  ╲ canceled                                  ▼
    │   ╲────────────────▶ canceled        succeeded ──refund──▶ partially_refunded ──▶ refunded
    │ amount/currency differ                  │  ▲                     │
    ▼                                  dispute│  │won                  │dispute
 needs_review                                 ▼  │                     ▼
                                            disputed ──lost──▶ dispute_lost
```

Status only moves forward: news that would move it back (a late `payment_failed` after `succeeded`,
a `canceled` after the money arrived) changes nothing. `failed` is not final in Stripe: the buyer
may retry with another card, so a later `succeeded` still grants.
"""

from __future__ import annotations

from wallet_core.topups import TopUpStatus

S = TopUpStatus

_NEXT: dict[TopUpStatus, frozenset[TopUpStatus]] = {
    S.PENDING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELED, S.NEEDS_REVIEW}),
    S.FAILED: frozenset({S.SUCCEEDED, S.CANCELED, S.NEEDS_REVIEW}),
    S.SUCCEEDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    S.DISPUTED: frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTE_LOST}),
    S.REFUNDED: frozenset({S.DISPUTED}),
    S.CANCELED: frozenset(),
    S.NEEDS_REVIEW: frozenset(),
    S.DISPUTE_LOST: frozenset(),
}


def can_move(current: TopUpStatus, to: TopUpStatus) -> bool:
    return to in _NEXT[current]


def paid(status: TopUpStatus) -> bool:
    """True once the money arrived (and the credits were granted)."""
    return status in (S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED, S.DISPUTE_LOST)
