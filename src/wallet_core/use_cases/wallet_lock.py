"""Every write to a wallet starts here: lock it, then book out its expired promotional credits.

So every `balance_after` a write reports is the spendable balance, expired credits already gone,
and the expiry comes before the write in the history (ids sort by creation time).
"""

from __future__ import annotations

from datetime import datetime

from wallet_core.bookings import expiry_booking
from wallet_core.ledger import WalletState
from wallet_core.ports import LedgerRepository


def lock_and_sweep(ledger: LedgerRepository, user_id: str, now: datetime) -> WalletState:
    state = ledger.lock_wallet(user_id)
    expiry = expiry_booking(state, now)
    if expiry is None:
        return state
    ledger.record(expiry)
    return ledger.lock_wallet(user_id)
