"""The SQL adapter against real databases: migrations, engine settings, and storage failures."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, select, text

from adapters.sql.driver import Driver, Sql
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import alembic_config, current_revision, upgrade
from adapters.sql.tables import holds, metadata, top_ups, wallets
from adapters.sql.unit_of_work import SqlUnitOfWork, sql_unit_of_work_factory
from wallet_core.bookings import credit_booking, settle_hold_booking
from wallet_core.errors import NotFound, StorageUnavailable
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ledger import Account, Booking, CreditKind, TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.ports import StoredEvent
from wallet_core.refunds import take_back_booking, top_up_lot_id
from wallet_core.topups import TopUp, TopUpStatus
from wallet_core.use_cases import read_wallet, spend_credits, verify_ledger

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def grant(reference: str = "r1", credits: int = 1000) -> Booking:
    return credit_booking(
        user_id="alice", credits=Credits(credits), kind=CreditKind.PROMOTIONAL, reference_id=reference,
        now=datetime.now(UTC), reason="test", actor="admin",
    )


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


MIGRATED_AT = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
SMALL_GRANTS = 1203  # more than one batch of the data migration


def _at_revision_0001_with_data(engine: Engine) -> None:
    """The 0001 schema holding alice (a top-up and a grant) and bob (many small grants), as 0001 wrote them."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    sqlite_db = engine.dialect.name == "sqlite"
    # 0001 stored datetimes as SQLAlchemy does: naive UTC text on SQLite, timestamptz on PostgreSQL.
    at = MIGRATED_AT.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") if sqlite_db else MIGRATED_AT
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO wallets (user_id, balance, updated_at) VALUES (:u, :b, :at)"),
            [{"u": "alice", "b": 3500, "at": at}, {"u": "bob", "b": SMALL_GRANTS * 5, "at": at}],
        )
        rows = [("ctx_topup", "alice", "top_up", 2500, 2500, "pi_1", "top-up tu_1", "stripe"),
                ("ctx_grant", "alice", "grant", 1000, 3500, "grant:k1", "welcome", "admin")]
        rows += [(f"ctx_small_{n:05d}", "bob", "grant", 5, 5 * (n + 1), f"grant:small{n}", "drip", "admin")
                 for n in range(SMALL_GRANTS)]
        conn.execute(
            text(
                "INSERT INTO credit_transactions (id, user_id, kind, credits, balance_after, reference_id, reason, "
                "actor, created_at) VALUES (:id, :u, :kind, :credits, :after, :ref, :reason, :actor, :at)"
            ),
            [dict(zip(("id", "u", "kind", "credits", "after", "ref", "reason", "actor"), row, strict=True), at=at)
             for row in rows],
        )


