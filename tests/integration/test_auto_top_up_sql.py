"""Automatic top-up on SQLite and PostgreSQL (issue 13): migration 0010, the whole flow through the SQL
unit of work (trigger in the spend's transaction, worker charge, webhook grant once), and, on PostgreSQL,
several "servers" (engines of their own) spending and charging one wallet at once: one automatic top-up
per crossing, charged once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from adapters.fake_gateway import FakePaymentGateway
from adapters.sql.driver import Driver, Sql
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import alembic_config, current_revision, upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.errors import InsufficientCredits
from wallet_core.event_types import EventType
from wallet_core.money import Usd
from wallet_core.payments import META_TOP_UP_ID
from wallet_core.saved_cards import SavedCard
from wallet_core.service import Wallet
from wallet_core.topups import TopUp, TopUpPolicy, TopUpStatus

POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = create_wallet_engine(database_url)
    upgrade(made)
    yield made
    made.dispose()


def wallet_on(engine: Engine, gateway: FakePaymentGateway) -> Wallet:
    return Wallet(uow=sql_unit_of_work_factory(engine, top_up_policy=POLICY), gateway=gateway, policy=POLICY)


def save_card(wallet_engine: Engine, gateway: FakePaymentGateway, user: str = "alice") -> SavedCard:
    customer = gateway.create_customer(user, f"cus-{user}")
    setup = gateway.create_setup_intent(customer, user, f"seti-{user}")
    gateway.succeed_setup_intent(setup.id)
    pm = gateway.setup_intents[setup.id].payment_method_id
    assert pm is not None
    card = SavedCard(user, customer, pm, "visa", "4242", 12, 2034, datetime.now(UTC))
    with sql_unit_of_work_factory(wallet_engine)() as tx:
        tx.saved_cards.set_customer(user, customer, card.saved_at)
        tx.saved_cards.save(card)
        tx.commit()
    return card


def automatic_top_ups(engine: Engine, user: str = "alice") -> list[TopUp]:
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM top_ups WHERE automatic = 1 AND user_id = :u"),
                                          {"u": user})]
    with sql_unit_of_work_factory(engine)(read_only=True) as tx:
        found = [tx.top_ups.get(i) for i in ids]
    return [t for t in found if t is not None]


def test_0010_upgrades_a_database_with_top_ups_and_downgrades_back(database_url: str) -> None:
    engine = create_wallet_engine(database_url)
    upgrade(engine)
    gateway = FakePaymentGateway()
    wallet = wallet_on(engine, gateway)
    pending = wallet.top_up("alice", "10.00")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0009")
    assert "auto_top_up_rules" not in set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0010")
    assert current_revision(engine) == "0010"
    with sql_unit_of_work_factory(engine)(read_only=True) as tx:
        kept = tx.top_ups.get(pending.top_up_id)
    assert kept is not None and kept.payment_intent_id == pending.payment_intent_id and not kept.automatic
    engine.dispose()


def test_a_spend_below_the_threshold_is_charged_by_the_worker_and_granted_once_by_the_webhook(
    engine: Engine,
) -> None:
    gateway = FakePaymentGateway()
    wallet = wallet_on(engine, gateway)
    wallet.grant("alice", "1000.00", reason="start", granted_by="admin", idempotency_key="g-1")
    card = save_card(engine, gateway)
    wallet.put_auto_top_up("alice", "500.00", target_credits="2000.00", monthly_limit_usd="200.00")

    wallet.spend("alice", "600.00", idempotency_key="s-1", reason="usage")
    [top_up] = automatic_top_ups(engine)
    assert (top_up.status, top_up.amount, top_up.payment_intent_id) == (TopUpStatus.PENDING, Usd(1600), None)
    assert gateway.charge_calls == []

    assert wallet.charge_auto_top_ups().accepted == 1
    [request] = gateway.charge_calls
    assert (request.customer_id, request.payment_method_id, request.idempotency_key) == (
        card.customer_id, card.payment_method_id, top_up.id)
    [intent_id] = [i for i, v in gateway.intents.items() if v.metadata.get(META_TOP_UP_ID) == top_up.id]
    signed = gateway.succeed(intent_id)
    assert wallet.handle_stripe_webhook(*signed).outcome == "granted"
    assert wallet.handle_stripe_webhook(*signed).outcome == "duplicate"

    assert wallet.balance("alice") == Decimal("2000.00")
    view = wallet.auto_top_up("alice")
    assert view.in_flight_top_up_id is None and view.charged_this_month == Usd(1600)
    assert [e.type for e in wallet.events_after(None, type="auto_top_up.succeeded").events] == [
        EventType.AUTO_TOP_UP_SUCCEEDED]
    assert wallet.verify() == []


def test_three_declines_disable_the_rule(engine: Engine) -> None:
    gateway = FakePaymentGateway()
    wallet = wallet_on(engine, gateway)
    wallet.grant("alice", "1000.00", reason="start", granted_by="admin", idempotency_key="g-1")
    card = save_card(engine, gateway)
    gateway.always_decline(card.payment_method_id)
    wallet.put_auto_top_up("alice", "500.00", amount_usd="20.00")
    for n in range(3):
        wallet.spend("alice", "600.00" if n == 0 else "1.00", idempotency_key=f"s-{n}", reason="usage")
        assert wallet.charge_auto_top_ups().declined == 1
    view = wallet.auto_top_up("alice")
    assert (str(view.status), view.rule.consecutive_failures) == ("disabled_after_failures", 3)
    assert len(wallet.events_after(None, type="auto_top_up.disabled").events) == 1
    wallet.spend("alice", "1.00", idempotency_key="s-after", reason="usage")
    assert len(automatic_top_ups(engine)) == 3


@pytest.mark.postgres
def test_servers_spending_one_wallet_at_once_record_one_automatic_top_up_and_charge_it_once(
    fresh_postgres_url: str,
) -> None:
    engines = [create_wallet_engine(fresh_postgres_url) for _ in range(4)]
    upgrade(engines[0])
    gateway = FakePaymentGateway()
    servers = [wallet_on(e, gateway) for e in engines]
    servers[0].grant("alice", "1000.00", reason="start", granted_by="admin", idempotency_key="g-1")
    save_card(engines[0], gateway)
    servers[0].put_auto_top_up("alice", "900.00", amount_usd="20.00")

    start = threading.Barrier(len(servers))
    errors: list[BaseException] = []

    def spend(n: int) -> None:
        start.wait()
        try:
            for k in range(5):
                servers[n].spend("alice", "10.00", idempotency_key=f"s-{n}-{k}", reason="load")
        except InsufficientCredits:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(automatic_top_ups(engines[0])) == 1  # 20 spends crossed and stayed below: one in flight

    def charge(n: int) -> None:
        start.wait()
        servers[n].charge_auto_top_ups()

    threads = [threading.Thread(target=charge, args=(n,)) for n in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(gateway.charge_calls) == 1  # claimed by one server only
    assert servers[0].balance("alice") == Decimal("800.00")
    for e in engines:
        e.dispose()


def test_a_booking_of_a_wallet_without_a_rule_reads_no_rule(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wallet's lock says whether it has a rule: bookings of wallets without one (nearly all) send no
    statement about automatic top-up; a wallet with one reads its rule once per booking."""
    gateway = FakePaymentGateway()
    wallet = wallet_on(engine, gateway)
    for user in ("alice", "bob"):
        wallet.grant(user, "1000.00", reason="start", granted_by="admin", idempotency_key=f"g-{user}")
    wallet.put_auto_top_up("bob", "10.00", amount_usd="20.00")
    sent: list[str] = []
    execute = Driver._execute

    def counting(self: Driver, statement: Sql, params: Any) -> Any:
        sent.append(statement.sqlite)
        return execute(self, statement, params)

    monkeypatch.setattr(Driver, "_execute", counting)
    wallet.spend("alice", "1.00", idempotency_key="s-a", reason="usage")
    assert not [s for s in sent if "auto_top_up_rules" in s and not s.startswith("SELECT available")]
    sent.clear()
    wallet.spend("bob", "1.00", idempotency_key="s-b", reason="usage")  # above its threshold: the rule only
    assert len([s for s in sent if s.startswith("SELECT user_id, threshold")]) == 1
    assert not [s for s in sent if "auto_top_up_charges" in s]


