"""Twenty admins revert the same spend at once, on SQLite and PostgreSQL: exactly one revert is booked.

Each revert is its own unit of work through the real use case, on a thread of its own (its own
connection). Most carry their own idempotency key: all but the winner are refused as "already
reverted". A few share one key: those answer the winner's result again (a replay) when the winner is
theirs, or are refused like the others when it is not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.tables import credit_transactions
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import NotRevertible
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits
from wallet_core.use_cases import grant_credits, read_wallet, revert_transaction, spend_credits
from wallet_core.use_cases.revert_transaction import RevertResult
from wallet_core.use_cases.verify_ledger import check_ledger

OWN_KEYS = 16
SHARED_KEY = 4  # reverts sent with one same key
THREADS = OWN_KEYS + SHARED_KEY


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    engine = create_wallet_engine(url, pool_size=THREADS, max_overflow=0)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_twenty_concurrent_reverts_of_one_spend_book_exactly_one(engine: Engine) -> None:
    uow = sql_unit_of_work_factory(engine)
    grant_credits(user_id="alice", credits="100.00", reason="welcome", granted_by="admin", uow=uow,
                  idempotency_key="g1", category="paid")
    grant_credits(user_id="alice", credits="30.00", reason="promo", granted_by="admin", uow=uow,
                  idempotency_key="g2")
    spent = spend_credits(user_id="alice", credits="50.00", idempotency_key="s1", reason="usage", actor="api", uow=uow)
    assert spent.balance == Credits(8000)  # the 30.00 promotional, then 20.00 of the paid

    start = threading.Barrier(THREADS)
    keys = [f"own-{n}" for n in range(OWN_KEYS)] + ["shared"] * SHARED_KEY

    def attempt(key: str) -> RevertResult | str:
        start.wait()
        try:
            return revert_transaction(transaction_id=spent.transaction_id, reason="charged twice",
                                      idempotency_key=key, actor="support", uow=uow)
        except NotRevertible as refused:
            return str(refused)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(attempt, keys))

    booked = [o for o in outcomes if isinstance(o, RevertResult) and not o.replayed]
    replays = [(key, o) for key, o in zip(keys, outcomes, strict=True) if isinstance(o, RevertResult) and o.replayed]
    refusals = [o for o in outcomes if isinstance(o, str)]
    assert len(booked) == 1, outcomes
    [winner] = booked
    winning_key = keys[outcomes.index(winner)]
    assert len(booked) + len(replays) + len(refusals) == THREADS
    assert all(f"was already reverted by {winner.transaction_id}" in message for message in refusals), refusals
    # a replay is the winner's answer again, for the winner's own key only: the requests sharing a key
    # are all replays of the winner when it is one of them, else all refused
    shared = [o for key, o in zip(keys, outcomes, strict=True) if key == "shared" and o is not winner]
    if winning_key == "shared":
        assert [key for key, _ in replays] == ["shared"] * (SHARED_KEY - 1)
    else:
        assert replays == [] and all(isinstance(o, str) for o in shared)
    assert all((o.transaction_id, o.credits_reverted, o.balance, o.sources) ==
               (winner.transaction_id, winner.credits_reverted, winner.balance, winner.sources) for _, o in replays)
    assert (winner.reverts, winner.credits_reverted, winner.balance) == (spent.transaction_id, Credits(5000),
                                                                         Credits(13000))

    view = read_wallet(user_id="alice", uow=uow)
    assert view.balance == Credits(13000) and view.held == Credits(0)
    reverted = next(t for t in view.transactions if t.id == spent.transaction_id)
    assert reverted.reverted_by == winner.transaction_id
    with engine.connect() as conn:
        reverts = conn.execute(
            select(func.count()).where(credit_transactions.c.kind == TransactionKind.REVERT.value)
        ).scalar_one()
    assert reverts == 1
    check = check_ledger(uow=uow)
    assert check.violations == [] and check.accounts_checked == 2
    with uow(read_only=True) as tx:
        assert tx.ledger.balances("alice", datetime.now(UTC)) == (Credits(13000), Credits(0))
