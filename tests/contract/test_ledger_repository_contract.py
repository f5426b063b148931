"""One contract for every LedgerRepository + UnitOfWork: in memory, SQLite file and PostgreSQL.

The in-memory fake is what the unit tests trust, so it must behave like the databases do: every test
here runs the same calls on each backend and expects the very same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from adapters.sql.engine import create_wallet_engine
from adapters.sql.migrate import upgrade
from adapters.sql.unit_of_work import sql_unit_of_work_factory
from wallet_core.bookings import credit_booking, expiry_booking, hold_booking, settle_hold_booking, spend_booking
from wallet_core.errors import DuplicateReference, DuplicateTopUp, NotFound
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ids import new_id
from wallet_core.ledger import (
    Account,
    Booking,
    CreditKind,
    CreditTransaction,
    Lot,
    LotChange,
    Posting,
    TransactionCursor,
    TransactionKind,
    WalletState,
)
from wallet_core.money import Credits, Usd
from wallet_core.ports import AccountAudit, StoredEvent, UnitOfWork
from wallet_core.refunds import take_back_booking, top_up_lot_id
from wallet_core.topups import TopUp, TopUpActivity, TopUpStatus
from wallet_core.use_cases import verify_ledger

Uow = Callable[..., UnitOfWork]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOUR = timedelta(hours=1)
ALL_TABLES = "hold_allocations, holds, postings, credit_lots, credit_transactions, wallets, top_ups, payment_events"


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


# -- helpers ---------------------------------------------------------------------------------------
def credit(
    user: str = "alice",
    credits: int = 1000,
    *,
    kind: CreditKind = CreditKind.PROMOTIONAL,
    reference: str | None = None,
    at: datetime = T0,
    expires_at: datetime | None = None,
    metadata: dict[str, str] | None = None,
    booking_id: str | None = None,
    lot_id: str | None = None,
) -> Booking:
    booking = credit_booking(
        user_id=user,
        credits=Credits(credits),
        kind=kind,
        reference_id=reference or new_id("ref"),
        now=at,
        reason="because",
        actor="admin",
        expires_at=expires_at,
        metadata=metadata,
    )
    if lot_id is not None:  # a chosen lot id, for checks that depend on the order of ids
        lot = replace(booking.new_lots[0], id=lot_id)
        postings = tuple(replace(p, lot_id=lot_id) if p.lot_id else p for p in booking.postings)
        booking = replace(booking, new_lots=(lot,), postings=postings)
    return booking if booking_id is None else replace(booking, id=booking_id)


def spend(state: WalletState, credits: int, *, reference: str | None = None, at: datetime = T0) -> Booking:
    return spend_booking(
        state, credits=Credits(credits), reference_id=reference or new_id("spend"), now=at, reason="used", actor="api"
    )


def place(tx: UnitOfWork, user: str, credits: int, *, at: datetime = T0, ttl: timedelta = HOUR) -> Hold:
    state = tx.ledger.lock_wallet(user, T0)
    hold_id = new_id("hold")
    booking, allocations = hold_booking(
        state,
        hold_id=hold_id,
        credits=Credits(credits),
        reference_id=f"hold:{hold_id}",
        now=at,
        reason="reserve",
        actor="api",
    )
    tx.ledger.record(booking)
    hold = Hold(
        id=hold_id,
        user_id=user,
        amount=Credits(credits),
        status=HoldStatus.OPEN,
        created_at=at,
        expires_at=at + ttl,
        allocations=allocations,
        reference_id=f"hold:{hold_id}",
        reason="reserve",
    )
    tx.holds.add(hold)
    return hold


def settle(tx: UnitOfWork, hold: Hold, capture: int, *, at: datetime = T0) -> CreditTransaction:
    kind = TransactionKind.CAPTURE if capture else TransactionKind.RELEASE
    tx.ledger.lock_wallet(hold.user_id, T0)
    booked = tx.ledger.record(
        settle_hold_booking(
            hold,
            capture=Credits(capture),
            kind=kind,
            reference_id=f"{kind}:{hold.id}",
            now=at,
            reason=None,
            actor="api",
        )
    )
    status = HoldStatus.CAPTURED if capture else HoldStatus.RELEASED
    tx.holds.update(hold.id, status, Credits(capture), T0)
    return booked


def balances(uow: Uow, user: str = "alice", now: datetime = T0) -> tuple[Credits, Credits]:
    with uow() as tx:
        return tx.ledger.balances(user, now)


def live_lots(uow: Uow, user: str = "alice") -> dict[str, tuple[int, int]]:
    """{lot id: (remaining, held)} of the lots lock_wallet returns (their order is not part of the contract)."""
    with uow() as tx:
        return {lot.id: (lot.remaining.minor, lot.held.minor) for lot in tx.ledger.lock_wallet(user, T0).lots}


def c(*values: int) -> tuple[Credits, ...]:
    return tuple(Credits(v) for v in values)


def top_up(
    top_up_id: str = "tu_1", *, user: str = "alice", intent: str = "pi_1", key: str | None = "key-1", cents: int = 1000
) -> TopUp:
    return TopUp(
        id=top_up_id,
        user_id=user,
        amount=Usd(cents),
        currency="usd",
        credits=Credits(cents * 10),
        status=TopUpStatus.PENDING,
        payment_intent_id=intent,
        created_at=T0,
        idempotency_key=key,
    )


# -- reading an empty ledger -----------------------------------------------------------------------
def test_an_unknown_user_has_zero_balances_and_nothing_else(uow: Uow) -> None:
    with uow() as tx:
        assert tx.ledger.balances("nobody", T0) == c(0, 0)
        assert tx.ledger.transactions("nobody", 10) == []
        assert tx.ledger.transactions("nobody", 10, TransactionCursor(T0, "ctx_z")) == []
        assert tx.ledger.find_transaction_by_reference("nothing") is None
        assert tx.holds.get("hold_404") is None
        assert tx.ledger.users_with_expired_credits(T0, 10) == []
        assert tx.holds.expired_open(T0, 10) == []
        audit = tx.ledger.audit()
    assert (audit.total_posted, audit.unbalanced, audit.accounts) == (Credits(0), [], [])


# -- record ----------------------------------------------------------------------------------------
def test_record_moves_the_balances_and_returns_the_balance_after(uow: Uow) -> None:
    grant = credit(credits=1000, reference="grant:1", metadata={"note": "ünïcode ✓", "campaign": "spring"})
    paid = credit(credits=550, kind=CreditKind.PAID, reference="pi_1", at=T0 + timedelta(seconds=1))
    with uow() as tx:
        first = tx.ledger.record(grant)
        second = tx.ledger.record(paid)
        assert tx.ledger.balances("alice", T0) == c(1550, 0)
        tx.commit()
    assert (first.balance_after, second.balance_after) == c(1000, 1550)
    assert first == CreditTransaction(
        id=grant.id,
        user_id="alice",
        kind=TransactionKind.GRANT,
        credits=Credits(1000),
        held_change=Credits(0),
        balance_after=Credits(1000),
        reference_id="grant:1",
        created_at=T0,
        reason="because",
        actor="admin",
        metadata={"note": "ünïcode ✓", "campaign": "spring"},
        hold_id=None,
    )
    assert (second.kind, second.credits, second.metadata) == (TransactionKind.TOP_UP, Credits(550), {})
    assert balances(uow) == c(1550, 0)
    with uow() as tx:
        assert tx.ledger.find_transaction_by_reference("grant:1") == first
        assert tx.ledger.find_transaction_by_reference("pi_1") == second
        assert tx.ledger.transactions("alice", 10) == [second, first]
        assert list(tx.ledger.transactions("alice", 10)[1].metadata) == ["note", "campaign"]  # in their order


def test_record_creates_lots_and_lock_wallet_returns_the_live_ones(uow: Uow) -> None:
    promo = credit(credits=300, expires_at=T0 + 24 * HOUR, at=T0)
    paid = credit(credits=1000, kind=CreditKind.PAID, at=T0 + HOUR)
    with uow() as tx:
        assert tx.ledger.lock_wallet("alice", T0) == WalletState("alice", Credits(0), Credits(0), ())
        tx.ledger.record(promo)
        tx.ledger.record(paid)
        tx.commit()
    with uow() as tx:
        state = tx.ledger.lock_wallet("alice", T0)
    assert (state.user_id, state.available, state.held) == ("alice", Credits(1300), Credits(0))
    assert sorted(state.lots, key=lambda lot: lot.id) == sorted(promo.new_lots + paid.new_lots, key=lambda lot: lot.id)
    lot = next(lot for lot in state.lots if lot.kind is CreditKind.PROMOTIONAL)
    assert lot == Lot(
        id=promo.new_lots[0].id,
        user_id="alice",
        kind=CreditKind.PROMOTIONAL,
        granted=Credits(300),
        remaining=Credits(300),
        held=Credits(0),
        created_at=T0,
        expires_at=T0 + 24 * HOUR,
    )


def test_a_spend_takes_from_the_lots_in_order_and_used_up_lots_are_no_longer_live(uow: Uow) -> None:
    promo = credit(credits=300, expires_at=T0 + 24 * HOUR)
    paid = credit(credits=1000, kind=CreditKind.PAID)
    with uow() as tx:
        tx.ledger.record(promo)
        tx.ledger.record(paid)
        tx.commit()
    with uow() as tx:
        booked = tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 450, reference="spend:k1"))
        tx.commit()
    assert (booked.kind, booked.credits, booked.held_change, booked.balance_after) == (
        TransactionKind.SPEND,
        Credits(-450),
        Credits(0),
        Credits(850),
    )
    assert live_lots(uow) == {paid.new_lots[0].id: (850, 0)}  # the promotional lot went first, and is gone
    assert balances(uow) == c(850, 0)


def test_record_applies_every_lot_change_even_two_to_one_lot_or_one_to_a_lot_it_creates(uow: Uow) -> None:
    existing = credit(credits=1000, kind=CreditKind.PAID)
    old = existing.new_lots[0].id
    fresh = replace(
        existing.new_lots[0],
        id="lot_fresh",
        kind=CreditKind.PROMOTIONAL,
        granted=Credits(100),
        remaining=Credits(100),
        created_at=T0 + HOUR,
    )
    legs = [
        (Account.WALLET, 100, "lot_fresh"),
        (Account.PROMOTIONS, -100, None),
        (Account.WALLET, -30, "lot_fresh"),
        (Account.HELD, 30, "lot_fresh"),
        (Account.WALLET, -10, old),
        (Account.WALLET, -5, old),
        (Account.REVENUE, 15, None),
    ]
    booking = Booking(
        id="ctx_mixed",
        user_id="alice",
        kind=TransactionKind.GRANT,
        reference_id="mixed",
        created_at=T0 + HOUR,
        postings=tuple(
            Posting(account, Credits(amount), "alice" if account.per_user else None, lot)
            for account, amount, lot in legs
        ),
        new_lots=(fresh,),
        lot_changes=(
            LotChange("lot_fresh", remaining=Credits(-30), held=Credits(30)),
            LotChange(old, remaining=Credits(-10)),
            LotChange(old, remaining=Credits(-5)),
        ),
    )
    with uow() as tx:
        tx.ledger.record(existing)
        booked = tx.ledger.record(booking)
        tx.commit()
    assert (booked.credits, booked.held_change, booked.balance_after) == c(55, 30, 1055)
    assert live_lots(uow) == {old: (985, 0), "lot_fresh": (70, 30)}
    assert balances(uow) == c(1055, 30)
    assert verify_ledger(uow=uow) == []


def test_large_amounts_are_exact(uow: Uow) -> None:
    huge = 10**14 - 1  # far beyond 32 bits
    with uow() as tx:
        tx.ledger.record(credit(credits=huge, kind=CreditKind.PAID, reference="big"))
        tx.commit()
    with uow() as tx:
        assert tx.ledger.balances("alice", T0) == c(huge, 0)
        booked = tx.ledger.find_transaction_by_reference("big")
        audit = tx.ledger.audit()
    assert booked is not None and booked.credits == Credits(huge) and booked.kind is TransactionKind.TOP_UP
    assert audit.accounts[0] == AccountAudit("alice", Account.WALLET, Credits(huge), Credits(huge), Credits(huge))


# -- duplicates ------------------------------------------------------------------------------------
def test_a_duplicate_reference_is_refused_and_changes_nothing(uow: Uow) -> None:
    with uow() as tx:
        original = tx.ledger.record(credit(credits=1000, reference="pi_1", kind=CreditKind.PAID))
        tx.commit()
    lots_before = live_lots(uow)
    with uow() as tx:
        with pytest.raises(DuplicateReference):
            tx.ledger.record(credit(credits=999, reference="pi_1"))
        # nothing moved, even before the rollback the caller owes
        assert tx.ledger.balances("alice", T0) == c(1000, 0)
        assert tx.ledger.find_transaction_by_reference("pi_1") == original
        assert [t.id for t in tx.ledger.transactions("alice", 10)] == [original.id]
        assert {lot.id for lot in tx.ledger.lock_wallet("alice", T0).lots} == set(lots_before)
        state = tx.ledger.lock_wallet("alice", T0)
        with pytest.raises(DuplicateReference):  # a spend: its lot changes are not applied either
            tx.ledger.record(spend(state, 400, reference="pi_1"))
        with pytest.raises(DuplicateReference):  # a hold: the held balance does not move
            tx.ledger.record(
                hold_booking(
                    state, hold_id="hold_x", credits=Credits(100), reference_id="pi_1", now=T0, reason=None, actor=None
                )[0]
            )
        assert tx.ledger.balances("alice", T0) == c(1000, 0)
        assert {lot.id: (lot.remaining.minor, lot.held.minor) for lot in tx.ledger.lock_wallet("alice", T0).lots} == (
            lots_before
        )
        tx.rollback()
    with uow() as tx:  # another user cannot reuse the reference either
        with pytest.raises(DuplicateReference):
            tx.ledger.record(credit("bob", 5, reference="pi_1"))
        tx.rollback()
        assert tx.ledger.balances("bob", T0) == c(0, 0)
    assert balances(uow) == c(1000, 0)
    with uow() as tx:
        audit = tx.ledger.audit()
    assert [a.user_id for a in audit.accounts] == ["alice", "alice"]
    assert audit.total_posted == Credits(0)


def test_a_duplicate_within_one_unit_of_work_is_refused(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="same"))
        with pytest.raises(DuplicateReference):
            tx.ledger.record(credit(credits=100, reference="same"))
        assert tx.ledger.balances("alice", T0) == c(100, 0)
        tx.commit()
    assert balances(uow) == c(100, 0)


# -- balances and expiry ---------------------------------------------------------------------------
def test_balances_leave_out_promotional_credits_past_expiry_before_the_expiry_run(uow: Uow) -> None:
    ends = T0 + HOUR
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, expires_at=ends))
        tx.ledger.record(credit(credits=500, kind=CreditKind.PAID))
        tx.ledger.record(credit(credits=200))  # promotional, never expires
        tx.commit()
    assert balances(uow, now=ends - timedelta(microseconds=1)) == c(1700, 0)
    assert balances(uow, now=ends) == c(700, 0)  # expiry is inclusive
    assert balances(uow, now=ends + 24 * HOUR) == c(700, 0)
    with uow() as tx:  # the stored balance still counts them until they are booked out
        assert tx.ledger.lock_wallet("alice", T0).available == Credits(1700)
        booking = expiry_booking(tx.ledger.lock_wallet("alice", T0), ends)
        assert booking is not None
        booked = tx.ledger.record(booking)
        tx.commit()
    assert (booked.kind, booked.credits, booked.balance_after) == (TransactionKind.EXPIRY, Credits(-1000), Credits(700))
    assert balances(uow, now=ends + HOUR) == c(700, 0)
    with uow() as tx:
        assert tx.ledger.lock_wallet("alice", T0).available == Credits(700)
        assert tx.ledger.users_with_expired_credits(ends + HOUR, 10) == []


def test_lock_for_credit_returns_only_the_lots_in_debt_and_the_expired_ones(uow: Uow) -> None:
    ends = T0 + HOUR
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, expires_at=ends, lot_id="lot_expiring"))
        tx.ledger.record(credit(credits=500, kind=CreditKind.PAID, lot_id="lot_paid"))
        tx.ledger.record(credit(credits=200, lot_id="lot_forever"))
        tx.commit()
    with uow() as tx:
        before = tx.ledger.lock_wallet_for_credit("alice", ends - timedelta(microseconds=1))
        after = tx.ledger.lock_wallet_for_credit("alice", ends)
        full = tx.ledger.lock_wallet("alice", T0)
        # the paid lot goes into debt: a refund of 800 after its credits were spent
        tx.ledger.record(
            replace(
                spend(full, 1500, at=ends - HOUR),
                lot_changes=(LotChange("lot_paid", remaining=Credits(-800)),),
                postings=(
                    Posting(Account.WALLET, Credits(-800), "alice", "lot_paid"),
                    Posting(Account.REVENUE, Credits(800)),
                ),
            )
        )
        in_debt = tx.ledger.lock_wallet_for_credit("alice", ends - timedelta(microseconds=1))
    assert before.lots == () and before.available == Credits(1700)
    assert [lot.id for lot in after.lots] == ["lot_expiring"]
    assert {lot.id for lot in full.lots} == {"lot_expiring", "lot_paid", "lot_forever"}
    assert [lot.id for lot in in_debt.lots] == ["lot_paid"] and in_debt.lots[0].remaining == Credits(-300)


def test_users_with_expired_credits_are_sorted_limited_and_only_those_not_booked_out(uow: Uow) -> None:
    ends = T0 + HOUR
    users = ["bob", "Alice", "carol", "a.b", "a-b", "zed"]
    with uow() as tx:
        for user in users:
            tx.ledger.record(credit(user, 100, expires_at=ends))
        tx.ledger.record(credit("later", 100, expires_at=ends + HOUR))  # not expired yet
        tx.ledger.record(credit("paid", 100, kind=CreditKind.PAID))  # paid credits never expire
        tx.ledger.record(credit("forever", 100))  # promotional without expiry
        spent = credit("spent", 100, expires_at=ends)
        tx.ledger.record(spent)
        tx.ledger.record(spend(tx.ledger.lock_wallet("spent", T0), 100, at=T0))  # nothing left in it
        booking = expiry_booking(tx.ledger.lock_wallet("zed", T0), ends)  # booked out already
        assert booking is not None
        tx.ledger.record(booking)
        tx.commit()
    with uow() as tx:
        assert tx.ledger.users_with_expired_credits(ends, 100) == ["Alice", "a-b", "a.b", "bob", "carol"]
        assert tx.ledger.users_with_expired_credits(ends, 2) == ["Alice", "a-b"]
        assert tx.ledger.users_with_expired_credits(ends - timedelta(microseconds=1), 100) == []
        assert tx.ledger.users_with_expired_credits(ends + HOUR, 100) == [
            "Alice",
            "a-b",
            "a.b",
            "bob",
            "carol",
            "later",
        ]


# -- history ---------------------------------------------------------------------------------------
def test_transactions_are_newest_first_limited_and_per_user(uow: Uow) -> None:
    with uow() as tx:
        for i in range(5):
            tx.ledger.record(credit(credits=100 + i, reference=f"a{i}", at=T0 + timedelta(seconds=i)))
            tx.ledger.record(credit("bob", 1, reference=f"b{i}", at=T0 + timedelta(seconds=i)))
        tx.commit()
    with uow() as tx:
        alice = tx.ledger.transactions("alice", 3)
        bob = tx.ledger.transactions("bob", 100)
        assert tx.ledger.transactions("alice", 0) == []
    assert [t.reference_id for t in alice] == ["a4", "a3", "a2"]
    assert [t.balance_after for t in alice] == list(c(510, 406, 303))
    assert [t.reference_id for t in bob] == ["b4", "b3", "b2", "b1", "b0"]


def test_paging_with_cursors_breaks_ties_of_equal_times_by_id(uow: Uow) -> None:
    # (seconds after T0, transaction id): several share a timestamp; ids sort by code point.
    rows = [
        (0, "ctx_m"),
        (1, "ctx_b"),
        (1, "ctx_Z"),
        (1, "ctx_a"),
        (1, "ctx_a-"),
        (1, "ctx_a."),
        (2, "ctx_0"),
        (2, "ctx_y"),
        (3, "ctx_c"),
    ]
    with uow() as tx:
        for n, (seconds, ctx_id) in enumerate(rows):
            tx.ledger.record(credit(credits=n + 1, at=T0 + timedelta(seconds=seconds), booking_id=ctx_id))
        tx.ledger.record(credit("bob", 1, at=T0 + timedelta(seconds=1), booking_id="ctx_bob"))
        tx.commit()
    expected = ["ctx_c", "ctx_y", "ctx_0", "ctx_b", "ctx_a.", "ctx_a-", "ctx_a", "ctx_Z", "ctx_m"]
    pages: list[list[str]] = []
    cursor: TransactionCursor | None = None
    with uow() as tx:
        while True:
            page = tx.ledger.transactions("alice", 2, cursor)
            if not page:
                break
            pages.append([t.id for t in page])
            cursor = TransactionCursor(page[-1].created_at, page[-1].id)
        # a cursor in another time zone names the same instant
        plus_two = (T0 + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2)))
        after_b = [t.id for t in tx.ledger.transactions("alice", 100, TransactionCursor(plus_two, "ctx_b"))]
    assert pages == [expected[i : i + 2] for i in range(0, len(expected), 2)]
    assert after_b == ["ctx_a.", "ctx_a-", "ctx_a", "ctx_Z", "ctx_m"]


def test_datetimes_round_trip_timezone_aware(uow: Uow) -> None:
    at = datetime(2025, 6, 30, 23, 59, 58, 654321, tzinfo=timezone(timedelta(hours=2)))
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="r1", at=at, expires_at=at + HOUR))
        hold = place(tx, "alice", 10, at=at)
        tx.top_ups.add(replace(top_up(), created_at=at))
        tx.commit()
    with uow() as tx:
        booked = tx.ledger.find_transaction_by_reference("r1")
        recorded = tx.top_ups.get("tu_1")
        lot = tx.ledger.lock_wallet("alice", T0).lots[0]
        found = tx.holds.get(hold.id)
    assert booked is not None and recorded is not None and found is not None
    for value, expected in (
        (booked.created_at, at),
        (recorded.created_at, at),
        (lot.created_at, at),
        (lot.expires_at, at + HOUR),
        (found.created_at, at),
        (found.expires_at, at + HOUR),
    ):
        assert value is not None and value.utcoffset() is not None
        assert value == expected


# -- holds -----------------------------------------------------------------------------------------
def test_a_hold_round_trips_with_its_allocations_in_order(uow: Uow) -> None:
    hold = Hold(
        id="hold_1",
        user_id="alice",
        amount=Credits(600),
        status=HoldStatus.OPEN,
        created_at=T0,
        expires_at=T0 + HOUR,
        allocations=(("lot_z", Credits(100)), ("lot_a", Credits(200)), ("lot_m", Credits(300))),
        reference_id="hold:k1",
        reason="a render job",
    )
    bare = Hold(
        id="hold_2",
        user_id="bob",
        amount=Credits(5),
        status=HoldStatus.OPEN,
        created_at=T0,
        expires_at=T0 + HOUR,
        allocations=(("lot_b", Credits(5)),),
        reference_id="hold:k2",
    )
    with uow() as tx:
        tx.holds.add(hold)
        tx.holds.add(bare)
        tx.commit()
    with uow() as tx:
        assert tx.holds.get("hold_1") == hold
        assert tx.holds.get("hold_2") == bare
        assert tx.holds.get("hold_3") is None


def test_update_hold_persists_and_an_unknown_hold_is_not_found(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=1000))
        hold = place(tx, "alice", 300)
        tx.commit()
    with uow() as tx:
        tx.holds.update(hold.id, HoldStatus.CAPTURED, Credits(120), T0)
        with pytest.raises(NotFound):
            tx.holds.update("hold_404", HoldStatus.RELEASED, Credits(0), T0)
        tx.commit()
    with uow() as tx:
        assert tx.holds.get(hold.id) == replace(hold, status=HoldStatus.CAPTURED, captured=Credits(120))
        tx.holds.update(hold.id, HoldStatus.RELEASED, Credits(0), T0)  # not committed
    with uow() as tx:
        found = tx.holds.get(hold.id)
    assert found is not None and found.status is HoldStatus.CAPTURED


def test_hold_and_capture_move_the_held_balance_and_the_lots(uow: Uow) -> None:
    promo = credit(credits=200, expires_at=T0 + 48 * HOUR)
    paid = credit(credits=1000, kind=CreditKind.PAID)
    promo_lot, paid_lot = promo.new_lots[0].id, paid.new_lots[0].id
    with uow() as tx:
        tx.ledger.record(promo)
        tx.ledger.record(paid)
        hold = place(tx, "alice", 500)
        tx.commit()
    assert hold.allocations == ((promo_lot, Credits(200)), (paid_lot, Credits(300)))
    assert balances(uow) == c(700, 500)
    assert live_lots(uow) == {promo_lot: (0, 200), paid_lot: (700, 300)}
    with uow() as tx:
        held = tx.ledger.find_transaction_by_reference(hold.reference_id)
        assert held is not None
        assert (held.kind, held.credits, held.held_change, held.balance_after, held.hold_id) == (
            TransactionKind.HOLD,
            Credits(-500),
            Credits(500),
            Credits(700),
            hold.id,
        )
        assert tx.holds.get(hold.id) == hold
        captured = settle(tx, hold, 250)
        tx.commit()
    # 250 captured in the hold's lot order (all 200 promotional, 50 paid); 250 paid go back
    assert (captured.kind, captured.credits, captured.held_change, captured.balance_after, captured.hold_id) == (
        TransactionKind.CAPTURE,
        Credits(250),
        Credits(-500),
        Credits(950),
        hold.id,
    )
    assert balances(uow) == c(950, 0)
    assert live_lots(uow) == {paid_lot: (950, 0)}
    with uow() as tx:
        found = tx.holds.get(hold.id)
    assert found == replace(hold, status=HoldStatus.CAPTURED, captured=Credits(250))


def test_expired_open_holds_are_ordered_by_expiry_then_id_and_limited(uow: Uow) -> None:
    def hold(hold_id: str, expires: datetime, status: HoldStatus = HoldStatus.OPEN) -> Hold:
        return Hold(
            id=hold_id,
            user_id="alice",
            amount=Credits(30),
            status=status,
            created_at=T0 - HOUR,
            expires_at=expires,
            allocations=(("lot_2", Credits(10)), ("lot_1", Credits(20))),
            reference_id=f"hold:{hold_id}",
        )

    due = [hold("hold_b", T0 - HOUR), hold("hold_B", T0), hold("hold_a", T0), hold("hold_c", T0 - 2 * HOUR)]
    with uow() as tx:
        for h in [
            *due,
            hold("hold_later", T0 + HOUR),
            hold("hold_done", T0 - HOUR, HoldStatus.CAPTURED),
            hold("hold_gone", T0 - HOUR, HoldStatus.EXPIRED),
        ]:
            tx.holds.add(h)
        tx.commit()
    with uow() as tx:
        assert tx.holds.expired_open(T0, 100) == [due[3], due[0], due[1], due[2]]
        assert tx.holds.expired_open(T0, 2) == [due[3], due[0]]
        assert tx.holds.expired_open(T0 - 3 * HOUR, 100) == []


# -- audit -----------------------------------------------------------------------------------------
def _busy_ledger(uow: Uow) -> None:
    """Grants, a top-up, a spend, a hold captured in part, one released, an expiry, an empty wallet."""
    with uow() as tx:
        tx.ledger.record(credit("bob", 300, expires_at=T0 + HOUR))
        tx.ledger.record(credit("bob", 1000, kind=CreditKind.PAID))
        tx.ledger.record(credit("alice", 500))
        tx.ledger.record(spend(tx.ledger.lock_wallet("bob", T0), 100))
        captured = place(tx, "bob", 400)
        released = place(tx, "alice", 50)
        open_hold = place(tx, "alice", 70)
        settle(tx, captured, 150)
        settle(tx, released, 0)
        tx.ledger.lock_wallet("dave", T0)  # a wallet with nothing in it
        tx.commit()
    assert open_hold.amount == Credits(70)
    with uow() as tx:
        tx.ledger.record(credit("carol", 80, expires_at=T0 + HOUR))
        for user in ("bob", "carol"):  # bob has 50 promotional credits left, carol 80
            booking = expiry_booking(tx.ledger.lock_wallet(user, T0), T0 + HOUR)
            assert booking is not None
            tx.ledger.record(booking)
        tx.commit()


def test_the_audit_of_a_healthy_ledger_balances_everywhere(uow: Uow) -> None:
    _busy_ledger(uow)
    with uow() as tx:
        audit = tx.ledger.audit()
    assert audit.total_posted == Credits(0)
    assert audit.unbalanced == []

    def both(user: str, wallet: int, held: int) -> list[AccountAudit]:
        return [
            AccountAudit(user, Account.WALLET, *c(wallet, wallet, wallet)),
            AccountAudit(user, Account.HELD, *c(held, held, held)),
        ]

    assert audit.accounts == both("alice", 430, 70) + both("bob", 1000, 0) + both("carol", 0, 0) + both("dave", 0, 0)
    assert verify_ledger(uow=uow) == []


def test_the_audit_names_a_stored_balance_and_a_transaction_that_were_tampered_with(
    uow: Uow, sql_engine: Engine
) -> None:
    _busy_ledger(uow)
    with sql_engine.begin() as conn:
        conn.execute(text("UPDATE wallets SET available = available + 7 WHERE user_id = 'bob'"))
        conn.execute(text("UPDATE wallets SET held = held - 3 WHERE user_id = 'alice'"))
        victim = conn.execute(text("SELECT MIN(id) FROM postings WHERE account = 'revenue'")).scalar_one()
        tampered = conn.execute(text("SELECT transaction_id FROM postings WHERE id = :id"), {"id": victim}).scalar_one()
        conn.execute(text("UPDATE postings SET amount = amount + 5 WHERE id = :id"), {"id": victim})
    with uow() as tx:
        audit = tx.ledger.audit()
    assert audit.total_posted == Credits(5)
    assert audit.unbalanced == [(tampered, Credits(5))]
    by_account = {(a.user_id, a.account): a for a in audit.accounts}
    assert by_account["bob", Account.WALLET] == AccountAudit("bob", Account.WALLET, *c(1007, 1000, 1000))
    assert by_account["alice", Account.HELD] == AccountAudit("alice", Account.HELD, *c(67, 70, 70))
    assert by_account["alice", Account.WALLET] == AccountAudit("alice", Account.WALLET, *c(430, 430, 430))
    problems = {(v.subject, v.problem.split(" ")[0]) for v in verify_ledger(uow=uow)}
    assert problems == {("ledger", "all"), (tampered, "postings"), ("wallet:bob", "stored"), ("held:alice", "stored")}


# -- units of work ---------------------------------------------------------------------------------
def test_leaving_without_commit_discards_every_write(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, reference="r1"))
        place(tx, "alice", 100)
        tx.top_ups.add(top_up())
    with uow() as tx:
        assert tx.ledger.balances("alice", T0) == c(0, 0)
        assert tx.ledger.find_transaction_by_reference("r1") is None
        assert tx.top_ups.get("tu_1") is None
        assert tx.ledger.lock_wallet("alice", T0).lots == ()
        assert tx.holds.expired_open(T0 + 2 * HOUR, 10) == []
        assert tx.ledger.audit().accounts == [
            AccountAudit("alice", account, *c(0, 0, 0)) for account in (Account.WALLET, Account.HELD)
        ]


def test_an_exception_in_the_block_discards_every_write(uow: Uow) -> None:
    with pytest.raises(RuntimeError), uow() as tx:
        tx.ledger.record(credit(credits=1000))
        raise RuntimeError("boom")
    assert balances(uow) == c(0, 0)


def test_rollback_then_new_writes_then_commit(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=700, reference="dropped"))
        tx.rollback()
        assert tx.ledger.balances("alice", T0) == c(0, 0)
        tx.ledger.record(credit(credits=300, reference="kept"))
        tx.commit()
    with uow() as tx:
        assert tx.ledger.balances("alice", T0) == c(300, 0)
        assert tx.ledger.find_transaction_by_reference("dropped") is None
        assert tx.ledger.find_transaction_by_reference("kept") is not None


def test_after_commit_a_new_transaction_begins(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="committed"))
        tx.commit()
        tx.ledger.record(credit(credits=200, reference="not_committed", at=T0 + timedelta(seconds=1)))
    assert balances(uow) == c(100, 0)


# -- top-ups ---------------------------------------------------------------------------------------
def test_top_ups_are_added_and_found_three_ways(uow: Uow) -> None:
    recorded = top_up()
    with uow() as tx:
        tx.top_ups.add(recorded)
        tx.top_ups.add(top_up("tu_2", intent="pi_2", key=None))
        tx.top_ups.add(top_up("tu_3", intent="pi_3", key=None))  # many top-ups without a key
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == recorded
        assert tx.top_ups.find_by_payment_intent("pi_1") == recorded
        assert tx.top_ups.find_by_idempotency_key("alice", "key-1") == recorded
        assert tx.top_ups.find_by_idempotency_key("bob", "key-1") is None
        assert tx.top_ups.get("tu_404") is None
        assert tx.top_ups.find_by_payment_intent("pi_404") is None
        without_key = tx.top_ups.get("tu_2")
    assert without_key is not None and without_key.idempotency_key is None


def _activity(uow: Uow, user: str = "alice", *, now: datetime = T0 + HOUR) -> TopUpActivity:
    with uow() as tx:
        tx.top_ups.lock(user)
        return tx.top_ups.activity(user, open_since=now - 24 * HOUR, started_since=now - HOUR)


def test_top_up_activity_counts_open_top_ups_and_all_top_ups_started_each_with_its_oldest(uow: Uow) -> None:
    now = T0 + HOUR
    with uow() as tx:
        for n, (at, status) in enumerate(
            [(T0, TopUpStatus.PENDING),  # open; started exactly an hour ago: on the edge, out of the hour
             (now - HOUR / 2, TopUpStatus.FAILED),  # open (its intent can still be paid), and started
             (now - HOUR / 4, TopUpStatus.SUCCEEDED),  # started, no longer open
             (now - timedelta(seconds=1), TopUpStatus.CANCELED),  # started, no longer open
             (now - 25 * HOUR, TopUpStatus.PENDING)],  # older than the open window: neither
            start=1,
        ):
            tx.top_ups.add(replace(top_up(f"tu_{n}", intent=f"pi_{n}", key=None), created_at=at, status=status))
        tx.top_ups.add(replace(top_up("tu_bob", user="bob", intent="pi_bob", key=None), created_at=now))
        tx.commit()
    with uow() as tx:
        tx.top_ups.add(replace(top_up("tu_left", intent="pi_left", key=None), created_at=now))  # not committed

    assert _activity(uow, now=now) == TopUpActivity(
        open_top_ups=2, oldest_open_top_up=T0, started=3, oldest_started=now - HOUR / 2
    )
    assert _activity(uow, "bob", now=now) == TopUpActivity(1, now, 1, now)
    assert _activity(uow, "nobody", now=now) == TopUpActivity()


def test_the_same_idempotency_key_for_the_same_user_is_a_duplicate(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.commit()
    with uow() as tx:
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.add(top_up("tu_2", intent="pi_2", key="key-1"))
        tx.rollback()
        assert tx.top_ups.find_by_idempotency_key("alice", "key-1") == top_up()
        tx.top_ups.add(top_up("tu_bob", user="bob", intent="pi_bob", key="key-1"))  # other user: fine
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_2") is None
        assert tx.top_ups.get("tu_bob") is not None


def test_the_same_payment_intent_is_a_duplicate(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.add(top_up("tu_2", intent="pi_1", key="key-2"))
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.add(top_up("tu_1", intent="pi_9", key="key-9"))  # same id
        tx.top_ups.add(top_up("tu_3", intent="pi_3", key="key-3"))  # still usable, no rollback
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_2") is None
        assert tx.top_ups.find_by_payment_intent("pi_1") == top_up()
        assert tx.top_ups.get("tu_3") is not None


def test_set_top_up_status_persists(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.commit()
    with uow() as tx:
        tx.top_ups.set_status("tu_1", TopUpStatus.SUCCEEDED, T0)
        with pytest.raises(NotFound):
            tx.top_ups.set_status("tu_404", TopUpStatus.SUCCEEDED, T0)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == replace(top_up(), status=TopUpStatus.SUCCEEDED)
        tx.top_ups.set_status("tu_1", TopUpStatus.NEEDS_REVIEW, T0)  # not committed
    with uow() as tx:
        found = tx.top_ups.find_by_payment_intent("pi_1")
    assert found is not None and found.status is TopUpStatus.SUCCEEDED


def test_update_top_up_stores_status_and_refunds_and_an_unknown_top_up_is_not_found(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.top_ups.add(top_up("tu_2", intent="pi_2", key=None))
        tx.commit()
    with uow() as tx:
        fresh = tx.top_ups.get("tu_1")
    assert fresh is not None and (fresh.refunded, fresh.credits_refunded) == (Usd(0), Credits(0))
    partly = replace(top_up(), status=TopUpStatus.PARTIALLY_REFUNDED, refunded=Usd(301), credits_refunded=Credits(3010))
    with uow() as tx:
        tx.top_ups.update(partly, T0)
        with pytest.raises(NotFound):
            tx.top_ups.update(replace(partly, id="tu_404"), T0)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == partly
        assert tx.top_ups.find_by_payment_intent("pi_1") == partly
        assert tx.top_ups.find_by_idempotency_key("alice", "key-1") == partly
        assert tx.top_ups.get("tu_404") is None
        assert tx.top_ups.get("tu_2") == top_up("tu_2", intent="pi_2", key=None)  # the other is untouched
        # only status, refunded and credits_refunded are stored: the rest of the record stays as it was
        tx.top_ups.update(
            replace(
                partly,
                amount=Usd(1),
                credits=Credits(1),
                user_id="mallory",
                status=TopUpStatus.REFUNDED,
                refunded=Usd(1000),
                credits_refunded=Credits(10000),
            ),
            T0,
        )
        tx.commit()
    refunded = replace(partly, status=TopUpStatus.REFUNDED, refunded=Usd(1000), credits_refunded=Credits(10000))
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == refunded
        tx.top_ups.set_status("tu_1", TopUpStatus.DISPUTED, T0)  # keeps the refunded amounts
        assert tx.top_ups.get("tu_1") == replace(refunded, status=TopUpStatus.DISPUTED)
        tx.top_ups.update(replace(refunded, status=TopUpStatus.DISPUTE_LOST), T0)  # not committed
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == refunded


def test_a_top_up_added_with_refunds_keeps_them(uow: Uow) -> None:
    recorded = replace(top_up(), status=TopUpStatus.REFUNDED, refunded=Usd(1000), credits_refunded=Credits(10000))
    with uow() as tx:
        tx.top_ups.add(recorded)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == recorded


# -- the payment event log -------------------------------------------------------------------------
def event(
    event_id: str,
    intent: str | None = "pi_1",
    *,
    at: datetime = T0,
    outcome: str = "granted",
    top_up_id: str | None = "tu_1",
    source: str = "webhook",
    kind: str = "payment_intent.succeeded",
) -> StoredEvent:
    return StoredEvent(
        event_id=event_id,
        type=kind,
        payment_intent_id=intent,
        top_up_id=top_up_id,
        received_at=at,
        outcome=outcome,
        source=source,
    )


def test_events_are_stored_found_and_listed_oldest_first_per_payment_intent(uow: Uow) -> None:
    plus_two = timezone(timedelta(hours=2))
    # (seconds after T0, id): ties on the time are broken by id, in code point order
    mine = [
        event("evt_late", at=T0 + 3 * HOUR, kind="charge.refunded", outcome="refunded", source="reconcile"),
        event("evt_b", at=T0 + HOUR),
        event("evt_B", at=(T0 + HOUR).astimezone(plus_two)),
        event("evt_a-", at=T0 + HOUR),
        event("evt_first", at=T0, kind="payment_intent.payment_failed", outcome="failed"),
    ]
    others = [
        event("evt_other", "pi_2", at=T0 - HOUR, top_up_id="tu_2"),
        event("evt_none", None, top_up_id=None, kind="customer.created", outcome="ignored"),
    ]
    with uow() as tx:
        assert tx.events.find("evt_b") is None
        assert tx.events.for_payment_intent("pi_1") == []
        for e in [*mine, *others]:
            tx.events.add(e)
        assert tx.events.find("evt_b") == mine[1]  # seen inside the unit of work
        tx.commit()
    with uow() as tx:
        for e in [*mine, *others]:
            assert tx.events.find(e.event_id) == e
        found = tx.events.find("evt_B")
        assert tx.events.find("evt_404") is None
        assert tx.events.find("EVT_B") is None  # ids are case-sensitive
        listed = tx.events.for_payment_intent("pi_1")
        assert tx.events.for_payment_intent("pi_2") == [others[0]]
        assert tx.events.for_payment_intent("pi_404") == []
    assert [e.event_id for e in listed] == ["evt_first", "evt_B", "evt_a-", "evt_b", "evt_late"]
    assert listed[-1] == mine[0] and listed[-1].source == "reconcile"
    assert found is not None and found.received_at == T0 + HOUR and found.received_at.utcoffset() is not None


def test_a_read_only_unit_of_work_reads_what_was_committed_and_cannot_commit(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="r1"))
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.ledger.balances("alice", T0) == c(100, 0)
        with pytest.raises(RuntimeError, match="read-only unit of work cannot commit"):
            tx.commit()
    assert balances(uow) == c(100, 0)


def test_an_event_and_its_top_up_are_found_in_one_read(uow: Uow) -> None:
    logged = event("evt_1", outcome="granted")
    with uow() as tx:
        assert tx.events.find_with_top_up("evt_1", "pi_1") == (None, None)
        tx.top_ups.add(top_up())
        tx.top_ups.add(top_up("tu_2", intent="pi_2", key="key-2"))
        tx.events.add(logged)
        tx.commit()
    with uow() as tx:
        assert tx.events.find_with_top_up("evt_1", "pi_1") == (logged, top_up())
        assert tx.events.find_with_top_up("evt_1", "pi_2")[1] == tx.top_ups.find_by_payment_intent("pi_2")
        assert tx.events.find_with_top_up("evt_new", "pi_1") == (None, top_up())  # a new event
        assert tx.events.find_with_top_up("evt_1", None) == (logged, None)  # an event about no payment
        assert tx.events.find_with_top_up("evt_1", "pi_404") == (logged, None)


def test_an_event_log_write_the_database_refuses_commits_nothing_of_the_unit_of_work(
    uow: Uow, sql_engine: Engine
) -> None:
    # The event log's insert may travel with the COMMIT (PostgreSQL): refused, it must stop the commit.
    refused = replace(event("evt_1", outcome="granted"), outcome=None)  # NOT NULL
    with pytest.raises(Exception), uow() as tx:  # the driver's IntegrityError, or SQLAlchemy's
        tx.ledger.record(credit(credits=100, reference="with-the-event"))
        tx.events.add(refused)
        tx.commit()
    assert balances(uow) == c(0, 0)
    with uow() as tx:
        assert tx.ledger.find_transaction_by_reference("with-the-event") is None
        assert tx.events.find("evt_1") is None


def test_a_second_event_with_the_same_id_is_ignored_and_the_unit_of_work_still_commits(uow: Uow) -> None:
    first = event("evt_1", outcome="granted")
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="before"))
        tx.events.add(first)
        tx.events.add(replace(first, outcome="duplicate", received_at=T0 + HOUR))  # no error
        tx.top_ups.add(top_up())  # the unit of work is still usable
        tx.events.add(event("evt_2", at=T0 + HOUR))
        tx.ledger.record(credit(credits=50, reference="after"))
        assert tx.events.find("evt_1") == first
        tx.commit()
    with uow() as tx:
        tx.events.add(replace(first, outcome="again", source="reconcile"))  # in a later unit of work too
        tx.ledger.record(credit(credits=7, reference="later"))
        tx.commit()
    with uow() as tx:
        assert tx.events.find("evt_1") == first
        assert [e.event_id for e in tx.events.for_payment_intent("pi_1")] == ["evt_1", "evt_2"]
        assert tx.top_ups.get("tu_1") == top_up()
        assert tx.ledger.balances("alice", T0) == c(157, 0)
        for reference in ("before", "after", "later"):
            assert tx.ledger.find_transaction_by_reference(reference) is not None


def test_leaving_without_commit_discards_events_and_top_up_updates(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.commit()
    with uow() as tx:
        tx.events.add(event("evt_1"))
        tx.top_ups.update(replace(top_up(), status=TopUpStatus.REFUNDED, refunded=Usd(1000)), T0)
    with uow() as tx:
        assert tx.events.find("evt_1") is None
        assert tx.events.for_payment_intent("pi_1") == []
        assert tx.top_ups.get("tu_1") == top_up()


# -- debt: credits taken back after they were spent ------------------------------------------------
def agreed(user: str, account: Account, balance: int, *, debt: int) -> AccountAudit:
    """An account whose stored balance, postings and lots all agree on `balance`."""
    return AccountAudit(user, account, Credits(balance), Credits(balance), Credits(balance), Credits(debt))


def _spent_then_refunded(uow: Uow) -> str:
    """alice bought 1000 paid credits (pi_1) and got 200 promotional ones, spent 1100, then the whole
    payment was refunded: 100 come from the top-up's lot, 900 are a debt on it. Returns the lot id."""
    lot_id = top_up_lot_id("pi_1")
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, kind=CreditKind.PAID, reference="pi_1", lot_id=lot_id))
        tx.ledger.record(credit(credits=200, at=T0 + timedelta(seconds=1)))
        tx.ledger.record(credit("bob", 500))  # a healthy wallet next to it
        tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 1100, at=T0 + HOUR))
        tx.commit()
    with uow() as tx:
        state = tx.ledger.lock_wallet("alice", T0)
        booking = take_back_booking(
            state,
            lot_id=lot_id,
            credits=Credits(1000),
            to_account=Account.STRIPE_FUNDING,
            kind=TransactionKind.REFUND,
            reference_id="refund:re_1",
            now=T0 + 2 * HOUR,
            reason="refund re_1",
            metadata={"refund_id": "re_1"},
        )
        booked = tx.ledger.record(booking)
        tx.commit()
    assert [(p.lot_id, p.amount) for p in booking.postings if p.account is Account.WALLET] == [(lot_id, Credits(-1000))]
    assert (booked.kind, booked.credits, booked.balance_after) == (
        TransactionKind.REFUND,
        Credits(-1000),
        Credits(-900),
    )
    return lot_id