def test_a_batch_of_spends_reads_the_rule_of_only_the_wallets_that_have_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's lock of its wallets (on PostgreSQL all of them in one statement) says which have a
    rule, like the single lock: items of wallets without one send nothing about automatic top-up, and a
    batch that takes a wallet with a rule below its threshold records its one automatic top-up."""
    gateway = FakePaymentGateway()
    wallet = wallet_on(engine, gateway)
    for user in ("alice", "bob", "carol"):
        wallet.grant(user, "100.00", reason="start", granted_by="admin", idempotency_key=f"g-{user}")
    wallet.put_auto_top_up("bob", "50.00", amount_usd="20.00")
    save_card(engine, gateway, "bob")
    sent: list[str] = []
    execute = Driver._execute

    def counting(self: Driver, statement: Sql, params: Any) -> Any:
        sent.append(statement.postgresql)
        return execute(self, statement, params)

    monkeypatch.setattr(Driver, "_execute", counting)
    items = [
        {"user_id": user, "credits": "10.00", "reason": "usage", "idempotency_key": f"b-{user}-{n}"}
        for n in range(3)
        for user in ("alice", "carol")
    ]
    results = wallet.spend_many(items)
    assert {r.status.value for r in results} == {"spent"}
    assert not [s for s in sent if s.startswith("SELECT user_id, threshold") or "auto_top_up_charges" in s]

    bob = [{"user_id": "bob", "credits": "30.00", "reason": "usage", "idempotency_key": f"c-{n}"} for n in range(2)]
    assert [r.status.value for r in wallet.spend_many(bob)] == ["spent", "spent"]  # 100 -> 70 -> 40 (< 50)
    assert [t.amount for t in automatic_top_ups(engine, "bob")] == [Usd.parse("20.00")]
