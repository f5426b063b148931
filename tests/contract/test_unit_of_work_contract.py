"""The UnitOfWork contract for every backend: commit, rollback, leaving without commit, read-only.

The in-memory fake is what the unit tests trust, so it must behave like the databases do: every test
here runs the same calls on each backend (tests/contract/conftest.py) and expects the very same answers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.contract.builders import HOUR, T0, Uow, balances, c, credit, event, place, top_up
from wallet_core.ledger import Account
from wallet_core.money import Usd
from wallet_core.ports import AccountAudit
from wallet_core.topups import TopUpStatus


# -- units of work ---------------------------------------------------------------------------------
def test_leaving_without_commit_discards_every_write(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, reference="r1"))
        place(tx, "alice", 100)
        tx.top_ups.add(top_up())
    with uow() as tx:
        assert tx.ledger.balances("alice", T0) == c(0, 0)
        assert tx.ledger.find_transaction_by_reference("r1") is None
        assert tx.top_ups.get("tu_1") is None
        assert tx.ledger.lock_wallet("alice", T0).lots == ()
        assert tx.holds.expired_open(T0 + 2 * HOUR, 10) == []
        assert tx.ledger.audit().accounts == [
            AccountAudit("alice", account, *c(0, 0, 0)) for account in (Account.WALLET, Account.HELD)
        ]


def test_an_exception_in_the_block_discards_every_write(uow: Uow) -> None:
    with pytest.raises(RuntimeError), uow() as tx:
        tx.ledger.record(credit(credits=1000))
        raise RuntimeError("boom")
    assert balances(uow) == c(0, 0)


def test_rollback_then_new_writes_then_commit(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=700, reference="dropped"))
        tx.rollback()
        assert tx.ledger.balances("alice", T0) == c(0, 0)
        tx.ledger.record(credit(credits=300, reference="kept"))
        tx.commit()
    with uow() as tx:
        assert tx.ledger.balances("alice", T0) == c(300, 0)
        assert tx.ledger.find_transaction_by_reference("dropped") is None
        assert tx.ledger.find_transaction_by_reference("kept") is not None


def test_after_commit_a_new_transaction_begins(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="committed"))
        tx.commit()
        tx.ledger.record(credit(credits=200, reference="not_committed", at=T0 + timedelta(seconds=1)))
    assert balances(uow) == c(100, 0)


def test_a_read_only_unit_of_work_reads_what_was_committed_and_cannot_commit(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="r1"))
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.ledger.balances("alice", T0) == c(100, 0)
        with pytest.raises(RuntimeError, match="read-only unit of work cannot commit"):
            tx.commit()
    assert balances(uow) == c(100, 0)


def test_leaving_without_commit_discards_events_and_top_up_updates(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.commit()
    with uow() as tx:
        tx.events.add(event("evt_1"))
        tx.top_ups.update(replace(top_up(), status=TopUpStatus.REFUNDED, refunded=Usd(1000)), T0)
    with uow() as tx:
        assert tx.events.find("evt_1") is None
        assert tx.events.for_payment_intent("pi_1") == []
        assert tx.top_ups.get("tu_1") == top_up()
