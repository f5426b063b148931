"""The expiry run: book out promotional credits past their expiry and release holds nobody settled.

Safe to run at any time and from several places: each wallet is handled under its lock in a unit of
work of its own, and a wallet with nothing due is left untouched. Spending books a wallet's expired
credits out on its own as well, so balances never count expired credits whether or not this ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from wallet_core.bookings import expiry_booking
from wallet_core.clock import Clock, utc_now
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases.holds import expire_hold
from wallet_core.use_cases.recording import book

BATCH = 500


@dataclass(frozen=True)
class ExpiryReport:
    wallets_expired: int  # wallets whose expired promotional credits were booked out
    credits_expired: Credits  # all credits that expired, including held ones of released holds
    holds_released: int


def expire_credits(*, uow: UnitOfWorkFactory, now: Clock = utc_now, batch: int = BATCH) -> ExpiryReport:
    """Wallets first, then holds: releasing a hold gives credits of a lot that expired meanwhile
    straight to `expired` (see settle_hold_booking), so nothing is left for a second pass."""
    at = now()
    wallets, total, holds = 0, 0, 0
    while True:
        with uow(read_only=True) as tx:
            users = tx.ledger.users_with_expired_credits(at, batch)
        for user_id in users:
            with uow() as tx:
                booking = expiry_booking(tx.ledger.lock_wallet(user_id, at), at)
                if booking is not None:
                    book(tx, booking)
                    tx.commit()
                    wallets += 1
                    total -= booking.credits.minor
        if len(users) < batch:
            break
    while True:
        with uow(read_only=True) as tx:
            due = tx.holds.expired_open(at, batch)
        for hold in due:
            with uow() as tx:
                released = expire_hold(hold, tx=tx, at=at)
                if released is not None:
                    tx.commit()
                    holds += 1
                    # what left `held` but did not go back to the wallet went to `expired`
                    total += -released.held_change.minor - released.credits.minor
        if len(due) < batch:
            break
    return ExpiryReport(wallets, Credits(total), holds)
