"""Migration 0009 (saved cards) on SQLite and PostgreSQL: it upgrades a database with wallets in it and
downgrades back, and the saved-card rows hold what a user recognises their card by."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text

from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import alembic_config, current_revision, upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.saved_cards import SavedCard
from wallet_core.use_cases import grant_credits

T0 = datetime(2026, 12, 3, 9, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    return url


def test_0009_adds_the_card_tables_to_a_database_with_wallets_and_downgrades_back(database_url: str) -> None:
    engine = create_wallet_engine(database_url)
    # A wallet with credits, made by this code (which needs the newest schema), then the schema taken
    # back to 0008 with it.
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine)
    grant_credits(user_id="alice", credits="10.00", reason="welcome", granted_by="admin", uow=uow)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008")

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0009")
    assert current_revision(engine) == "0009"
    card = SavedCard("alice", "cus_a", "pm_a", "visa", "4242", 12, 2034, T0)
    with uow() as tx:
        assert tx.saved_cards.set_customer("alice", "cus_a", T0) == "cus_a"
        tx.saved_cards.save(card)
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.saved_cards.get("alice") == card
        assert str(tx.ledger.balances("alice", datetime.now(UTC))[0]) == "10.00"

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008")
    tables = set(inspect(engine).get_table_names())
    assert "saved_cards" not in tables and "stripe_customers" not in tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT user_id, available FROM wallets")).all() == [("alice", 1000)]
    upgrade(engine)
    with uow(read_only=True) as tx:
        assert tx.saved_cards.get("alice") is None and tx.saved_cards.customer_id("alice") is None
    engine.dispose()


def test_a_customer_id_belongs_to_one_user_only(database_url: str) -> None:
    engine = create_wallet_engine(database_url)
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        tx.saved_cards.set_customer("alice", "cus_shared", T0)
        tx.commit()
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"), uow() as tx:
        tx.saved_cards.set_customer("bob", "cus_shared", T0)
    with uow(read_only=True) as tx:
        assert tx.saved_cards.customer_id("bob") is None
    engine.dispose()
