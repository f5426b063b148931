"""An admin sets, reads or removes a wallet's low-balance threshold (the alert rules:
wallet_core.alerts). Setting one fires nothing: the wallet's level is set to where its balance stands."""

from __future__ import annotations

from dataclasses import dataclass

from wallet_core.alerts import AlertState, BalanceLevel, check_threshold, level_of
from wallet_core.clock import Clock, utc_now
from wallet_core.ids import check_user_id
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory
from wallet_core.use_cases.wallet_lock import lock_and_sweep


@dataclass(frozen=True)
class AlertView:
    user_id: str
    low_balance_credits: Credits | None  # the wallet's own threshold (None: the default applies)
    default_low_balance_credits: Credits | None  # WALLET_LOW_BALANCE_CREDITS
    level: BalanceLevel | None  # where the balance stood at the last change (None: no change seen yet)

    @property
    def effective(self) -> Credits | None:
        return self.low_balance_credits if self.low_balance_credits is not None else self.default_low_balance_credits


def set_alert(*, user_id: str, low_balance_credits: object, uow: UnitOfWorkFactory, now: Clock = utc_now) -> AlertView:
    user_id = check_user_id(user_id)
    threshold = check_threshold(low_balance_credits)
    return _store(user_id, threshold, uow, now)


def clear_alert(*, user_id: str, uow: UnitOfWorkFactory, now: Clock = utc_now) -> AlertView:
    """Remove the wallet's own threshold: the default (if any) applies again."""
    return _store(check_user_id(user_id), None, uow, now)


def get_alert(*, user_id: str, uow: UnitOfWorkFactory) -> AlertView:
    user_id = check_user_id(user_id)
    with uow(read_only=True) as tx:
        return _view(tx, user_id, tx.alerts.get(user_id))


def _store(user_id: str, threshold: Credits | None, uow: UnitOfWorkFactory, now: Clock) -> AlertView:
    with uow() as tx:
        at = now()
        lock_and_sweep(tx, user_id, at)  # the wallet's lock: alert levels change under it
        spendable, _ = tx.ledger.balances(user_id, at)
        effective = threshold if threshold is not None else tx.low_balance_default
        stored = AlertState(threshold, level_of(spendable, effective))
        tx.alerts.set(user_id, stored, at)
        view = _view(tx, user_id, stored)
        tx.commit()
    return view


def _view(tx: UnitOfWork, user_id: str, state: AlertState) -> AlertView:
    return AlertView(user_id, state.low_balance, tx.low_balance_default, state.level)
