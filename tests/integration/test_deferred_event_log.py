"""The payment event log's INSERT on PostgreSQL is deferred (adapters.sql.driver Driver.defer): sent with
the COMMIT, or before the next statement of the transaction. What a user of the log sees does not
change: a logged event is there after the commit, gone after a rollback, found by a read later in the
same transaction, stored exactly (quotes, non-ASCII), and a second event with the same id is ignored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.ports import StoredEvent

AT = datetime(2026, 12, 3, 14, 30, tzinfo=UTC)


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Engine]:
    url = request.getfixturevalue("fresh_postgres_url") if request.param == "postgresql" else sqlite_url
    made = create_wallet_engine(url)
    upgrade(made)
    try:
        yield made
    finally:
        made.dispose()


def logged(event_id: str, type_: str = "payment_intent.succeeded") -> StoredEvent:
    return StoredEvent(event_id, type_, "pi_1", None, AT, "ignored", "webhook")


def test_a_logged_event_is_there_after_commit_and_gone_after_rollback(engine: Engine) -> None:
    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        tx.events.add(logged("evt_kept", "it's \u00e9v\u00e9nement \u201cquoted\u201d; DROP TABLE x"))
        tx.commit()
    with uow() as tx:
        tx.events.add(logged("evt_dropped"))
        tx.rollback()
    with uow() as tx:
        tx.events.add(logged("evt_left"))  # left without commit
    with uow(read_only=True) as tx:
        kept = tx.events.find("evt_kept")
        assert kept == logged("evt_kept", "it's \u00e9v\u00e9nement \u201cquoted\u201d; DROP TABLE x")
        assert tx.events.find("evt_dropped") is None and tx.events.find("evt_left") is None


def test_a_read_later_in_the_transaction_sees_the_event_and_a_repeat_is_ignored(engine: Engine) -> None:
    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        tx.events.add(logged("evt_1"))
        assert tx.events.find("evt_1") == logged("evt_1")
        tx.events.add(StoredEvent("evt_1", "payment_intent.succeeded", "pi_1", None, AT, "granted", "webhook"))
        assert [e.event_id for e in tx.events.for_payment_intent("pi_1")] == ["evt_1"]
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.events.find("evt_1") == logged("evt_1")  # the first stands


@pytest.mark.postgres
def test_on_postgresql_the_insert_travels_with_the_commit(fresh_postgres_url: str) -> None:
    engine = create_wallet_engine(fresh_postgres_url)
    upgrade(engine)
    sent: list[str] = []
    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        tx.events.find("evt_warm")  # the transaction begins
        driver = tx._driver
        assert driver is not None
        conn: Any = driver._sa.connection.driver_connection
        original = conn.execute

        def spy(query: object, *args: object, **kwargs: object) -> object:
            sent.append(query.decode() if isinstance(query, bytes) else str(query))
            return original(query, *args, **kwargs)

        conn.execute = spy
        try:
            tx.events.add(logged("evt_2"))
            assert sent == []  # nothing sent yet
            tx.commit()
        finally:
            conn.execute = original
    assert len(sent) == 1 and sent[0].startswith("INSERT INTO payment_events") and sent[0].endswith("; COMMIT")
    with uow(read_only=True) as tx:
        assert tx.events.find("evt_2") == logged("evt_2")
    engine.dispose()
