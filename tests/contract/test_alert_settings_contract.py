"""The AlertSettings contract (tx.alerts) for every backend: a wallet's own low-balance threshold and
the level its balance was last seen at, kept with the wallet."""

from __future__ import annotations

from tests.contract.builders import T0, Uow, balances, c, credit
from wallet_core.alerts import AlertState, BalanceLevel
from wallet_core.ledger import Account
from wallet_core.money import Credits

LOW = AlertState(Credits(500), BalanceLevel.LOW)


def alerts(uow: Uow, user: str = "alice") -> AlertState:
    with uow(read_only=True) as tx:
        return tx.alerts.get(user)


def test_a_wallet_without_settings_has_none(uow: Uow) -> None:
    assert alerts(uow, "nobody") == AlertState()
    with uow() as tx:
        tx.ledger.record(credit(credits=1000))
        tx.commit()
    assert alerts(uow) == AlertState()


def test_settings_are_kept_with_the_wallet_and_setting_them_creates_it(uow: Uow) -> None:
    with uow() as tx:
        tx.alerts.set("alice", LOW, T0)
        assert tx.alerts.get("alice") == LOW
        tx.commit()
    assert alerts(uow) == LOW
    assert alerts(uow, "Alice") == AlertState()
    with uow() as tx:  # an empty wallet
        assert [(a.user_id, a.account, a.stored) for a in tx.ledger.audit().accounts] == [
            ("alice", Account.WALLET, Credits(0)),
            ("alice", Account.HELD, Credits(0)),
        ]
        tx.ledger.record(credit(credits=1000))
        tx.commit()
    assert balances(uow) == c(1000, 0)
    assert alerts(uow) == LOW  # moving the balance leaves them


def test_the_lock_reads_them_and_a_change_is_seen_at_once(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=1000))
        tx.alerts.set("alice", LOW, T0)
        tx.commit()
    with uow() as tx:
        tx.ledger.lock_wallet("alice", T0)
        assert tx.alerts.get("alice") == LOW
        ok = AlertState(Credits(500), BalanceLevel.OK)
        tx.alerts.set("alice", ok, T0)
        assert tx.alerts.get("alice") == ok
        tx.commit()
        tx.ledger.lock_wallet_for_credit("alice", T0)
        assert tx.alerts.get("alice") == ok
        cleared = AlertState(None, BalanceLevel.DEPLETED)
        tx.alerts.set("alice", cleared, T0)
        assert tx.alerts.get("alice") == cleared
        tx.rollback()  # undone: the committed settings again
        assert tx.alerts.get("alice") == ok
        tx.ledger.lock_wallet("alice", T0)
        assert tx.alerts.get("alice") == ok
    assert alerts(uow) == AlertState(Credits(500), BalanceLevel.OK)


def test_settings_left_without_commit_are_undone(uow: Uow) -> None:
    with uow() as tx:
        tx.alerts.set("alice", LOW, T0)
    assert alerts(uow) == AlertState()
    with uow() as tx:
        assert tx.ledger.lock_wallet("alice", T0).available == Credits(0)
        assert tx.alerts.get("alice") == AlertState()