def test_a_lot_pushed_negative_survives_a_round_trip(uow: Uow) -> None:
    lot_id = _spent_then_refunded(uow)
    assert live_lots(uow) == {lot_id: (-900, 0)}  # the used-up promotional lot is not live, the debt is
    assert balances(uow) == c(-900, 0)
    assert balances(uow, now=T0 + 1000 * HOUR) == c(-900, 0)
    with uow() as tx:
        state = tx.ledger.lock_wallet("alice", T0)
        assert tx.ledger.users_with_expired_credits(T0 + 1000 * HOUR, 10) == []
    assert state.available == Credits(-900)
    assert [(lot.id, lot.kind, lot.granted, lot.remaining, lot.held) for lot in state.debts] == [
        (lot_id, CreditKind.PAID, Credits(1000), Credits(-900), Credits(0))
    ]
    # the next credits in do not touch the debt lot by themselves: what they repay is the core's business
    with uow() as tx:
        tx.ledger.record(credit(credits=300, kind=CreditKind.PAID, at=T0 + 3 * HOUR))
        tx.commit()
    assert balances(uow) == c(-600, 0)
    assert live_lots(uow)[lot_id] == (-900, 0)


def test_the_audit_reports_debt_on_the_wallet_row_only(uow: Uow) -> None:
    _spent_then_refunded(uow)
    with uow() as tx:
        place(tx, "bob", 120)  # bob: a hold, and no debt
        audit = tx.ledger.audit()
    assert audit.total_posted == Credits(0) and audit.unbalanced == []
    assert audit.accounts == [
        agreed("alice", Account.WALLET, -900, debt=900),
        agreed("alice", Account.HELD, 0, debt=0),
        agreed("bob", Account.WALLET, 380, debt=0),
        agreed("bob", Account.HELD, 120, debt=0),
    ]
    assert verify_ledger(uow=uow) == []


