"""AlertSettings over one SQLAlchemy connection: a wallet's own low-balance threshold and the alert
level its balance was last seen at, two columns of its `wallets` row (0008).

Every booking asks for them (wallet_core.use_cases.recording.note_balance), so they must cost nothing
there: the wallet's lock (SqlLedgerRepository.lock_wallet, lock_wallet_for_credit) reads them with the
row it locks and leaves them in `locked`, which this repository shares with the ledger's, and `get`
answers from it. While the lock is held nobody else can change them. The unit of work forgets them when
its transaction ends (commit or rollback), as the lock is then released. Cost in statements: get 0 for
a wallet locked in this transaction, else 1; set 1 (an upsert: it creates the wallet row like the
lock does, and locks it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.sql.driver import Driver, Sql
from wallet_core.alerts import AlertState, BalanceLevel
from wallet_core.money import Credits

_ALERTS_OF = Sql.of("SELECT low_balance, alert_level FROM wallets WHERE user_id = :p_user")
_SET_ALERTS = Sql.of(
    """
    INSERT INTO wallets (user_id, available, held, updated_at, low_balance, alert_level)
    VALUES (:p_user, 0, 0, :p_at, :p_low_balance, :p_level)
    ON CONFLICT (user_id) DO UPDATE SET low_balance = excluded.low_balance, alert_level = excluded.alert_level,
        updated_at = excluded.updated_at
    """
)


def alert_state(low_balance: Any, level: Any) -> AlertState:
    """The settings as the `low_balance` and `alert_level` columns hold them."""
    return AlertState(
        None if low_balance is None else Credits(int(low_balance)),
        None if level is None else BalanceLevel(level),
    )


class SqlAlertSettings:
    """The alert settings as seen through the unit of work's driver connection."""

    def __init__(self, driver: Driver, locked: dict[str, AlertState]) -> None:
        self._driver = driver
        self._locked = locked  # user id -> settings read by this transaction's lock of the wallet

    def get(self, user_id: str) -> AlertState:
        known = self._locked.get(user_id)
        if known is not None:
            return known
        row = self._driver.one(_ALERTS_OF, {"p_user": user_id})
        return AlertState() if row is None else alert_state(row[0], row[1])

    def set(self, user_id: str, state: AlertState, at: datetime) -> None:
        self._driver.run(
            _SET_ALERTS,
            {
                "p_user": user_id,
                "p_at": self._driver.at(at),
                "p_low_balance": None if state.low_balance is None else state.low_balance.minor,
                "p_level": None if state.level is None else state.level.value,
            },
        )
        self._locked[user_id] = state  # the upsert locked the row: nobody else changes it now
