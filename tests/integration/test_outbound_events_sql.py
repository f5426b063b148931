"""Outbound events, balance alerts and webhook deliveries on real databases, under concurrency: what
the contract tests (one unit of work at a time) cannot show.

- An event whose transaction commits late (PostgreSQL gave it the lower `seq`) is numbered after the
  events published before it committed, so a consumer paging by number never skips it.
- Concurrent spends that cross a low-balance threshold fire its alert once.
- Two delivery workers deliver each event to each endpoint once.
- A spend that rolls back leaves no event; a spend's events cost one INSERT, its alerts no statement.
- Migration 0008 upgrades a database with wallets in it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from adapters.fake_webhook_sender import FakeWebhookSender
from adapters.sql.driver import Driver, Sql
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import alembic_config, upgrade
from adapters.sql.unit_of_work import SqlUnitOfWorkFactory, sql_unit_of_work_factory
from wallet_core.alerts import AlertState, BalanceLevel
from wallet_core.bookings import credit_booking
from wallet_core.errors import InsufficientCredits
from wallet_core.event_types import EventType
from wallet_core.ids import new_id
from wallet_core.ledger import CreditKind, TransactionKind
from wallet_core.money import Credits
from wallet_core.outbound_events import WalletEvent
from wallet_core.use_cases import grant_credits, list_events, spend_credits, verify_ledger
from wallet_core.use_cases.webhook_delivery import add_endpoint, deliver_webhooks
from wallet_core.webhooks_out import DeliveryStatus, SendResult, new_delivery


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "fresh_postgres_url")
    return url


@pytest.fixture
def pg_engine(fresh_postgres_url: str) -> Iterator[Engine]:
    engine = create_wallet_engine(fresh_postgres_url, pool_size=8, max_overflow=0)
    upgrade(engine)
    yield engine
    engine.dispose()


def told(name: str, user: str = "alice") -> WalletEvent:
    return WalletEvent(new_id("evt"), EventType.CREDITS_GRANTED, datetime.now(UTC), user, {"name": name})


def pull_all(uow: SqlUnitOfWorkFactory, cursor: str | None = None, **filters: str) -> tuple[list[WalletEvent], str]:
    """Every event after `cursor`, page by page, as a consumer pulls them (list_events publishes first)."""
    seen: list[WalletEvent] = []
    while True:
        page = list_events(uow=uow, after=cursor, limit=50, **filters)
        seen += page.events
        if not page.events:
            return seen, page.next_cursor
        cursor = page.next_cursor


# -- publishing order ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_event_that_commits_late_is_numbered_after_those_published_before_and_never_skipped(
    pg_engine: Engine,
) -> None:
    uow = sql_unit_of_work_factory(pg_engine)
    late, early = told("late"), told("early")
    late_written, early_published = threading.Event(), threading.Event()

    def slow_writer() -> None:  # writes its event first (the lower seq) and commits it last
        with uow() as tx:
            tx.outbox.add(late)
            tx.outbox.flush()  # the INSERT commit() would send: the row takes its seq now
            late_written.set()
            assert early_published.wait(30)
            tx.commit()

    def quick_writer() -> None:
        assert late_written.wait(30)
        with uow() as tx:
            tx.outbox.add(early)
            tx.commit()

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(slow_writer)
        pool.submit(quick_writer).result(timeout=30)
        first_pull, cursor = pull_all(uow)  # publishes while the late event is written but not committed
        early_published.set()
        slow.result(timeout=30)
    second_pull, _ = pull_all(uow, cursor)

    assert first_pull == [early]
    assert second_pull == [late]  # the consumer's next page has it: nothing skipped
    with pg_engine.connect() as conn:
        rows = {str(r[0]): int(r[1]) for r in conn.execute(text("SELECT id, seq FROM outbound_events"))}
        numbers = {str(r[0]): int(r[1]) for r in conn.execute(text("SELECT id, number FROM outbound_events"))}
    assert rows[late.id] < rows[early.id]  # written first
    assert numbers == {early.id: 1, late.id: 2}  # numbered in the order they committed


def test_a_consumer_pulling_while_writers_commit_sees_every_event_once_in_number_order(database_url: str) -> None:
    writers, each = 4, 20
    engine = create_wallet_engine(database_url, pool_size=writers + 2, max_overflow=0)
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine)
    written: list[str] = []
    done = threading.Event()

    def write(worker: int) -> None:
        rng = random.Random(worker)
        for n in range(each):
            with uow() as tx:
                for _ in range(rng.randint(1, 3)):
                    event = told(f"{worker}-{n}", f"user-{worker}")
                    tx.outbox.add(event)
                    written.append(event.id)
                tx.outbox.flush()
                time.sleep(rng.random() / 500)  # written, not committed yet: others commit meanwhile
                tx.commit()

    def consume() -> list[tuple[str, str]]:
        pulled: list[tuple[str, str]] = []
        cursor: str | None = None
        while True:
            finished = done.is_set()
            page = list_events(uow=uow, after=cursor, limit=7)
            pulled += [(e.id, page.next_cursor) for e in page.events]
            cursor = page.next_cursor
            if finished and not page.events:
                return pulled

    with ThreadPoolExecutor(writers + 1) as pool:
        consumer = pool.submit(consume)
        for future in [pool.submit(write, n) for n in range(writers)]:
            future.result(timeout=120)
        done.set()
        pulled = consumer.result(timeout=120)
    ids = [event_id for event_id, _ in pulled]
    assert len(ids) == len(set(ids)) == len(written)  # every event, once
    assert set(ids) == set(written)
    with engine.connect() as conn:
        numbers = {str(r[0]): int(r[1]) for r in conn.execute(text("SELECT id, number FROM outbound_events"))}
    assert [numbers[event_id] for event_id in ids] == list(range(1, len(ids) + 1))  # in number order, no gap
    engine.dispose()


# -- balance alerts under concurrency --------------------------------------------------------------


def test_twenty_concurrent_spends_that_cross_the_threshold_fire_one_balance_low(database_url: str) -> None:
    spenders = 20
    engine = create_wallet_engine(database_url, pool_size=spenders, max_overflow=0)
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine, low_balance_default=Credits(5000))  # 50.00
    user = f"spender-{uuid.uuid4().hex[:8]}"
    grant_credits(
        user_id=user, credits="100.00", reason="welcome", granted_by="admin", uow=uow, idempotency_key=f"welcome-{user}"
    )
    start = threading.Barrier(spenders)

    def spend(n: int) -> Credits:
        start.wait()
        return spend_credits(
            user_id=user, credits="5.00", idempotency_key=f"{user}-{n}", reason="load", actor="test", uow=uow
        ).balance

    with ThreadPoolExecutor(spenders) as pool:
        balances = list(pool.map(spend, range(spenders)))

    assert sorted(b.minor for b in balances) == list(range(0, 10_000, 500))  # each saw the others' spends
    events, _ = pull_all(uow, user_id=user)
    kinds = Counter(e.type for e in events)
    assert kinds == {
        EventType.CREDITS_GRANTED: 1,
        EventType.CREDITS_SPENT: spenders,
        EventType.BALANCE_LOW: 1,
        EventType.DEPLETED: 1,
    }
    [low] = [e for e in events if e.type is EventType.BALANCE_LOW]
    assert (low.data["balance"], low.data["low_balance_credits"]) == ("45.00", "50.00")  # the spend that crossed
    with uow(read_only=True) as tx:
        assert tx.alerts.get(user) == AlertState(None, BalanceLevel.DEPLETED)
    assert verify_ledger(uow=uow) == []
    engine.dispose()


# -- delivery workers ----------------------------------------------------------------------------------


class SlowSender(FakeWebhookSender):
    """Answers 200 after a moment, so two workers' rounds overlap."""

    def send(self, url: str, *, secrets: tuple[str, ...], message_id: str, body: bytes, at: datetime) -> SendResult:
        time.sleep(0.002)
        return super().send(url, secrets=secrets, message_id=message_id, body=body, at=at)


