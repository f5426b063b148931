"""Many writers spend from one wallet at once: never below zero, nothing lost, and the ledger balances.

PostgreSQL: several OS processes, each with its own engine and connection, so only the wallet's row
lock orders them. SQLite: threads of one process, ordered by the database's writer lock. Each spend is
its own unit of work through the real use case, with its own idempotency key, and the wallet holds
less than the spends ask for in total, so some must be refused.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.tables import credit_transactions, postings
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.bookings import credit_booking
from wallet_core.errors import InsufficientCredits
from wallet_core.ledger import Account, CreditKind, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.use_cases import grant_credits, spend_credits, verify_ledger

SPENDS_EACH = 25
PAID = Credits(20_000)  # 200.00 credits bought
PROMOTIONAL = Credits(10_000)  # 100.00 credits granted, expiring next week
GRANTED = PAID + PROMOTIONAL  # spends of 1.00-10.00 each ask for far more than this in total


@dataclass(frozen=True)
class Outcome:
    spent: Credits | None  # None: refused for insufficient credits
    asked: Credits
    balance_after: Credits | None = None


def spend_many(uow: UnitOfWorkFactory, user_id: str, worker: int, start: Callable[[], object]) -> list[Outcome]:
    """`SPENDS_EACH` spends of random small amounts, each in its own unit of work."""
    rng = random.Random(worker)
    outcomes: list[Outcome] = []
    start()
    for n in range(SPENDS_EACH):
        asked = Credits(rng.randint(100, 1_000))
        try:
            result = spend_credits(
                user_id=user_id, credits=str(asked), idempotency_key=f"{user_id}-w{worker}-{n}", reason="load",
                actor="test", uow=uow,
            )
        except InsufficientCredits:
            outcomes.append(Outcome(None, asked))
        else:
            assert not result.replayed
            outcomes.append(Outcome(result.credits_spent, asked, result.balance))
    return outcomes


def _process_main(url: str, user_id: str, worker: int, start: Any, results: Any) -> None:
    """What each spawned process runs: its own engine, its spends, the outcomes (or the error) sent back."""
    engine = create_wallet_engine(url, pool_size=1, max_overflow=0)
    try:
        results.put((worker, spend_many(sql_unit_of_work_factory(engine), user_id, worker, start.wait)))
    except BaseException:  # noqa: BLE001 (reported to the parent, which fails the test)
        results.put((worker, traceback.format_exc()))
    finally:
        engine.dispose()


def fund(engine: Engine, user_id: str) -> None:
    uow = sql_unit_of_work_factory(engine)
    now = datetime.now(UTC)
    with uow() as tx:
        tx.ledger.record(
            credit_booking(user_id=user_id, credits=PAID, kind=CreditKind.PAID, reference_id=f"pi_{user_id}",
                           now=now, reason="top-up", actor="stripe")
        )
        tx.commit()
    grant_credits(user_id=user_id, credits=str(PROMOTIONAL), reason="welcome", granted_by="admin", uow=uow,
                  idempotency_key=f"welcome-{user_id}", expires_at=now + timedelta(days=7))


def check_the_books(engine: Engine, user_id: str, outcomes: list[Outcome], attempts: int) -> None:
    assert len(outcomes) == attempts
    spent = [o for o in outcomes if o.spent is not None]
    refused = [o for o in outcomes if o.spent is None]
    total_spent = Credits(sum(o.spent.minor for o in spent if o.spent is not None))
    assert sum(o.asked.minor for o in outcomes) > GRANTED.minor  # they asked for more than there was
    assert spent and refused, "some spends must succeed and some be refused"
    assert all(o.balance_after is not None and o.balance_after.minor >= 0 for o in spent)

    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        final, held = tx.ledger.balances(user_id, datetime.now(UTC))
    assert final.minor >= 0 and held == Credits(0)
    assert total_spent == GRANTED - final
    assert final < max(o.asked for o in refused)  # the biggest refusal really did not fit at the end
    # every balance a spend reported is distinct: each spend saw what the others had left
    assert len({o.balance_after for o in spent}) == len(spent)
    with engine.connect() as conn:
        revenue = conn.execute(
            select(func.coalesce(func.sum(postings.c.amount), 0))
            .select_from(postings.join(credit_transactions, credit_transactions.c.id == postings.c.transaction_id))
            .where(credit_transactions.c.user_id == user_id, postings.c.account == Account.REVENUE.value)
        ).scalar_one()
        booked_spends = conn.execute(
            select(func.count()).where(
                credit_transactions.c.user_id == user_id, credit_transactions.c.kind == TransactionKind.SPEND.value
            )
        ).scalar_one()
    assert Credits(int(revenue)) == total_spent
    assert booked_spends == len(spent)
    assert verify_ledger(uow=uow) == []


@pytest.mark.postgres
def test_processes_spending_from_one_postgres_wallet_never_overdraw_it(postgres_url: str) -> None:
    processes = 4
    engine = create_wallet_engine(postgres_url)
    upgrade(engine)
    user_id = f"spender-{uuid.uuid4().hex[:8]}"  # the session's database is shared: a user of our own
    fund(engine, user_id)

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_process_main, args=(postgres_url, user_id, n, start, results), daemon=True)
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        reported = dict(results.get(timeout=120) for _ in workers)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    failures = [report for report in reported.values() if isinstance(report, str)]
    assert not failures, "\n".join(failures)
    outcomes = [outcome for n in sorted(reported) for outcome in reported[n]]
    try:
        check_the_books(engine, user_id, outcomes, processes * SPENDS_EACH)
    finally:
        engine.dispose()


def test_threads_spending_from_one_sqlite_wallet_never_overdraw_it(sqlite_url: str) -> None:
    threads = 8
    engine = create_wallet_engine(sqlite_url, pool_size=threads, max_overflow=0)
    upgrade(engine)
    fund(engine, "spender")
    start = threading.Barrier(threads)
    uow = sql_unit_of_work_factory(engine)
    with ThreadPoolExecutor(threads) as pool:
        batches = list(pool.map(lambda n: spend_many(uow, "spender", n, start.wait), range(threads)))
    try:
        check_the_books(engine, "spender", [o for batch in batches for o in batch], threads * SPENDS_EACH)
    finally:
        engine.dispose()