def test_the_debt_is_the_sum_over_every_lot_in_debt_and_ignores_positive_lots(uow: Uow) -> None:
    first, second = top_up_lot_id("pi_1"), top_up_lot_id("pi_2")
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, kind=CreditKind.PAID, reference="pi_1", lot_id=first))
        tx.ledger.record(
            credit(credits=500, kind=CreditKind.PAID, reference="pi_2", lot_id=second, at=T0 + timedelta(seconds=1))
        )
        tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 1500, at=T0 + HOUR))
        for n, (lot_id, taken) in enumerate(((first, 400), (second, 250))):
            tx.ledger.record(
                take_back_booking(
                    tx.ledger.lock_wallet("alice", T0),
                    lot_id=lot_id,
                    credits=Credits(taken),
                    to_account=Account.DISPUTED,
                    kind=TransactionKind.DISPUTE,
                    reference_id=f"dispute:dp_{n}",
                    now=T0 + 2 * HOUR,
                    reason="dispute",
                )
            )
        tx.ledger.record(credit(credits=70, at=T0 + 3 * HOUR))  # a positive lot next to the debts
        tx.commit()
    with uow() as tx:
        wallet = tx.ledger.audit().accounts[0]
    assert wallet == agreed("alice", Account.WALLET, -580, debt=650)
    assert verify_ledger(uow=uow) == []