@pytest.mark.postgres
def test_two_workers_deliver_each_event_to_each_endpoint_once(pg_engine: Engine) -> None:
    uow = sql_unit_of_work_factory(pg_engine)
    sender = SlowSender()
    everything = [
        add_endpoint(
            url=f"https://hooks{n}.example.com/wallet", events=["*"], uow=uow, sender=sender, allow_private=False
        )
        for n in range(2)
    ]
    spends_only = add_endpoint(
        url="https://spends.example.com/wallet", events=["credits.spent"], uow=uow, sender=sender, allow_private=False
    )
    for n in range(6):
        user = f"user-{n}"
        grant_credits(
            user_id=user, credits="20.00", reason="welcome", granted_by="admin", uow=uow, idempotency_key=f"grant-{n}"
        )
        for m in range(3):
            spend_credits(
                user_id=user, credits="1.00", idempotency_key=f"spend-{n}-{m}", reason="use", actor="api", uow=uow
            )
    start = threading.Barrier(2)

    def work() -> int:
        start.wait()
        attempted = 0
        while True:
            round_ = deliver_webhooks(uow=uow, sender=sender, schedule=(5, 30), limit=4)
            attempted += round_.attempted
            if round_.published == 0 and round_.attempted == 0:
                return attempted

    with ThreadPoolExecutor(2) as pool:
        attempts = [future.result(timeout=120) for future in [pool.submit(work), pool.submit(work)]]

    events, _ = pull_all(uow)
    spent = [e for e in events if e.type is EventType.CREDITS_SPENT]
    assert len(events) == 6 * 4 and len(spent) == 6 * 3
    expected = Counter({(endpoint.url, e.id): 1 for endpoint in everything for e in events})
    expected.update({(spends_only.url, e.id): 1 for e in spent})
    assert Counter((s.url, s.message_id) for s in sender.sent) == expected  # each to each, once
    assert sum(attempts) == sum(expected.values())
    assert deliver_webhooks(uow=uow, sender=sender, schedule=(5, 30)).attempted == 0
    with uow(read_only=True) as tx:
        for endpoint in [*everything, spends_only]:
            deliveries = tx.deliveries.for_endpoint(endpoint.id, status=None, limit=500)
            assert {(d.status, d.attempts) for d in deliveries} == {(DeliveryStatus.DELIVERED, 1)}


