"""20 batches of spends at once over wallets they share, on SQLite and PostgreSQL: no wallet below zero,
every key spent at most once (its repeats answer `replayed` or `conflict`), no deadlock, and the ledger
check passes.

Each batch runs in its own thread with its own connection, through the real use case (Wallet.spend_many
on the SQL unit of work). The batches share wallets in different orders, and share keys: some with the
same spend (exactly one batch spends it, the others replay it), some with a different one (conflicts),
and some repeated inside one batch. A batch that concurrent batches kept beating to its keys answers
503 (StorageUnavailable, nothing written); it is sent again, as a client would, but with the locks taken
in one order and the keys read under them this never happens here (the test says so).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.tables import credit_transactions
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from tests.integration.test_concurrent_spends import GRANTED, fund
from wallet_core.errors import StorageUnavailable
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import BatchItemResult, BatchStatus

BATCHES = 20
ITEMS = 60
USERS = [f"batch-user-{n}" for n in range(6)]
SHARED = 30  # keys several batches send
POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))


def shared_item(k: int, rng: random.Random, *, other: bool) -> dict[str, Any]:
    """The spend a shared key stands for (the same in every batch), or, `other`, a different one."""
    user = USERS[k % len(USERS)]
    credits = f"{1 + k % 5}.00" if not other else "0.01"
    return {"user_id": user, "credits": credits, "reason": "shared", "idempotency_key": f"shared-{k}"}


def batch_items(n: int) -> list[dict[str, Any]]:
    rng = random.Random(n)
    items: list[dict[str, Any]] = []
    for i in range(ITEMS):
        roll = rng.random()
        if roll < 0.25:
            items.append(shared_item(rng.randrange(SHARED), rng, other=rng.random() < 0.1))
        elif roll < 0.3 and items:
            items.append(dict(rng.choice(items)))  # a repeat inside the batch
        else:
            items.append({"user_id": rng.choice(USERS), "credits": f"{rng.randint(100, 1500) / 100:.2f}",
                          "reason": "usage", "idempotency_key": f"b{n}-{i}"})
    return items


def run_batch(wallet: Wallet, n: int, start: threading.Barrier) -> tuple[list[BatchItemResult], int]:
    items = batch_items(n)
    start.wait()
    for attempt in range(20):
        try:
            return wallet.spend_many(items, actor="test"), attempt
        except StorageUnavailable:
            continue
    raise AssertionError(f"batch {n} was beaten to its keys 20 times over")


def check(engine: Engine, results: list[list[BatchItemResult]], wallet: Wallet) -> None:
    everything = [(n, r) for n, batch in enumerate(results) for r in batch]
    statuses = Counter(r.status for _, r in everything)
    assert statuses[BatchStatus.SPENT] and statuses[BatchStatus.REPLAYED] and statuses[BatchStatus.CONFLICT], statuses
    assert statuses[BatchStatus.INSUFFICIENT_CREDITS], statuses  # they asked for more than there was
    # Every key spent at most once, and every answer about a key names the one transaction that spent it.
    by_key: dict[str, set[str]] = {}
    spent_by_key: Counter[str] = Counter()
    for _, r in everything:
        assert r.idempotency_key is not None
        if r.status is BatchStatus.SPENT:
            spent_by_key[r.idempotency_key] += 1
        if r.transaction_id is not None:
            by_key.setdefault(r.idempotency_key, set()).add(r.transaction_id)
        if r.balance is not None:
            assert r.balance.minor >= 0, r
    assert max(spent_by_key.values()) == 1
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    with engine.connect() as conn:
        booked = conn.execute(
            select(func.count()).where(credit_transactions.c.kind == TransactionKind.SPEND.value)
        ).scalar_one()
    assert booked == len(spent_by_key)
    at = datetime.now(UTC)
    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        for user in USERS:
            spendable, _ = tx.ledger.balances(user, at)
            assert spendable.minor >= 0, (user, spendable)
    assert wallet.verify() == []


def run_all(engine: Engine) -> None:
    for user in USERS:
        fund(engine, user)
    wallet = Wallet(uow=sql_unit_of_work_factory(engine), gateway=FakePaymentGateway(), policy=POLICY)
    start = threading.Barrier(BATCHES)
    with ThreadPoolExecutor(BATCHES) as pool:
        answers = list(pool.map(lambda n: run_batch(wallet, n, start), range(BATCHES)))
    check(engine, [results for results, _ in answers], wallet)
    # Locked in one order and looked up under the locks, no batch ever had to be sent again: no deadlock
    # (PostgreSQL would have aborted one: a 503) and no key lost to a concurrent batch.
    assert [attempts for _, attempts in answers] == [0] * BATCHES
    # The totals add up: what each wallet lost is what its spent items asked for.
    per_user: Counter[str] = Counter()
    for n, (results, _) in enumerate(answers):
        items = batch_items(n)
        for r in results:
            if r.status is BatchStatus.SPENT:
                per_user[items[r.index]["user_id"]] += Credits.parse(items[r.index]["credits"]).minor
    at = datetime.now(UTC)
    with sql_unit_of_work_factory(engine)() as tx:
        for user in USERS:
            left, _ = tx.ledger.balances(user, at)
            assert left == GRANTED - Credits(per_user[user]), user


@pytest.fixture
def engine_for(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    engine = create_wallet_engine(url, pool_size=BATCHES, max_overflow=0)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("engine_for", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_twenty_concurrent_batches_over_shared_wallets_never_overdraw_and_spend_each_key_once(
    engine_for: Engine,
) -> None:
    run_all(engine_for)

