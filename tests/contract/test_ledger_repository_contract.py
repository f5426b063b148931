"""The LedgerRepository contract (tx.ledger: wallets, lots, transactions, postings, the audit) for
every backend: in memory, SQLite file and PostgreSQL.

The in-memory fake is what the unit tests trust, so it must behave like the databases do: every test
here runs the same calls on each backend (tests/contract/conftest.py) and expects the very same answers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from tests.contract.builders import HOUR, T0, Uow, balances, c, credit, live_lots, place, settle, spend, top_up
from wallet_core.bookings import expiry_booking, hold_booking
from wallet_core.errors import DuplicateReference
from wallet_core.ledger import (
    Account,
    Booking,
    CreditKind,
    CreditTransaction,
    Lot,
    LotChange,
    Posting,
    Source,
    TransactionCursor,
    TransactionKind,
    WalletState,
)
from wallet_core.money import Credits
from wallet_core.ports import AccountAudit
from wallet_core.refunds import take_back_booking, top_up_lot_id
from wallet_core.use_cases import verify_ledger


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
        history = tx.ledger.transactions("alice", 10)
        assert [replace(t, sources=()) for t in history] == [second, first]  # record leaves sources to its caller
        assert [t.sources for t in history] == [
            (Source(paid.new_lots[0].id, CreditKind.PAID, Credits(550)),),
            (Source(grant.new_lots[0].id, CreditKind.PROMOTIONAL, Credits(1000)),),
        ]
        assert list(tx.ledger.transactions("alice", 10)[1].metadata) == ["note", "campaign"]  # in their order


def test_many_references_are_found_in_one_read_each_with_its_transaction(uow: Uow) -> None:
    with uow() as tx:
        first = tx.ledger.record(credit(credits=100, reference="grant:a"))
        second = tx.ledger.record(credit(credits=200, reference="grant:b", at=T0 + timedelta(seconds=1)))
        tx.commit()
    with uow() as tx:
        found = tx.ledger.find_transactions_by_references(["grant:b", "nothing", "grant:a", "grant:a"])
        assert found == {"grant:a": first, "grant:b": second}
        assert tx.ledger.find_transactions_by_references([]) == {}
        assert tx.ledger.find_transactions_by_references(["nothing"]) == {}


def test_record_many_books_spends_in_order_as_record_would_one_after_another(uow: Uow) -> None:
    """Two wallets, interleaved; bob has credits pending (effective tomorrow), which no balance after
    counts; two spends take from one lot."""
    with uow() as tx:
        tx.ledger.record(credit("alice", 1000, reference="grant:a"))
        tx.ledger.record(credit("bob", 500, kind=CreditKind.PAID, reference="grant:b"))
        tx.ledger.record(credit("bob", 300, reference="grant:later", effective_at=T0 + 24 * HOUR))
        tx.commit()
    with uow() as tx:
        alice, bob = tx.ledger.lock_wallet("alice", T0), tx.ledger.lock_wallet("bob", T0)
        first = spend(alice, 100, reference="spend:1")
        second = spend(bob, 50, reference="spend:2")
        third = spend(replace(alice, lots=tuple(replace(lot, remaining=lot.remaining - Credits(100))
                                                for lot in alice.lots)), 200, reference="spend:3")
        booked = tx.ledger.record_many([first, second, third])
        tx.commit()
    assert [(b.id, b.reference_id, b.balance_after) for b in booked] == [
        (first.id, "spend:1", Credits(900)), (second.id, "spend:2", Credits(450)), (third.id, "spend:3", Credits(700)),
    ]
    assert all(b.kind is TransactionKind.SPEND and b.reason == "used" and b.actor == "api" for b in booked)
    assert balances(uow, "alice") == c(700, 0)
    assert balances(uow, "bob") == c(450, 0)
    assert sorted(live_lots(uow, "alice").values()) == [(700, 0)]
    with uow() as tx:
        assert tx.ledger.find_transaction_by_reference("spend:3") == booked[2]
        assert [p.amount for p in tx.ledger.postings_of(third.id)] == [Credits(-200), Credits(200)]
        assert tx.ledger.record_many([]) == []
        audit = tx.ledger.audit()
    assert audit.unbalanced == []


def test_lock_wallets_answers_what_lock_wallet_does_for_each_creating_missing_ones(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit("bob", 500, kind=CreditKind.PAID, reference="grant:b"))
        tx.ledger.record(credit("bob", 300, reference="grant:b2", at=T0 + HOUR))
        tx.ledger.record(credit("alice", 100, reference="grant:a"))
        tx.commit()
    with uow() as tx:
        each = {user: tx.ledger.lock_wallet(user, T0) for user in ("alice", "bob")}
    for users in (["bob", "alice"], ["bob", "alice", "carol"]):  # all existing; one to create
        with uow() as tx:
            states = tx.ledger.lock_wallets(users, T0)
            assert list(states) == sorted(users)
            assert {u: states[u] for u in ("alice", "bob")} == each
            if "carol" in users:
                assert states["carol"] == WalletState("carol", Credits(0), Credits(0), ())
            assert tx.alerts.get("bob") == tx.alerts.get("alice")  # read with the lock
    with uow() as tx:
        assert tx.ledger.lock_wallets([], T0) == {}


def test_record_many_refuses_a_reference_recorded_before(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit("alice", 1000, reference="grant:a"))
        state = tx.ledger.lock_wallet("alice", T0)
        tx.ledger.record(spend(state, 10, reference="spend:1"))
        tx.commit()
    with uow() as tx:
        state = tx.ledger.lock_wallet("alice", T0)
        with pytest.raises(DuplicateReference):
            tx.ledger.record_many([spend(state, 20, reference="spend:2"), spend(state, 30, reference="spend:1")])
    assert balances(uow, "alice") == c(990, 0)  # rolled back: nothing of the refused call stays


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
        source_transaction_id=promo.id,
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