def test_migrating_0001_data_turns_every_credit_into_a_lot_with_balanced_postings(empty_engine: Engine) -> None:
    _at_revision_0001_with_data(empty_engine)
    upgrade(empty_engine)
    assert current_revision(empty_engine) == HEAD
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        assert tx.ledger.balances("alice", MIGRATED_AT) == (Credits(3500), Credits(0))
        assert tx.ledger.balances("bob", MIGRATED_AT) == (Credits(SMALL_GRANTS * 5), Credits(0))
        lots = sorted(tx.ledger.lock_wallet("alice", T0).lots, key=lambda lot: lot.kind)
        history = tx.ledger.transactions("alice", 10)
        audit = tx.ledger.audit()
        bob_lots = tx.ledger.lock_wallet("bob", T0).lots
    assert [(lot.kind, lot.granted, lot.remaining, lot.held, lot.created_at, lot.expires_at) for lot in lots] == [
        (CreditKind.PAID, Credits(2500), Credits(2500), Credits(0), MIGRATED_AT, None),
        (CreditKind.PROMOTIONAL, Credits(1000), Credits(1000), Credits(0), MIGRATED_AT, None),
    ]
    assert len(bob_lots) == SMALL_GRANTS and {lot.remaining for lot in bob_lots} == {Credits(5)}
    assert {(t.id, t.credits, t.held_change, t.balance_after, t.hold_id) for t in history} == {
        ("ctx_topup", Credits(2500), Credits(0), Credits(2500), None),
        ("ctx_grant", Credits(1000), Credits(0), Credits(3500), None),
    }
    assert all(t.metadata == {} for t in history)
    with empty_engine.connect() as conn:
        alice_postings = conn.execute(
            text("SELECT p.transaction_id, p.account, p.user_id, p.lot_id, p.amount FROM postings p "
                 "JOIN credit_transactions t ON t.id = p.transaction_id WHERE t.user_id = 'alice' "
                 "ORDER BY p.transaction_id, p.amount")
        ).all()
        assert conn.execute(text("SELECT COUNT(*) FROM postings")).scalar_one() == 2 * (SMALL_GRANTS + 2)
    paid, promo = lots[0].id, lots[1].id
    assert [tuple(row) for row in alice_postings] == [
        ("ctx_grant", "promotions", None, None, -1000),
        ("ctx_grant", "wallet", "alice", promo, 1000),
        ("ctx_topup", "stripe_funding", None, None, -2500),
        ("ctx_topup", "wallet", "alice", paid, 2500),
    ]
    assert audit.total_posted == Credits(0) and audit.unbalanced == []
    assert [(a.user_id, a.account, a.stored, a.posted, a.in_lots) for a in audit.accounts] == [
        ("alice", Account.WALLET, Credits(3500), Credits(3500), Credits(3500)),
        ("alice", Account.HELD, Credits(0), Credits(0), Credits(0)),
        ("bob", Account.WALLET, *[Credits(SMALL_GRANTS * 5)] * 3),
        ("bob", Account.HELD, Credits(0), Credits(0), Credits(0)),
    ]
    assert verify_ledger(uow=uow) == []
    # and the migrated wallet works: promotional credits go first
    spent = spend_credits(user_id="alice", credits="30.00", idempotency_key="after-migration", reason="use",
                          actor="test", uow=uow)
    assert spent.balance == Credits(500)
    with uow() as tx:
        assert {lot.kind: lot.remaining for lot in tx.ledger.lock_wallet("alice", T0).lots} == {
            CreditKind.PAID: Credits(500)}
    assert verify_ledger(uow=uow) == []


def test_downgrading_to_0001_gives_one_balance_back_and_upgrading_again_rebuilds_the_lots(
    empty_engine: Engine,
) -> None:
    _at_revision_0001_with_data(empty_engine)
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert current_revision(empty_engine) == "0001"
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT balance FROM wallets WHERE user_id = 'alice'")).scalar_one() == 3500
        assert conn.execute(text("SELECT COUNT(*) FROM credit_transactions")).scalar_one() == SMALL_GRANTS + 2
    upgrade(empty_engine)
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        assert tx.ledger.balances("alice", MIGRATED_AT) == (Credits(3500), Credits(0))
    assert verify_ledger(uow=uow) == []


def _insert_0002_top_up(engine: Engine) -> None:
    at = MIGRATED_AT.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") \
        if engine.dialect.name == "sqlite" else MIGRATED_AT
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO top_ups (id, user_id, amount_cents, currency, credits, status, payment_intent_id, "
                 "idempotency_key, created_at, updated_at) VALUES ('tu_1', 'alice', 2500, 'usd', 2500, 'succeeded', "
                 "'pi_1', 'key-1', :at, :at)"),
            {"at": at},
        )


