"""Twenty requests grant the same reference at once: exactly one books it, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.tables import credit_lots, credit_transactions, postings
from adapters.sql.unit_of_work import SqlUnitOfWork, sql_unit_of_work_factory
from wallet_core.bookings import credit_booking
from wallet_core.errors import DuplicateReference
from wallet_core.ledger import Booking, CreditKind
from wallet_core.money import Credits
from wallet_core.use_cases import verify_ledger

THREADS = 20
GRANT = Credits(2500)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = create_wallet_engine(url, pool_size=THREADS, max_overflow=0)
    upgrade(engine)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                text("TRUNCATE hold_allocations, holds, postings, credit_lots, credit_transactions, wallets, top_ups")
            )
    yield engine
    engine.dispose()


def top_up(reference: str = "pi_same", credits: Credits = GRANT) -> Booking:
    return credit_booking(
        user_id="alice", credits=credits, kind=CreditKind.PAID, reference_id=reference, now=datetime.now(UTC),
        reason="top-up", actor="stripe",
    )


def record_once(engine: Engine, start: threading.Barrier) -> str:
    start.wait()
    with SqlUnitOfWork(engine) as tx:
        try:
            tx.ledger.record(top_up())
        except DuplicateReference:
            tx.rollback()
            return "duplicate"
        tx.commit()
        return "granted"


@pytest.mark.parametrize("wallet_exists", [False, True], ids=["new_wallet", "existing_wallet"])
def test_the_same_reference_is_granted_exactly_once(engine: Engine, wallet_exists: bool) -> None:
    before = Credits(0)
    if wallet_exists:
        before = Credits(100)
        with SqlUnitOfWork(engine) as tx:
            tx.ledger.record(top_up("earlier", before))
            tx.commit()

    start = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(lambda _: record_once(engine, start), range(THREADS)))

    assert sorted(outcomes) == ["duplicate"] * (THREADS - 1) + ["granted"]
    with SqlUnitOfWork(engine) as tx:
        assert tx.ledger.balances("alice", datetime.now(UTC)) == (before + GRANT, Credits(0))
        booked = tx.ledger.find_transaction_by_reference("pi_same")
    assert booked is not None and booked.balance_after == before + GRANT
    with engine.connect() as conn:
        rows = conn.execute(
            select(func.count()).where(credit_transactions.c.reference_id == "pi_same")
        ).scalar_one()
        booked_postings = conn.execute(
            select(func.count()).where(postings.c.transaction_id == booked.id)
        ).scalar_one()
        lots = conn.execute(select(func.count()).select_from(credit_lots)).scalar_one()
    assert (rows, booked_postings, lots) == (1, 2, 2 if wallet_exists else 1)
    assert verify_ledger(uow=sql_unit_of_work_factory(engine)) == []
