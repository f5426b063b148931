"""Every write to a wallet starts here: lock it, then book out its expired promotional credits.

So every `balance_after` a write reports is the spendable balance, expired credits already gone,
and the expiry comes before the write in the history (ids sort by creation time).
"""

from __future__ import annotations

from datetime import datetime

from wallet_core.bookings import expiry_booking
from wallet_core.ledger import WalletState
from wallet_core.ports import UnitOfWork
from wallet_core.use_cases.recording import book


def lock_and_sweep(tx: UnitOfWork, user_id: str, at: datetime, *, crediting: bool = False) -> WalletState:
    """Lock `user_id`'s wallet and book out the promotional credits expired by `at`. `crediting`: the
    caller only adds credits, so it needs just the lots in debt (to repay) and the expired ones (to book
    out), not every live lot: cheap for wallets with many top-ups."""

    ledger = tx.ledger

    def lock() -> WalletState:
        return ledger.lock_wallet_for_credit(user_id, at) if crediting else ledger.lock_wallet(user_id, at)

    state = lock()
    expiry = expiry_booking(state, at)
    if expiry is None:
        return state
    book(tx, expiry)
    return lock()
