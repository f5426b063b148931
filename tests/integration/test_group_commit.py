"""Group commit on a real database (use_cases.spend_queue over the SQL unit of work): many single spends
at once on one wallet that cannot pay for all of them. Exactly the affordable number are booked, never
an overdraft, every key once (repeats replay), the ledger checks out, and a spend asked again after its
commit replays it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.tables import credit_transactions
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import InsufficientCredits, WalletError
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits
from wallet_core.use_cases import SpendResult, grant_credits, verify_ledger
from wallet_core.use_cases.spend_queue import SpendQueue

FUNDS = 40  # credits: 40 spends of 1.00 fit
KEYS = 60  # distinct spends asked for
REPEATS = 15  # threads that send one of those keys again (the same request)


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Engine]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else sqlite_url
    made = create_wallet_engine(url, pool_size=8, max_overflow=8)
    upgrade(made)
    try:
        yield made
    finally:
        made.dispose()


def test_concurrent_single_spends_in_groups_book_exactly_what_the_wallet_affords(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    uow = sql_unit_of_work_factory(engine)
    user = f"hot-{request.node.callspec.id}-{datetime.now(UTC).timestamp():.0f}"
    grant_credits(user_id=user, credits=str(FUNDS), reason="funds", granted_by="test", uow=uow,
                  idempotency_key=f"funds-{user}")
    sizes: list[int] = []
    queue = SpendQueue(uow, on_group=sizes.append)
    keys = [f"{user}-{n}" for n in range(KEYS)] + [f"{user}-{n}" for n in range(REPEATS)]
    start = threading.Barrier(len(keys))
    outcomes: dict[int, SpendResult | WalletError] = {}

    def spend(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = queue.spend(user_id=user, credits="1.00", idempotency_key=keys[index],
                                          reason="load", actor="test")
        except WalletError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a spend never got its answer"

    assert len(outcomes) == len(keys)
    unexpected = [o for o in outcomes.values() if isinstance(o, WalletError) and not isinstance(o, InsufficientCredits)]
    assert not unexpected
    booked = {o.transaction_id: o for o in outcomes.values() if isinstance(o, SpendResult)}
    assert len(booked) == FUNDS  # exactly the affordable number, whatever the interleaving
    assert sorted(o.balance.minor for o in booked.values()) == [n * 100 for n in range(FUNDS)]  # each saw the rest
    for index, outcome in outcomes.items():  # a key asked twice answers one transaction (or is refused twice)
        twin = outcomes.get(index + KEYS) if index < REPEATS else None
        if isinstance(outcome, SpendResult) and twin is not None:
            assert isinstance(twin, SpendResult) and twin.transaction_id == outcome.transaction_id
    assert max(sizes) > 1, "the spends never shared a commit"

    with uow() as tx:
        spendable, held = tx.ledger.balances(user, datetime.now(UTC))
    assert spendable == Credits(0) and held == Credits(0)
    with engine.connect() as conn:
        spends = conn.execute(
            select(func.count(), func.count(func.distinct(credit_transactions.c.reference_id))).where(
                credit_transactions.c.user_id == user, credit_transactions.c.kind == TransactionKind.SPEND.value
            )
        ).one()
    assert tuple(spends) == (FUNDS, FUNDS)
    assert verify_ledger(uow=uow) == []

    # Asked again after its commit, a booked spend replays: the same transaction, balance and lots.
    index, first = next((i, o) for i, o in outcomes.items() if isinstance(o, SpendResult))
    key = keys[index]
    again = queue.spend(user_id=user, credits="1.00", idempotency_key=key, reason="load", actor="test")
    assert again.replayed and (again.transaction_id, again.balance) == (first.transaction_id, first.balance)
    assert again.sources == first.sources and sum(s.credits.minor for s in again.sources) == 100
