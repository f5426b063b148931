"""Every write to a wallet starts here: lock it, then book out its expired promotional credits.

So every `balance_after` a write reports is the spendable balance, expired credits already gone,
and the expiry comes before the write in the history (ids sort by creation time).
"""

from __future__ import annotations

from collections.abc import Collection
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


def lock_and_sweep_many(tx: UnitOfWork, user_ids: Collection[str], at: datetime) -> dict[str, WalletState]:
    """lock_and_sweep for several wallets (a batch of spends): all locked first, in sorted user id order
    (LedgerRepository.lock_wallets), then each one's expired credits booked out."""
    states = tx.ledger.lock_wallets(user_ids, at)
    for user_id, state in states.items():
        expiry = expiry_booking(state, at)
        if expiry is not None:
            book(tx, expiry)
            states[user_id] = tx.ledger.lock_wallet(user_id, at)  # held already: the lots as they are now
    return states
