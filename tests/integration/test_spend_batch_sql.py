"""Batches of spends on the SQL adapter (SQLite and PostgreSQL, where a batch is recorded in one
statement) answer and leave exactly what the same spends made one by one do: random mixes of in-batch
duplicates, keys replayed across batches, conflicts, overdrafts, invalid items, promotional, paid,
expiring and not-yet-effective credits.

Both sides share one database: the batched side's users and keys carry the prefix "b-", the one-by-one
side's "s-", so they never meet; results are compared with the prefix taken off.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from wallet_core.money import Usd
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy
from wallet_core.use_cases import BatchItemResult, BatchStatus

USERS = ("ann", "bob", "cy")
POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))


def fund(wallet: Wallet, side: str) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    wallet.grant(f"{side}ann", "30", reason="promo", granted_by="t", expires_at=later + timedelta(days=6))
    wallet.grant(f"{side}ann", "50", reason="paid", granted_by="t", category="paid")
    wallet.grant(f"{side}ann", "10", reason="promo first", granted_by="t", priority=10)
    wallet.grant(f"{side}bob", "12", reason="promo", granted_by="t")
    wallet.grant(f"{side}bob", "100", reason="tomorrow", granted_by="t", effective_at=later)  # pending


def random_items(rng: random.Random, n: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(n):
        if items and rng.random() < 0.15:
            items.append(dict(rng.choice(items)))  # the same spend again
            continue
        item: dict[str, Any] = {
            "user_id": rng.choice([*USERS, "bad user"]),
            "credits": rng.choice(["1", "2.50", "7", "11.99", "25", "0", "1.001"]),
            "reason": rng.choice(["usage", "export", ""]),
            "idempotency_key": rng.choice([f"k{k}" for k in range(12)] + [None]),
        }
        if rng.random() < 0.3:
            item["metadata"] = rng.choice([{"job": "1"}, {"job": "2"}, {"": "x"}])
        items.append(item)
    return items


def prefixed(item: dict[str, Any], side: str) -> dict[str, Any]:
    out = dict(item)
    if out["user_id"] in USERS:
        out["user_id"] = side + out["user_id"]
    if out["idempotency_key"] is not None:
        out["idempotency_key"] = side + out["idempotency_key"]
    return out


def one_by_one(wallet: Wallet, items: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for index, item in enumerate(items):
        key = item["idempotency_key"]
        try:
            spent = wallet.spend(item["user_id"], item["credits"], idempotency_key=key, reason=item["reason"],
                                 metadata=item.get("metadata"))
        except InvalidInput as exc:
            out.append((index, BatchStatus.INVALID, None, None,
                        "idempotency_key" if exc.field == "Idempotency-Key" else exc.field))
        except InsufficientCredits:
            out.append((index, BatchStatus.INSUFFICIENT_CREDITS, None,
                        wallet.wallet(item["user_id"], recent=0).balance, None))
        except IdempotencyConflict:
            out.append((index, BatchStatus.CONFLICT, None, None, None))
        else:
            status = BatchStatus.REPLAYED if spent.replayed else BatchStatus.SPENT
            out.append((index, status, spent.transaction_id, spent.balance, None))
    return out


def batched(results: list[BatchItemResult]) -> list[tuple[object, ...]]:
    return [(r.index, r.status, r.transaction_id, r.balance, r.error.field if r.error else None) for r in results]


def named(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Transaction ids replaced by the index of the first row that names each (ids differ per side)."""
    first: dict[object, int] = {}
    out: list[tuple[object, ...]] = []
    for index, status, tx_id, balance, field in rows:
        name = None if tx_id is None else first.setdefault(tx_id, len(first))
        out.append((index, status, name, balance, field))
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    engine = create_wallet_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("seed", range(4))
def test_batches_answer_and_leave_what_the_same_spends_one_by_one_would(engine: Engine, seed: int) -> None:
    wallet = Wallet(uow=sql_unit_of_work_factory(engine), gateway=FakePaymentGateway(), policy=POLICY)
    fund(wallet, "b-")
    fund(wallet, "s-")
    rng = random.Random(seed)
    earlier = random_items(rng, 5)
    one_by_one(wallet, [prefixed(i, "b-") for i in earlier])  # keys committed before the batches
    one_by_one(wallet, [prefixed(i, "s-") for i in earlier])
    seen: set[object] = set()
    sent = list(earlier)
    for _ in range(3):
        items = random_items(rng, 20) + rng.sample(sent, 5)  # and some spends of earlier requests again
        rng.shuffle(items)
        sent += items
        got = named(batched(wallet.spend_many([prefixed(i, "b-") for i in items])))
        seen |= {row[1] for row in got}
        want = named(one_by_one(wallet, [prefixed(i, "s-") for i in items]))
        assert got == want
        for user in USERS:
            assert wallet.wallet(f"b-{user}", recent=0).balance == wallet.wallet(f"s-{user}", recent=0).balance
            assert (wallet.wallet(f"b-{user}").by_category == wallet.wallet(f"s-{user}").by_category)
    assert seen == set(BatchStatus), seen  # every outcome was compared
    assert wallet.verify() == []