@pytest.mark.postgres
def test_concurrent_claims_skip_the_deliveries_another_worker_holds_without_waiting(pg_engine: Engine) -> None:
    uow = sql_unit_of_work_factory(pg_engine)
    at = datetime.now(UTC)
    with uow() as tx:
        for n in range(4):
            tx.deliveries.add(
                replace(new_delivery("evt_1", "credits.spent", "we_1", at - timedelta(minutes=n)), id=f"whd_{n}")
            )
        tx.commit()
    with uow() as first, uow() as second:
        mine = first.deliveries.claim(at, at + timedelta(minutes=1), 2)  # locked until `first` ends
        started = time.monotonic()
        theirs = second.deliveries.claim(at, at + timedelta(minutes=1), 10)
        waited = time.monotonic() - started
        first.commit()
        second.commit()
    assert [d.id for d in mine] == ["whd_3", "whd_2"]  # oldest due first
    assert [d.id for d in theirs] == ["whd_1", "whd_0"]
    assert waited < 1  # skipped, not waited for (a lock wait would last the 5 s lock timeout)


# -- rollback and cost -------------------------------------------------------------------------------


def test_a_spend_that_rolls_back_leaves_no_event(database_url: str) -> None:
    engine = create_wallet_engine(database_url)
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine, low_balance_default=Credits(100))
    now = datetime.now(UTC)
    grant_credits(
        user_id="alice",
        credits="10.00",
        reason="trial",
        granted_by="admin",
        uow=uow,
        idempotency_key="trial",
        expires_at=now + timedelta(hours=1),
        now=lambda: now,
    )
    # Two hours on, the spend books the expired credits out first (an expiry and its events: credits.expired,
    # wallet.balance_low, wallet.depleted, all added to the outbox), then finds nothing to spend: refused,
    # the unit of work rolls back, and every event it added goes with it.
    with pytest.raises(InsufficientCredits):
        spend_credits(
            user_id="alice",
            credits="5.00",
            idempotency_key="too-late",
            reason="use",
            actor="api",
            uow=uow,
            now=lambda: now + timedelta(hours=2),
        )
    events, _ = pull_all(uow)
    assert [e.type for e in events] == [EventType.CREDITS_GRANTED]
    with uow(read_only=True) as tx:
        assert [t.kind for t in tx.ledger.transactions("alice", 10)] == [TransactionKind.GRANT]
        assert tx.alerts.get("alice") == AlertState(None, BalanceLevel.OK)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM outbound_events")).scalar() == 1
    engine.dispose()