# -- refunds and disputes per payment ----------------------------------------------------------------------
def _take_back(state: WalletState, kind: TransactionKind, reference: str, credits: int, top_up_id: str,
               at: datetime) -> Booking:
    to = Account.STRIPE_FUNDING if kind is TransactionKind.REFUND else Account.DISPUTED
    return take_back_booking(state, lot_id=top_up_lot_id("pi_1"), credits=Credits(credits), to_account=to, kind=kind,
                             reference_id=reference, now=at, reason="money back",
                             metadata={"top_up_id": top_up_id})


def test_take_backs_are_the_refunds_and_disputes_oldest_first_and_verify_sums_them_per_payment(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())  # 10000 credits
        tx.ledger.record(credit(credits=10000, kind=CreditKind.PAID, reference="pi_1",
                                metadata={"top_up_id": "tu_1"}, lot_id=top_up_lot_id("pi_1")))
        tx.ledger.record(credit("bob", 50))
        tx.ledger.record(_take_back(tx.ledger.lock_wallet("alice", T0), TransactionKind.REFUND, "refund:re_1", 3000,
                                    "tu_1", T0 + HOUR))
        tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 100, at=T0 + 2 * HOUR))
        tx.ledger.record(_take_back(tx.ledger.lock_wallet("alice", T0), TransactionKind.DISPUTE, "dispute:dp_1", 6900,
                                    "tu_1", T0 + 3 * HOUR))
        tx.commit()
    with uow(read_only=True) as tx:
        mine = tx.ledger.take_backs("alice")
        assert [(t.reference_id, t.kind, t.credits, t.metadata["top_up_id"]) for t in mine] == [
            ("refund:re_1", TransactionKind.REFUND, Credits(-3000), "tu_1"),
            ("dispute:dp_1", TransactionKind.DISPUTE, Credits(-6900), "tu_1"),
        ]
        assert tx.ledger.take_backs() == mine and tx.ledger.take_backs("bob") == []
    assert verify_ledger(uow=uow) == []

    with uow() as tx:  # a second dispute freezing what the first left, and 1 more: beyond the grant
        tx.ledger.record(_take_back(tx.ledger.lock_wallet("alice", T0), TransactionKind.DISPUTE, "dispute:dp_2", 101,
                                    "tu_1", T0 + 4 * HOUR))
        tx.commit()
    assert [(v.subject, v.problem) for v in verify_ledger(uow=uow)] == [
        ("payment:pi_1", "refunds took 30.00 and disputes froze 70.01 credits, more than the 100.00 it granted"),
    ]