def test_migrating_0002_top_ups_gives_them_nothing_refunded_and_an_empty_event_log(empty_engine: Engine) -> None:
    _at_revision_0001_with_data(empty_engine)
    with empty_engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
    _insert_0002_top_up(empty_engine)
    upgrade(empty_engine)
    assert current_revision(empty_engine) == HEAD
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        migrated = tx.top_ups.get("tu_1")
        assert tx.events.for_payment_intent("pi_1") == []
    assert migrated is not None
    assert (migrated.status, migrated.amount, migrated.refunded, migrated.credits_refunded, migrated.created_at) == (
        TopUpStatus.SUCCEEDED, Usd(2500), Usd(0), Credits(0), MIGRATED_AT)
    with uow() as tx:
        tx.top_ups.update(replace(migrated, status=TopUpStatus.PARTIALLY_REFUNDED, refunded=Usd(500),
                                  credits_refunded=Credits(500)), T0)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == replace(
            migrated, status=TopUpStatus.PARTIALLY_REFUNDED, refunded=Usd(500), credits_refunded=Credits(500))
    assert verify_ledger(uow=uow) == []


def test_downgrading_0003_drops_the_event_log_and_refunds_and_upgrading_again_works(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    _insert_0002_top_up(empty_engine)
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        top_up = tx.top_ups.get("tu_1")
        assert top_up is not None
        tx.top_ups.update(replace(top_up, status=TopUpStatus.REFUNDED, refunded=Usd(2500),
                                  credits_refunded=Credits(2500)), T0)
        tx.events.add(StoredEvent("evt_1", "charge.refunded", "pi_1", "tu_1", MIGRATED_AT, "refunded"))
        tx.commit()
    with empty_engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    assert current_revision(empty_engine) == "0002"
    with empty_engine.connect() as conn:
        schema = inspect(conn)
        assert "payment_events" not in schema.get_table_names()
        assert {c["name"] for c in schema.get_columns("top_ups")}.isdisjoint({"refunded_cents", "credits_refunded"})
        assert conn.execute(text("SELECT status FROM top_ups WHERE id = 'tu_1'")).scalar_one() == "refunded"
    upgrade(empty_engine)
    with uow() as tx:
        again = tx.top_ups.get("tu_1")
        assert tx.events.find("evt_1") is None
    assert again is not None and (again.status, again.refunded, again.credits_refunded) == (
        TopUpStatus.REFUNDED, Usd(0), Credits(0))
    with empty_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diffs == []


def test_lots_0002_made_from_top_ups_get_the_id_refunds_look_for(empty_engine: Engine) -> None:
    """A refund after spending books the debt on top_up_lot_id(intent); 0003 renames the lots 0002
    converted from 0001's top-ups (and their postings and hold allocations) to that id."""
    _at_revision_0001_with_data(empty_engine)
    with empty_engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
    # a hold placed at 0002 (as 0002's code wrote it): 1000 promotional credits first, then 2000 of the paid lot
    old_paid, promo = (_lot_0002_made_from(tx_id) for tx_id in ("ctx_topup", "ctx_grant"))
    allocations = ((promo, Credits(1000)), (old_paid, Credits(2000)))
    _hold_written_by_0002(empty_engine, allocations)
    with empty_engine.connect() as conn:
        bob_lots = set(conn.execute(text("SELECT id FROM credit_lots WHERE user_id = 'bob'")).scalars())
    paid = top_up_lot_id("pi_1")
    assert old_paid != paid

    upgrade(empty_engine)
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        lots = {lot.id: lot for lot in tx.ledger.lock_wallet("alice", T0).lots}
        moved = tx.holds.get("hold_1")
        assert {lot.id for lot in tx.ledger.lock_wallet("bob", T0).lots} == bob_lots  # grants keep their ids
    assert paid in lots and old_paid not in lots
    assert (lots[paid].kind, lots[paid].granted, lots[paid].remaining, lots[paid].held) == (
        CreditKind.PAID, Credits(2500), Credits(500), Credits(2000))
    # 0007 named the transaction that made each lot: the top-up's, not the hold's that came later
    assert {lot.id: lot.source_transaction_id for lot in lots.values()} == {paid: "ctx_topup", promo: "ctx_grant"}
    assert moved is not None and moved.allocations == tuple(
        (paid if lot_id == old_paid else lot_id, amount) for lot_id, amount in allocations)
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM postings WHERE lot_id = :old"), {"old": old_paid}).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM postings WHERE lot_id = :new"), {"new": paid}).scalar() == 3
    assert verify_ledger(uow=uow) == []

    # the hold is captured in full, then the whole payment is refunded: 500 back, 2000 of debt on its lot
    with uow() as tx:
        tx.ledger.lock_wallet("alice", T0)
        tx.ledger.record(settle_hold_booking(moved, capture=Credits(3000), kind=TransactionKind.CAPTURE,
                                             reference_id="capture:hold_1", now=MIGRATED_AT, reason=None, actor="api"))
        tx.ledger.record(take_back_booking(
            tx.ledger.lock_wallet("alice", T0), lot_id=paid, credits=Credits(2500), to_account=Account.STRIPE_FUNDING,
            kind=TransactionKind.REFUND, reference_id="refund:re_1", now=MIGRATED_AT, reason="refund",
        ))
        tx.commit()
    with uow() as tx:
        assert {lot.id: lot.remaining for lot in tx.ledger.lock_wallet("alice", T0).lots} == {paid: Credits(-2000)}
        alice = tx.ledger.audit().accounts[0]
    assert (alice.user_id, alice.account, alice.stored, alice.debt) == (
        "alice", Account.WALLET, Credits(-2000), Credits(2000))
    assert verify_ledger(uow=uow) == []