def test_a_spends_events_cost_one_insert_and_its_alerts_no_statement(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_wallet_engine(database_url)
    upgrade(engine)
    uow = sql_unit_of_work_factory(engine, low_balance_default=Credits(5000))
    grant_credits(user_id="alice", credits="60.00", reason="trial", granted_by="admin", uow=uow, idempotency_key="g")
    sent: list[str] = []

    def counting(run: Any) -> Any:
        def wrapper(self: Driver, statement: Sql, params: Any) -> Any:
            sent.append(statement.postgresql if self.postgresql else statement.sqlite)
            return run(self, statement, params)

        return wrapper

    run_and_commit = Driver.run_and_commit

    def with_commit(self: Driver, statement: bytes) -> None:  # PostgreSQL: the events' INSERT and COMMIT
        sent.append(statement.decode())
        run_and_commit(self, statement)

    monkeypatch.setattr(Driver, "_execute", counting(Driver._execute))
    monkeypatch.setattr(Driver, "many", counting(Driver.many))
    monkeypatch.setattr(Driver, "run_and_commit", with_commit)
    costs = {}
    for key, credits in [("above", "5.00"), ("crossing", "10.00"), ("below", "1.00")]:
        sent.clear()
        spend_credits(user_id="alice", credits=credits, idempotency_key=key, reason="use", actor="api", uow=uow)
        inserts = [s for s in sent if s.startswith("INSERT INTO outbound_events")]
        reads = [s for s in sent if s not in inserts and ("alert_level" in s or "low_balance" in s)]
        costs[key] = (len(inserts), len(reads), sum("INSERT INTO wallets" in s for s in reads))
    # One INSERT for the spend's events (two of them when it crosses the threshold); the alert settings come
    # with the wallet's lock (one statement that reads them), and are written only when the level changes.
    assert costs == {"above": (1, 1, 0), "crossing": (1, 2, 1), "below": (1, 1, 0)}
    events, _ = pull_all(uow)
    assert [e.type for e in events][-4:] == [
        EventType.CREDITS_SPENT,
        EventType.CREDITS_SPENT,
        EventType.BALANCE_LOW,
        EventType.CREDITS_SPENT,
    ]
    engine.dispose()


# -- migration -----------------------------------------------------------------------------------------


def test_0008_upgrades_a_database_with_wallets_and_downgrades_back(database_url: str) -> None:
    engine = create_wallet_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0007")
    uow = sql_unit_of_work_factory(engine, low_balance_default=Credits(2000))
    now = datetime.now(UTC)
    with uow() as tx:  # recorded by the 0007 schema's statements (record reads no 0008 column)
        for user, credits in [("alice", 3000), ("bob", 500)]:
            tx.ledger.record(
                credit_booking(
                    user_id=user,
                    credits=Credits(credits),
                    kind=CreditKind.PAID,
                    reference_id=f"pi_{user}",
                    now=now,
                    reason="top-up",
                    actor="stripe",
                )
            )
        tx.commit()

    upgrade(engine)
    with uow(read_only=True) as tx:
        assert tx.ledger.balances("alice", now) == (Credits(3000), Credits(0))
        assert tx.alerts.get("alice") == tx.alerts.get("bob") == AlertState()
        assert tx.outbox.page(0, 10) == [] and tx.endpoints.all() == []
    # an existing wallet's level is set silently by its next change; the next crossing fires
    spend_credits(user_id="alice", credits="5.00", idempotency_key="s1", reason="use", actor="api", uow=uow)
    spend_credits(user_id="alice", credits="10.00", idempotency_key="s2", reason="use", actor="api", uow=uow)
    events, _ = pull_all(uow)
    assert [e.type for e in events] == [EventType.CREDITS_SPENT, EventType.CREDITS_SPENT, EventType.BALANCE_LOW]
    assert verify_ledger(uow=uow) == []

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0007")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT user_id, available FROM wallets ORDER BY user_id")).all() == [
            ("alice", 1500),
            ("bob", 500),
        ]
    upgrade(engine)
    with uow(read_only=True) as tx:
        assert tx.alerts.get("alice") == AlertState()
        assert tx.outbox.page(0, 10) == []
    events, _ = pull_all(uow)
    assert events == []
    engine.dispose()
