from __future__ import annotations

from wallet_core.ids import check_user_id
from wallet_core.ledger import WalletView
from wallet_core.ports import UnitOfWorkFactory

RECENT = 20


def read_wallet(*, user_id: str, uow: UnitOfWorkFactory, recent: int = RECENT) -> WalletView:
    """The balance and the most recent transactions, newest first, read in one transaction."""
    user_id = check_user_id(user_id)
    with uow() as tx:
        return WalletView(
            user_id=user_id,
            balance=tx.ledger.balance(user_id),
            transactions=tx.ledger.recent_transactions(user_id, max(0, recent)) if recent > 0 else [],
        )
