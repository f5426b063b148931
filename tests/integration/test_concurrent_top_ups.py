"""A burst of concurrent top-up requests from one user, each on its own database connection (as from
several server processes): the per-user limits hold exactly. Many pass the first check and ask Stripe
at once; recording takes turns, under the per-user advisory lock on PostgreSQL and the database's one
writer lock on SQLite, and checks the limits again. Every refused request without a key that reached
Stripe has its intent canceled there; each recorded top-up is one commit."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, event, text

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import TooManyTopUps
from wallet_core.money import Usd
from wallet_core.topups import TopUpLimits, TopUpPolicy
from wallet_core.use_cases import TopUpResult, request_top_up

REQUESTS = 16


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = create_wallet_engine(url)
    upgrade(engine)
    with engine.begin() as conn:  # the fake's intent ids start again at pi_fake_1 in every test
        conn.execute(text("DELETE FROM top_ups"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize("limits", [TopUpLimits(max_open=5, max_per_hour=100), TopUpLimits(max_open=100,
                                                                                             max_per_hour=4)],
                         ids=["open", "hourly"])
def test_a_burst_of_one_users_top_ups_gets_exactly_the_limit(engine: Engine, limits: TopUpLimits) -> None:
    policy = TopUpPolicy(Usd(100), Usd(50_000), Decimal(100), limits)
    uow = sql_unit_of_work_factory(engine)
    gateway = FakePaymentGateway()
    user = f"burst-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(REQUESTS)
    created: list[TopUpResult] = []
    refused: list[TooManyTopUps] = []
    other: list[BaseException] = []
    commits: list[str] = []
    event.listen(engine, "commit", lambda conn: commits.append("commit"))

    def worker() -> None:
        barrier.wait()
        try:
            created.append(request_top_up(user_id=user, amount_usd="10", policy=policy, gateway=gateway, uow=uow))
        except TooManyTopUps as exc:
            refused.append(exc)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            other.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    allowed = min(limits.max_open, limits.max_per_hour)
    assert other == []
    assert (len(created), len(refused)) == (allowed, REQUESTS - allowed)
    assert len(commits) == allowed  # one per recorded top-up; a refused request writes nothing
    # A refused request was stopped before Stripe, or its intent was canceled after the second check.
    live = {i.id for i in gateway.intents.values() if i.status != "canceled"}
    assert live == {r.payment_intent_id for r in created}
    assert len(gateway.intents) == len(gateway.create_calls)  # none sent twice
