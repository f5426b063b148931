"""The SQL adapter against real databases: migrations, engine settings, and storage failures."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import alembic_config, current_revision, upgrade
from adapters.sql.tables import metadata
from adapters.sql.unit_of_work import SqlUnitOfWork, sql_unit_of_work_factory
from wallet_core.errors import StorageUnavailable
from wallet_core.ledger import NewTransaction, TransactionKind
from wallet_core.money import Credits
from wallet_core.use_cases import read_wallet

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def grant(reference: str = "r1", credits: int = 1000) -> NewTransaction:
    return NewTransaction(
        id=f"ctx_{reference}", user_id="alice", kind=TransactionKind.GRANT, credits=Credits(credits),
        reference_id=reference, created_at=datetime.now(UTC), reason="test", actor="admin",
    )


@pytest.fixture
def fresh_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """An empty database of its own, for tests that must start from nothing."""
    name = f"wallet_mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    engine = create_wallet_engine(url)
    yield engine
    engine.dispose()


def test_migrations_apply_twice_without_error(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    upgrade(empty_engine)
    assert current_revision(empty_engine) == HEAD


def test_the_migrated_schema_matches_the_tables(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diffs == []


def test_servers_starting_together_may_all_migrate(empty_engine: Engine) -> None:
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(upgrade, empty_engine) for _ in range(4)]:
            future.result()
    assert current_revision(empty_engine) == HEAD


def test_alembic_env_connects_by_url_when_given_no_connection(sqlite_url: str) -> None:
    command.upgrade(alembic_config(url=sqlite_url), "head")
    engine = create_wallet_engine(sqlite_url)
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_sqlite_uses_wal_foreign_keys_and_a_busy_timeout(sqlite_url: str) -> None:
    engine = create_wallet_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    engine.dispose()


def test_sqlite_transactions_take_the_write_lock_at_once(sqlite_url: str, tmp_path) -> None:
    engine = create_wallet_engine(sqlite_url)
    upgrade(engine)
    other = sqlite3.connect(tmp_path / "wallet.sqlite3", timeout=0, isolation_level=None)
    with SqlUnitOfWork(engine) as tx:
        tx.ledger.balance("alice")  # a read, but BEGIN IMMEDIATE already holds the writer lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.rollback()
    other.close()
    engine.dispose()


def test_postgresql_urls_are_served_by_psycopg_3() -> None:
    engine = create_wallet_engine("postgresql://wallet:secret@db.invalid/wallet")
    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    engine.dispose()


def test_an_unreachable_postgres_is_storage_unavailable_and_leaks_no_secret() -> None:
    engine = create_wallet_engine(
        "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/x", connect_args={"connect_timeout": 2}
    )
    with pytest.raises(StorageUnavailable) as raised, SqlUnitOfWork(engine):
        pass
    message = str(raised.value)
    assert message.startswith("the database is unavailable")
    assert "s3cret" not in message and "127.0.0.1" not in message and "postgres" not in message
    assert raised.value.__cause__ is not None
    with pytest.raises(StorageUnavailable):  # as the use cases see it
        read_wallet(user_id="alice", uow=sql_unit_of_work_factory(engine))
    engine.dispose()


def test_an_unopenable_sqlite_file_is_storage_unavailable(tmp_path) -> None:
    engine = create_wallet_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite3'}")
    with pytest.raises(StorageUnavailable, match="unable to open"), SqlUnitOfWork(engine) as tx:
        tx.ledger.balance("alice")
    engine.dispose()


def test_a_locked_sqlite_file_is_storage_unavailable_and_writes_nothing(sqlite_url: str, tmp_path) -> None:
    setup = create_wallet_engine(sqlite_url)
    upgrade(setup)
    setup.dispose()
    holder = sqlite3.connect(tmp_path / "wallet.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    engine = create_wallet_engine(sqlite_url, connect_args={"timeout": 0.2})
    try:
        with pytest.raises(StorageUnavailable, match="database is locked"), SqlUnitOfWork(engine) as tx:
            tx.ledger.post(grant())
            tx.commit()
    finally:
        holder.rollback()
        holder.close()
    with SqlUnitOfWork(engine) as tx:
        assert tx.ledger.balance("alice") == Credits(0)
        assert tx.ledger.find_transaction_by_reference("r1") is None
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("killed_before", ["post", "commit"])
def test_a_connection_lost_is_storage_unavailable(postgres_url: str, killed_before: str) -> None:
    app_name = f"wallet-doomed-{uuid.uuid4().hex[:8]}"
    engine = create_wallet_engine(postgres_url, connect_args={"application_name": app_name})
    upgrade(engine)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")

    def kill() -> None:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :a"),
                {"a": app_name},
            )

    reference = f"lost-{killed_before}-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageUnavailable), SqlUnitOfWork(engine) as tx:
        tx.ledger.balance("alice")
        if killed_before == "post":
            kill()
        tx.ledger.post(grant(reference))
        kill()
        tx.commit()
    with SqlUnitOfWork(engine) as tx:  # the pool recovers
        assert tx.ledger.find_transaction_by_reference(reference) is None
    admin.dispose()
    engine.dispose()
