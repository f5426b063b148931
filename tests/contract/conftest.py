"""The backends every repository contract runs on: in memory, SQLite file and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text

from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from tests.contract.builders import Uow

ALL_TABLES = (
    "hold_allocations, holds, postings, credit_lots, credit_transactions, wallets, top_ups, payment_events, "
    "outbound_events, webhook_endpoints, webhook_deliveries, stripe_customers, saved_cards, auto_top_up_rules, "
    "auto_top_up_charges"
)


@dataclass(frozen=True)
class Backend:
    name: str
    uow: Uow
    engine: Engine | None = None  # the SQL backends only


@pytest.fixture(scope="module")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_wallet_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        store = InMemoryStore()
        return Backend("memory", in_memory_unit_of_work_factory(store))
    if request.param == "sqlite":
        engine = create_wallet_engine(request.getfixturevalue("sqlite_url"))
        request.addfinalizer(engine.dispose)
        upgrade(engine)
    else:
        engine = request.getfixturevalue("pg_engine")

        def empty() -> None:
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {ALL_TABLES}"))
                conn.execute(text("UPDATE event_publication SET last_number = 0"))  # its one row stays

        empty()
        # Empty afterwards too: later tests (e2e) share this session's database and verify its ledger,
        # which a test here may leave unsound on purpose.
        request.addfinalizer(empty)
    return Backend(request.param, sql_unit_of_work_factory(engine), engine)


@pytest.fixture
def uow(backend: Backend) -> Uow:
    return backend.uow


@pytest.fixture
def sql_engine(backend: Backend) -> Engine:
    if backend.engine is None:
        pytest.skip("a database-only check: it changes or refuses rows through SQL, which the in-memory store "
                    "has none of")
    return backend.engine