def _lot_0002_made_from(transaction_id: str) -> str:
    return "lot_" + hashlib.sha256(f"0002\x1f{transaction_id}".encode()).hexdigest()[:32]


def _hold_written_by_0002(engine: Engine, allocations: tuple[tuple[str, Credits], ...]) -> None:
    """alice's hold `hold_1` on `allocations`, with its transaction, postings and lot changes, written
    with explicit columns as the code of revision 0002 wrote them (today's code reads later columns)."""
    at = MIGRATED_AT.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") \
        if engine.dialect.name == "sqlite" else MIGRATED_AT
    total = sum(amount.minor for _, amount in allocations)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO credit_transactions (id, user_id, kind, credits, balance_after, reference_id, reason, "
                 "actor, created_at, held_change, metadata, hold_id) VALUES ('ctx_hold_1', 'alice', 'hold', :credits, "
                 "3500 - :held, 'hold:1', NULL, 'api', :at, :held, NULL, 'hold_1')"),
            {"credits": -total, "held": total, "at": at},
        )
        for lot_id, amount in allocations:
            conn.execute(
                text("INSERT INTO postings (transaction_id, account, user_id, lot_id, amount) VALUES "
                     "('ctx_hold_1', 'wallet', 'alice', :lot, :minus), ('ctx_hold_1', 'held', 'alice', :lot, :plus)"),
                {"lot": lot_id, "minus": -amount.minor, "plus": amount.minor},
            )
            conn.execute(
                text("UPDATE credit_lots SET remaining = remaining - :amount, held = held + :amount WHERE id = :lot"),
                {"lot": lot_id, "amount": amount.minor},
            )
        conn.execute(text("UPDATE wallets SET available = available - :held, held = held + :held "
                          "WHERE user_id = 'alice'"), {"held": total})
        conn.execute(
            text("INSERT INTO holds (id, user_id, amount, status, captured, reason, reference_id, created_at, "
                 "expires_at, updated_at) VALUES ('hold_1', 'alice', :held, 'open', 0, NULL, 'hold:1', :at, :at, :at)"),
            {"held": total, "at": at},
        )
        conn.execute(
            text("INSERT INTO hold_allocations (hold_id, position, lot_id, amount) "
                 "VALUES ('hold_1', :n, :lot, :amount)"),
            [{"n": n, "lot": lot_id, "amount": amount.minor} for n, (lot_id, amount) in enumerate(allocations)],
        )


