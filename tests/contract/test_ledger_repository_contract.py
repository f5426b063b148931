"""One contract for every LedgerRepository + UnitOfWork: in memory, SQLite file and PostgreSQL.

The in-memory fake is what the unit tests trust, so it must behave like the databases do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import DuplicateReference, DuplicateTopUp
from wallet_core.ledger import NewTransaction, TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.ports import UnitOfWork
from wallet_core.topups import TopUp, TopUpStatus

Uow = Callable[[], UnitOfWork]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_wallet_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def uow(request: pytest.FixtureRequest) -> Uow:
    if request.param == "memory":
        store = InMemoryStore()
        return lambda: InMemoryUnitOfWork(store)
    if request.param == "sqlite":
        engine = create_wallet_engine(request.getfixturevalue("sqlite_url"))
        request.addfinalizer(engine.dispose)
        upgrade(engine)
    else:
        engine = request.getfixturevalue("pg_engine")
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE credit_transactions, wallets, top_ups"))
    return sql_unit_of_work_factory(engine)


def entry(reference: str, credits: int = 1000, *, user: str = "alice", at: datetime = T0,
          kind: TransactionKind = TransactionKind.GRANT, reason: str | None = "because",
          actor: str | None = "admin") -> NewTransaction:
    return NewTransaction(
        id=f"ctx_{reference}", user_id=user, kind=kind, credits=Credits(credits), reference_id=reference,
        created_at=at, reason=reason, actor=actor,
    )


def top_up(top_up_id: str = "tu_1", *, user: str = "alice", intent: str = "pi_1",
           key: str | None = "key-1", cents: int = 1000) -> TopUp:
    return TopUp(
        id=top_up_id, user_id=user, amount=Usd(cents), currency="usd", credits=Credits(cents * 10),
        status=TopUpStatus.PENDING, payment_intent_id=intent, created_at=T0, idempotency_key=key,
    )


def balance(uow: Uow, user: str = "alice") -> Credits:
    with uow() as tx:
        return tx.ledger.balance(user)


def test_unknown_user_has_a_zero_balance_and_no_transactions(uow: Uow) -> None:
    with uow() as tx:
        assert tx.ledger.balance("nobody") == Credits(0)
        assert tx.ledger.recent_transactions("nobody", 10) == []
        assert tx.ledger.find_transaction_by_reference("nothing") is None


def test_post_moves_the_balance_and_returns_the_balance_after(uow: Uow) -> None:
    with uow() as tx:
        first = tx.ledger.post(entry("r1", 1000))
        second = tx.ledger.post(entry("r2", 550, at=T0 + timedelta(seconds=1), reason=None, actor=None))
        assert tx.ledger.balance("alice") == Credits(1550)
        tx.commit()
    assert first.balance_after == Credits(1000)
    assert second.balance_after == Credits(1550)
    assert (second.id, second.user_id, second.kind, second.credits, second.reference_id) == (
        "ctx_r2", "alice", TransactionKind.GRANT, Credits(550), "r2")
    assert (second.reason, second.actor, second.created_at) == (None, None, T0 + timedelta(seconds=1))
    assert balance(uow) == Credits(1550)


def test_large_amounts_are_exact(uow: Uow) -> None:
    huge = 10**14 - 1  # far beyond 32 bits
    with uow() as tx:
        tx.ledger.post(entry("big", huge, kind=TransactionKind.TOP_UP))
        tx.commit()
    with uow() as tx:
        assert tx.ledger.balance("alice") == Credits(huge)
        booked = tx.ledger.find_transaction_by_reference("big")
    assert booked is not None and booked.credits == Credits(huge) and booked.kind is TransactionKind.TOP_UP


def test_a_duplicate_reference_is_refused_and_rollback_leaves_the_balance_unchanged(uow: Uow) -> None:
    with uow() as tx:
        original = tx.ledger.post(entry("pi_1", 1000))
        tx.commit()
    with uow() as tx:
        with pytest.raises(DuplicateReference):
            tx.ledger.post(replace(entry("pi_1", 999), id="ctx_other"))
        tx.rollback()
        assert tx.ledger.balance("alice") == Credits(1000)
        assert tx.ledger.find_transaction_by_reference("pi_1") == original
    with uow() as tx:  # another user cannot reuse the reference either
        with pytest.raises(DuplicateReference):
            tx.ledger.post(replace(entry("pi_1", 5, user="bob"), id="ctx_bob"))
        tx.rollback()
        assert tx.ledger.balance("bob") == Credits(0)
    assert balance(uow) == Credits(1000)


def test_a_refused_duplicate_changes_nothing_even_before_rollback(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.post(entry("r1", 1000))
        with pytest.raises(DuplicateReference):
            tx.ledger.post(replace(entry("r1", 300), id="ctx_again"))
        assert tx.ledger.balance("alice") == Credits(1000)
        tx.commit()
    with uow() as tx:
        assert tx.ledger.balance("alice") == Credits(1000)
        assert [t.id for t in tx.ledger.recent_transactions("alice", 10)] == ["ctx_r1"]


def test_a_duplicate_within_one_unit_of_work_is_refused(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.post(entry("same", 100))
        with pytest.raises(DuplicateReference):
            tx.ledger.post(replace(entry("same", 100), id="ctx_second"))


def test_leaving_without_commit_discards_every_write(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.post(entry("r1", 1000))
        tx.ledger.add_top_up(top_up())
    with uow() as tx:
        assert tx.ledger.balance("alice") == Credits(0)
        assert tx.ledger.find_transaction_by_reference("r1") is None
        assert tx.ledger.get_top_up("tu_1") is None


def test_an_exception_in_the_block_discards_every_write(uow: Uow) -> None:
    with pytest.raises(RuntimeError), uow() as tx:
        tx.ledger.post(entry("r1", 1000))
        raise RuntimeError("boom")
    assert balance(uow) == Credits(0)


def test_rollback_then_new_writes_then_commit(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.post(entry("dropped", 700))
        tx.rollback()
        assert tx.ledger.balance("alice") == Credits(0)
        tx.ledger.post(entry("kept", 300))
        tx.commit()
    with uow() as tx:
        assert tx.ledger.balance("alice") == Credits(300)
        assert tx.ledger.find_transaction_by_reference("dropped") is None
        assert tx.ledger.find_transaction_by_reference("kept") is not None


def test_after_commit_a_new_transaction_begins(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.post(entry("committed", 100))
        tx.commit()
        tx.ledger.post(entry("not_committed", 200, at=T0 + timedelta(seconds=1)))
    assert balance(uow) == Credits(100)


def test_find_transaction_by_reference_returns_the_booked_transaction(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.post(entry("r0", 50))
        booked = tx.ledger.post(entry("r1", 1000, at=T0 + timedelta(minutes=1)))
        tx.commit()
    with uow() as tx:
        found = tx.ledger.find_transaction_by_reference("r1")
        assert found == booked
        assert found is not None and found.balance_after == Credits(1050)
        assert tx.ledger.find_transaction_by_reference("r2") is None


def test_recent_transactions_are_newest_first_limited_and_per_user(uow: Uow) -> None:
    with uow() as tx:
        for i in range(5):
            tx.ledger.post(entry(f"a{i}", 100 + i, at=T0 + timedelta(seconds=i)))
            tx.ledger.post(entry(f"b{i}", 1, user="bob", at=T0 + timedelta(seconds=i)))
        tx.commit()
    with uow() as tx:
        alice = tx.ledger.recent_transactions("alice", 3)
        bob = tx.ledger.recent_transactions("bob", 100)
    assert [t.reference_id for t in alice] == ["a4", "a3", "a2"]
    assert [t.balance_after for t in alice] == [Credits(510), Credits(406), Credits(303)]
    assert [t.reference_id for t in bob] == ["b4", "b3", "b2", "b1", "b0"]
    assert all(t.user_id == "bob" for t in bob)


def test_datetimes_round_trip_timezone_aware(uow: Uow) -> None:
    at = datetime(2025, 6, 30, 23, 59, 58, 654321, tzinfo=timezone(timedelta(hours=2)))
    with uow() as tx:
        tx.ledger.post(entry("r1", 1, at=at))
        tx.ledger.add_top_up(replace(top_up(), created_at=at))
        tx.commit()
    with uow() as tx:
        booked = tx.ledger.find_transaction_by_reference("r1")
        recorded = tx.ledger.get_top_up("tu_1")
    assert booked is not None and recorded is not None
    for value in (booked.created_at, recorded.created_at):
        assert value.utcoffset() is not None
        assert value == at


def test_top_ups_are_added_and_found_three_ways(uow: Uow) -> None:
    recorded = top_up()
    with uow() as tx:
        tx.ledger.add_top_up(recorded)
        tx.ledger.add_top_up(top_up("tu_2", intent="pi_2", key=None))
        tx.ledger.add_top_up(top_up("tu_3", intent="pi_3", key=None))  # many top-ups without a key
        tx.commit()
    with uow() as tx:
        assert tx.ledger.get_top_up("tu_1") == recorded
        assert tx.ledger.find_top_up_by_payment_intent("pi_1") == recorded
        assert tx.ledger.find_top_up_by_idempotency_key("alice", "key-1") == recorded
        assert tx.ledger.find_top_up_by_idempotency_key("bob", "key-1") is None
        assert tx.ledger.get_top_up("tu_404") is None
        assert tx.ledger.find_top_up_by_payment_intent("pi_404") is None
        without_key = tx.ledger.get_top_up("tu_2")
    assert without_key is not None and without_key.idempotency_key is None


def test_the_same_idempotency_key_for_the_same_user_is_a_duplicate(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.add_top_up(top_up())
        tx.commit()
    with uow() as tx:
        with pytest.raises(DuplicateTopUp):
            tx.ledger.add_top_up(top_up("tu_2", intent="pi_2", key="key-1"))
        tx.rollback()
        assert tx.ledger.find_top_up_by_idempotency_key("alice", "key-1") == top_up()
        tx.ledger.add_top_up(top_up("tu_bob", user="bob", intent="pi_bob", key="key-1"))  # other user: fine
        tx.commit()
    with uow() as tx:
        assert tx.ledger.get_top_up("tu_2") is None
        assert tx.ledger.get_top_up("tu_bob") is not None


def test_the_same_payment_intent_is_a_duplicate(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.add_top_up(top_up())
        with pytest.raises(DuplicateTopUp):
            tx.ledger.add_top_up(top_up("tu_2", intent="pi_1", key="key-2"))
        with pytest.raises(DuplicateTopUp):
            tx.ledger.add_top_up(top_up("tu_1", intent="pi_9", key="key-9"))  # same id
        tx.ledger.add_top_up(top_up("tu_3", intent="pi_3", key="key-3"))  # still usable, no rollback
        tx.commit()
    with uow() as tx:
        assert tx.ledger.get_top_up("tu_2") is None
        assert tx.ledger.find_top_up_by_payment_intent("pi_1") == top_up()
        assert tx.ledger.get_top_up("tu_3") is not None


def test_set_top_up_status_persists(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.add_top_up(top_up())
        tx.commit()
    with uow() as tx:
        tx.ledger.set_top_up_status("tu_1", TopUpStatus.SUCCEEDED)
        tx.commit()
    with uow() as tx:
        assert tx.ledger.get_top_up("tu_1") == replace(top_up(), status=TopUpStatus.SUCCEEDED)
        tx.ledger.set_top_up_status("tu_1", TopUpStatus.NEEDS_REVIEW)  # not committed
    with uow() as tx:
        found = tx.ledger.find_top_up_by_payment_intent("pi_1")
    assert found is not None and found.status is TopUpStatus.SUCCEEDED