def test_no_constraint_forbids_a_lot_in_debt(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        tx.ledger.record(grant())
        tx.commit()
    with empty_engine.begin() as conn:
        conn.execute(text("UPDATE credit_lots SET remaining = -123456789012"))
    with uow() as tx:
        [lot] = tx.ledger.lock_wallet("alice", T0).lots
        alice = tx.ledger.audit().accounts[0]
    assert lot.remaining == Credits(-123456789012)
    # no refund or dispute took anything back, so none of it is a recorded debt
    assert (alice.debt, alice.unexplained_debt) == (Credits(0), Credits(123456789012))


def test_every_row_change_is_stamped_with_the_instant_the_use_case_gives_not_the_server_clock(
    empty_engine: Engine,
) -> None:
    """updated_at of wallets, holds and top-ups is the `at` handed to the repository (the use case's
    injected clock), so a run under a test clock, or a replay, writes the instants it was told."""
    upgrade(empty_engine)
    created, changed = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        tx.ledger.lock_wallet("alice", changed)  # creates her wallet
        tx.ledger.lock_wallet_for_credit("bob", changed)
        tx.holds.add(Hold("hold_1", "alice", Credits(0), HoldStatus.OPEN, created, created, (), "hold:1"))
        tx.holds.update("hold_1", HoldStatus.RELEASED, Credits(0), changed)
        for top_up_id in ("tu_1", "tu_2"):
            tx.top_ups.add(TopUp(top_up_id, "alice", Usd(1000), "usd", Credits(10000), TopUpStatus.PENDING,
                                       f"pi_{top_up_id}", created))
        tx.top_ups.set_status("tu_1", TopUpStatus.SUCCEEDED, changed)
        top_up = tx.top_ups.get("tu_2")
        assert top_up is not None
        tx.top_ups.update(replace(top_up, status=TopUpStatus.FAILED), changed)
        tx.commit()
    with empty_engine.connect() as conn:
        stamps = [s for table in (wallets, holds, top_ups) for s in conn.execute(select(table.c.updated_at)).scalars()]
    assert stamps == [changed] * 5


def test_the_new_methods_cost_one_statement_each_and_audit_four(
    empty_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(empty_engine)
    _insert_0002_top_up(empty_engine)
    sent: list[str] = []

    def count(*args: Any) -> None:  # (connection, cursor, statement, parameters, context, executemany)
        sent.append(args[2])

    # The write path's statements go straight to the driver (adapters.sql.driver): count those too.
    def counting(run: Any) -> Any:
        def wrapper(self: Driver, statement: Sql, params: Any) -> Any:
            sent.append(statement.sqlite)
            return run(self, statement, params)

        return wrapper

    monkeypatch.setattr(Driver, "_execute", counting(Driver._execute))
    monkeypatch.setattr(Driver, "many", counting(Driver.many))
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        top_up = tx.top_ups.get("tu_1")
        assert top_up is not None
        logged = StoredEvent("evt_1", "charge.refunded", "pi_1", "tu_1", MIGRATED_AT, "refunded")
        event.listen(empty_engine, "before_cursor_execute", count)
        try:
            costs: dict[str, int] = {}
            calls: list[tuple[str, Callable[[], object]]] = [
                ("top_ups.update", lambda: tx.top_ups.update(replace(top_up, refunded=Usd(1)), T0)),
                ("events.add", lambda: tx.events.add(logged)),
                ("events.add again", lambda: tx.events.add(logged)),
                ("events.find", lambda: tx.events.find("evt_1")),
                ("events.find_with_top_up", lambda: tx.events.find_with_top_up("evt_1", "pi_1")),
                ("events.for_payment_intent", lambda: tx.events.for_payment_intent("pi_1")),
                ("audit", tx.ledger.audit),
            ]
            for name, call in calls:
                sent.clear()
                call()
                costs[name] = len(sent)
            sent.clear()
            with pytest.raises(NotFound):
                tx.top_ups.update(replace(top_up, id="tu_404"), T0)
            costs["top_ups.update unknown"] = len(sent)
        finally:
            event.remove(empty_engine, "before_cursor_execute", count)
    # PostgreSQL defers the event log's INSERT (Driver.defer): it is sent with the next statement's turn
    # (here events.find's) or with the COMMIT, not on its own.
    added = 0 if empty_engine.dialect.name == "postgresql" else 1
    assert costs == {"top_ups.update": 1, "events.add": added, "events.add again": added, "events.find": 1,
                     "events.find_with_top_up": 1, "events.for_payment_intent": 1, "audit": 4,
                     "top_ups.update unknown": 1}


def test_what_the_ledgers_reads_and_bookings_cost_in_statements(
    empty_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost list at the top of adapters/sql/ledger_repository.py: a history page costs one statement
    more than before 0007 (its postings, for every row at once), and a wallet without pending credits
    books and reads its balance at the cost it had."""
    upgrade(empty_engine)
    pg = empty_engine.dialect.name == "postgresql"
    sent: list[str] = []

    def counting(run: Any) -> Any:
        def wrapper(self: Driver, statement: Sql, params: Any) -> Any:
            if not isinstance(params, dict):
                params = list(params)  # an executemany's rows: with none, it sends nothing
                if not params:
                    return None
            sent.append(statement.sqlite)
            return run(self, statement, params)

        return wrapper

    def count(*args: Any) -> None:
        sent.append(args[2])

    monkeypatch.setattr(Driver, "_execute", counting(Driver._execute))
    monkeypatch.setattr(Driver, "many", counting(Driver.many))
    now = datetime.now(UTC)
    later = now + timedelta(days=1)

    def credit(reference: str, effective_at: datetime | None = None) -> Booking:
        return credit_booking(user_id="alice", credits=Credits(1000), kind=CreditKind.PROMOTIONAL,
                              reference_id=reference, now=now, reason="test", actor="admin", effective_at=effective_at)

    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        tx.ledger.record(credit("first"))  # the wallet exists: what follows is every write's cost
        event.listen(empty_engine, "before_cursor_execute", count)
        try:
            costs: dict[str, int] = {}

            def cost(name: str, call: Any) -> Any:
                sent.clear()
                answer = call()
                costs[name] = len(sent)
                return answer

            cost("lock_wallet", lambda: tx.ledger.lock_wallet("alice", now))
            granted = cost("record a grant", lambda: tx.ledger.record(credit("second")))
            cost("balances", lambda: tx.ledger.balances("alice", now))
            cost("record a pending grant", lambda: tx.ledger.record(credit("pending", later)))
            cost("record after it", lambda: tx.ledger.record(credit("third")))
            cost("balances with pending credits", lambda: tx.ledger.balances("alice", now))
            cost("transactions", lambda: tx.ledger.transactions("alice", 20))
            cost("transactions, none", lambda: tx.ledger.transactions("nobody", 20))
            cost("find_transaction_by_reference", lambda: tx.ledger.find_transaction_by_reference("second"))
            cost("find_transaction", lambda: tx.ledger.find_transaction(granted.id))
            cost("postings_of", lambda: tx.ledger.postings_of(granted.id))
            cost("lots", lambda: tx.ledger.lots(["lot_a", "lot_b"]))
            cost("live_lots", lambda: tx.ledger.live_lots("alice"))
            cost("revert_audit, no reverts", tx.ledger.revert_audit)
        finally:
            event.remove(empty_engine, "before_cursor_execute", count)
        assert tx.ledger.balances("alice", now) == (Credits(3000), Credits(0))
        assert tx.ledger.balances("alice", later) == (Credits(4000), Credits(0))
    # SQLite: the wallet upsert, the row, then an executemany each for postings and the lot; one more
    # for a booking while credits are pending (its balance after leaves them out). PostgreSQL: one.
    booking = 1 if pg else 4
    assert costs == {
        "lock_wallet": 2,
        "record a grant": booking,
        "balances": 1,
        "record a pending grant": booking + (0 if pg else 1),
        "record after it": booking + (0 if pg else 1),
        "balances with pending credits": 1,
        "transactions": 2,
        "transactions, none": 1,
        "find_transaction_by_reference": 1,
        "find_transaction": 2,
        "postings_of": 1,
        "lots": 1,
        "live_lots": 1,
        "revert_audit, no reverts": 1,
    }


def test_sqlite_uses_wal_foreign_keys_and_a_busy_timeout(sqlite_url: str) -> None:
    engine = create_wallet_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5_000  # WALLET_DB_LOCK_TIMEOUT_SECONDS
    engine.dispose()
    engine = create_wallet_engine(sqlite_url, lock_timeout=1.5)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1_500
    engine.dispose()


def test_sqlite_time_in_the_writer_queue_counts_against_the_lock_timeout(sqlite_url: str) -> None:
    """A writer that waited 0.6 s behind another thread of the process may wait only the rest of the
    2 s bound for SQLite's lock; its connection gets the whole bound back afterwards."""
    import threading
    import time

    from adapters.sql.unit_of_work import SqlUnitOfWork

    engine = create_wallet_engine(sqlite_url, lock_timeout=2.0, pool_size=2, max_overflow=0)
    upgrade(engine)
    first_in = threading.Event()

    def hold_the_queue() -> None:
        with SqlUnitOfWork(engine):
            first_in.set()
            time.sleep(0.6)

    holder = threading.Thread(target=hold_the_queue)
    holder.start()
    first_in.wait(5)
    with SqlUnitOfWork(engine) as tx:
        during = tx._connection().connection.driver_connection.execute("PRAGMA busy_timeout").fetchone()[0]  # type: ignore[union-attr]
    holder.join()
    assert 1_000 <= during <= 1_500, during
    pooled = [engine.raw_connection(), engine.raw_connection()]  # both, without beginning a transaction
    try:
        busy = [c.driver_connection.execute("PRAGMA busy_timeout").fetchone()[0] for c in pooled]  # type: ignore[union-attr]
        assert busy == [2_000, 2_000]
    finally:
        for c in pooled:
            c.close()
    engine.dispose()


def test_sqlite_transactions_take_the_write_lock_at_once(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_wallet_engine(sqlite_url)
    upgrade(engine)
    other = sqlite3.connect(tmp_path / "wallet.sqlite3", timeout=0, isolation_level=None)
    with SqlUnitOfWork(engine) as tx:
        tx.ledger.balances("alice", datetime.now(UTC))  # a read, but BEGIN IMMEDIATE already holds the writer lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.rollback()
    other.close()
    engine.dispose()


def test_sqlite_units_of_work_of_one_process_take_turns_and_give_up_after_the_busy_timeout(sqlite_url: str) -> None:
    engine = create_wallet_engine(sqlite_url, connect_args={"timeout": 0.3})
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine)
    inside, leave = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with uow() as tx:
            tx.ledger.record(grant())
            inside.set()
            leave.wait(5)
            order.append("first commits")
            tx.commit()

    def second() -> None:
        with uow() as tx:  # waits for `first`, then sees what it committed
            order.append("second enters")
            assert tx.ledger.balances("alice", datetime.now(UTC))[0] == Credits(1000)

    holder = threading.Thread(target=first)
    holder.start()
    assert inside.wait(5)
    with pytest.raises(StorageUnavailable, match="database is locked"), uow():  # held longer than the timeout
        pass
    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.1)  # the waiter is queued behind `first` by now
    leave.set()
    holder.join(10)
    waiter.join(10)
    assert order == ["first commits", "second enters"]
    with uow() as tx:  # the turn was given back
        assert tx.ledger.balances("alice", datetime.now(UTC))[0] == Credits(1000)
    engine.dispose()


def test_sqlite_readers_neither_wait_for_a_writer_nor_see_what_it_has_not_committed(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = create_wallet_engine(sqlite_url, connect_args={"timeout": 0.3})
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine)
    with uow() as tx:
        tx.ledger.record(grant("before"))
        tx.commit()
    # Another process is in the middle of a write: it holds SQLite's writer lock.
    writer = sqlite3.connect(tmp_path / "wallet.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE wallets SET available = available + 999 WHERE user_id = 'alice'")
    try:
        started = time.monotonic()
        assert read_wallet(user_id="alice", uow=uow).balance == Credits(1000)  # the committed balance
        assert verify_ledger(uow=uow) == []  # `wallet verify` holds up no payment, and waits for none
        assert time.monotonic() - started < 0.3  # neither waited for the busy timeout
        with pytest.raises(StorageUnavailable, match="locked"), uow() as tx:  # a writer still waits, then 503
            tx.ledger.record(grant("after"))
        with pytest.raises(RuntimeError, match="read-only"), uow(read_only=True) as tx:
            tx.commit()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        engine.dispose()


def test_a_read_only_unit_of_work_reads_one_snapshot_while_others_commit(empty_engine: Engine) -> None:
    # What `wallet verify` relies on: its audit is several statements; a payment committed between two
    # of them must not make the ledger look unbalanced.
    upgrade(empty_engine)
    uow = sql_unit_of_work_factory(empty_engine)
    with uow() as tx:
        tx.ledger.record(grant("first"))
        tx.commit()
    now = datetime.now(UTC)
    with uow(read_only=True) as reader:
        assert reader.ledger.balances("alice", now)[0] == Credits(1000)
        with uow() as writer:  # another request commits meanwhile
            writer.ledger.record(grant("second"))
            writer.commit()
        assert reader.ledger.balances("alice", now)[0] == Credits(1000)  # still the reader's snapshot
        assert reader.ledger.find_transaction_by_reference("second") is None
        audit = reader.ledger.audit()
    assert audit.unbalanced == [] and audit.total_posted == Credits(0)
    assert [a.stored for a in audit.accounts if a.user_id == "alice"] == [Credits(1000), Credits(0)]
    with uow(read_only=True) as reader:  # a new unit of work sees it
        assert reader.ledger.balances("alice", now)[0] == Credits(2000)


def test_postgresql_urls_are_served_by_psycopg_3() -> None:
    engine = create_wallet_engine("postgresql://wallet:secret@db.invalid/wallet")
    assert engine.dialect.driver == "psycopg"
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


def test_an_unopenable_sqlite_file_is_storage_unavailable(tmp_path: Path) -> None:
    engine = create_wallet_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite3'}")
    with pytest.raises(StorageUnavailable, match="unable to open"), SqlUnitOfWork(engine) as tx:
        tx.ledger.balances("alice", datetime.now(UTC))
    engine.dispose()


def test_a_locked_sqlite_file_is_storage_unavailable_and_writes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    setup = create_wallet_engine(sqlite_url)
    upgrade(setup)
    setup.dispose()
    holder = sqlite3.connect(tmp_path / "wallet.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    engine = create_wallet_engine(sqlite_url, connect_args={"timeout": 0.2})
    try:
        with pytest.raises(StorageUnavailable, match="database is locked"), SqlUnitOfWork(engine) as tx:
            tx.ledger.record(grant())
            tx.commit()
    finally:
        holder.rollback()
        holder.close()
    with SqlUnitOfWork(engine) as tx:
        assert tx.ledger.balances("alice", datetime.now(UTC)) == (Credits(0), Credits(0))
        assert tx.ledger.find_transaction_by_reference("r1") is None
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("killed_before", ["record", "commit"])
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
        tx.ledger.balances("alice", datetime.now(UTC))
        if killed_before == "record":
            kill()
        tx.ledger.record(grant(reference))
        kill()
        tx.commit()
    with SqlUnitOfWork(engine) as tx:  # the pool recovers
        assert tx.ledger.find_transaction_by_reference(reference) is None
    admin.dispose()
    engine.dispose()
