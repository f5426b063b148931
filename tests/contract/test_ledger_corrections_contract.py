"""The LedgerRepository contract for corrections and richer grants (issue 11), on every backend: reading
a transaction with its postings and sources, lots by id, a user's live lots, reverts and the audit of
them, a lot change that ends a lot, lots with a priority and an effective date, and pending credits
left out of the balances.

Like test_ledger_repository_contract, every test runs the same calls on the in-memory fake, SQLite and
PostgreSQL (tests/contract/conftest.py) and expects the very same answers.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta

import psycopg
import pytest

from tests.contract.builders import HOUR, T0, Uow, balances, c, credit, place, settle, spend
from wallet_core.ledger import (
    Account,
    Booking,
    CreditKind,
    CreditTransaction,
    LotChange,
    Posting,
    Source,
    TransactionKind,
)
from wallet_core.money import Credits
from wallet_core.ports import RevertAudit, UnitOfWork
from wallet_core.reverts import revert_booking
from wallet_core.use_cases import verify_ledger

MINUTE = timedelta(minutes=1)


def revert(tx: UnitOfWork, transaction_id: str, *, key: str, at: datetime = T0 + 2 * HOUR) -> CreditTransaction:
    """Book the revert of `transaction_id` as the use case does, from what the repository reads."""
    original = tx.ledger.find_transaction(transaction_id)
    assert original is not None
    tx.ledger.lock_wallet(original.user_id, T0)
    postings = tx.ledger.postings_of(transaction_id)
    lots = {lot.id: lot for lot in tx.ledger.lots({p.lot_id for p in postings if p.lot_id is not None})}
    booking = revert_booking(
        original, postings, lots, reference_id=f"revert:{key}", now=at, reason="mistake", actor="support"
    )
    return tx.ledger.record(booking)


# -- reading one transaction, its postings and lots ------------------------------------------------
def test_find_transaction_postings_of_and_lots_read_back_what_was_recorded(uow: Uow) -> None:
    promo = credit(credits=300, expires_at=T0 + 24 * HOUR, priority=7)
    paid = credit(credits=1000, kind=CreditKind.PAID, at=T0 + MINUTE)
    with uow() as tx:
        granted = tx.ledger.record(promo)
        tx.ledger.record(paid)
        spent = tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 450, at=T0 + 2 * MINUTE))
        tx.commit()
    promo_lot, paid_lot = promo.new_lots[0], paid.new_lots[0]
    with uow(read_only=True) as tx:
        found = tx.ledger.find_transaction(spent.id)
        found_grant = tx.ledger.find_transaction(granted.id)
        legs = tx.ledger.postings_of(spent.id)
        grant_legs = tx.ledger.postings_of(granted.id)
        lots = sorted(tx.ledger.lots([paid_lot.id, promo_lot.id, paid_lot.id, "lot_404"]), key=lambda lot: lot.id)
        assert tx.ledger.find_transaction("ctx_404") is None
        assert tx.ledger.postings_of("ctx_404") == []
        assert tx.ledger.lots([]) == [] and tx.ledger.lots(["lot_404"]) == []
    assert found == replace(
        spent,
        sources=(
            Source(promo_lot.id, CreditKind.PROMOTIONAL, Credits(300)),
            Source(paid_lot.id, CreditKind.PAID, Credits(150)),
        ),
    )
    assert found_grant == replace(granted, sources=(Source(promo_lot.id, CreditKind.PROMOTIONAL, Credits(300)),))
    assert grant_legs == list(promo.postings)  # in the order they were recorded
    assert legs == [
        Posting(Account.WALLET, Credits(-300), "alice", promo_lot.id),
        Posting(Account.WALLET, Credits(-150), "alice", paid_lot.id),
        Posting(Account.REVENUE, Credits(450)),
    ]
    # every lot as it stands, used up or not, with its priority and the transaction that made it
    assert lots == sorted(
        [replace(promo_lot, remaining=Credits(0)), replace(paid_lot, remaining=Credits(850))], key=lambda lot: lot.id
    )
    assert {lot.id: (lot.priority, lot.source_transaction_id) for lot in lots} == {
        promo_lot.id: (7, promo.id),
        paid_lot.id: (50, paid.id),
    }


def test_live_lots_are_those_with_something_remaining_held_owed_or_pending(uow: Uow) -> None:
    later = T0 + 24 * HOUR
    used_up = credit(credits=100, lot_id="lot_used_up")
    held = credit(credits=200, lot_id="lot_held", at=T0 + MINUTE)
    pending = credit(credits=300, lot_id="lot_pending", effective_at=later, priority=0)
    expired = credit(credits=50, lot_id="lot_expired", expires_at=T0 + HOUR)
    with uow() as tx:
        for booking in (used_up, held, pending):
            tx.ledger.record(booking)
        tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 100))  # lot_used_up goes first (the oldest)
        place(tx, "alice", 200)  # all of lot_held (lot_pending is not spendable yet)
        tx.ledger.record(expired)
        tx.ledger.record(credit("bob", 10))
        tx.commit()
    with uow(read_only=True) as tx:
        live = {lot.id: lot for lot in tx.ledger.live_lots("alice")}
        assert tx.ledger.live_lots("nobody") == []
    # the lot past expiry still holds credits (the expiry run has not booked them out): live, as in lock_wallet
    assert {lot_id: (lot.remaining.minor, lot.held.minor) for lot_id, lot in live.items()} == {
        "lot_held": (0, 200),
        "lot_pending": (300, 0),
        "lot_expired": (50, 0),
    }
    assert live["lot_pending"] == pending.new_lots[0]  # effective_at and priority round-trip


# -- reverts ---------------------------------------------------------------------------------------
def test_a_revert_names_what_it_reverts_and_history_rows_say_both_ways(uow: Uow) -> None:
    promo = credit(credits=300, lot_id="lot_a")
    paid = credit(credits=1000, kind=CreditKind.PAID, lot_id="lot_b", at=T0 + MINUTE)
    with uow() as tx:
        tx.ledger.record(promo)
        tx.ledger.record(paid)
        spent = tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 450, reference="spend:1", at=T0 + HOUR))
        tx.commit()
    with uow() as tx:
        reverted = revert(tx, spent.id, key="r1")
        tx.commit()
    assert (reverted.kind, reverted.reverts, reverted.reverted_by, reverted.credits, reverted.balance_after) == (
        TransactionKind.REVERT,
        spent.id,
        None,
        Credits(450),
        Credits(1300),
    )
    back = (Source("lot_a", CreditKind.PROMOTIONAL, Credits(300)), Source("lot_b", CreditKind.PAID, Credits(150)))
    with uow(read_only=True) as tx:
        history = tx.ledger.transactions("alice", 10)
        by_reference = tx.ledger.find_transaction_by_reference("spend:1")
        revert_by_reference = tx.ledger.find_transaction_by_reference("revert:r1")
        found = tx.ledger.find_transaction(spent.id)
        found_revert = tx.ledger.find_transaction(reverted.id)
        assert tx.ledger.postings_of(reverted.id) == [
            Posting(Account.WALLET, Credits(300), "alice", "lot_a"),
            Posting(Account.WALLET, Credits(150), "alice", "lot_b"),
            Posting(Account.REVENUE, Credits(-450)),
        ]
    assert [(t.kind, t.reverts, t.reverted_by, t.sources) for t in history] == [
        (TransactionKind.REVERT, spent.id, None, back),
        (TransactionKind.SPEND, None, reverted.id, back),
        (TransactionKind.TOP_UP, None, None, (Source("lot_b", CreditKind.PAID, Credits(1000)),)),
        (TransactionKind.GRANT, None, None, (Source("lot_a", CreditKind.PROMOTIONAL, Credits(300)),)),
    ]
    # by reference: reverts and reverted_by, no sources (as the port says)
    assert by_reference == replace(spent, reverted_by=reverted.id)
    assert revert_by_reference == reverted
    assert found == replace(spent, reverted_by=reverted.id, sources=back)
    assert found_revert == replace(reverted, sources=back)
    assert balances(uow) == c(1300, 0)
    assert verify_ledger(uow=uow) == []


def test_a_transaction_is_reverted_at_most_once(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, kind=CreditKind.PAID))
        spent = tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 100))
        first = revert(tx, spent.id, key="r1")
        tx.commit()
    with uow() as tx:
        original = tx.ledger.find_transaction(spent.id)
        assert original is not None and original.reverted_by == first.id
        postings = tx.ledger.postings_of(spent.id)
        # a second revert, booked without the use case's check: the ledger refuses it
        second = revert_booking(
            replace(original, reverted_by=None),
            postings,
            {},
            reference_id="revert:r2",
            now=T0,
            reason="again",
            actor="support",
        )
        with pytest.raises((RuntimeError, sqlite3.IntegrityError, psycopg.IntegrityError)):
            tx.ledger.record(second)
        tx.rollback()
    assert balances(uow) == c(1000, 0)
    assert verify_ledger(uow=uow) == []


def test_a_grants_revert_ends_its_lot_and_the_revert_audit_pairs_each_revert_with_its_original(uow: Uow) -> None:
    grant = credit(credits=500, lot_id="lot_grant", expires_at=T0 + 48 * HOUR)
    paid = credit(credits=1000, kind=CreditKind.PAID, lot_id="lot_paid", at=T0 + MINUTE)
    with uow() as tx:
        assert tx.ledger.revert_audit() == []
        granted = tx.ledger.record(grant)
        tx.ledger.record(paid)
        spent = tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 200, at=T0 + HOUR))  # 200 of the grant
        tx.commit()
    with uow() as tx:
        grant_revert = revert(tx, granted.id, key="g")
        tx.commit()
    with uow() as tx:
        spend_revert = revert(tx, spent.id, key="s", at=T0 + 3 * HOUR)
        tx.commit()
    with uow(read_only=True) as tx:
        [lot] = tx.ledger.lots(["lot_grant"])
        audit = tx.ledger.revert_audit()
        grant_legs, spend_legs = tx.ledger.postings_of(granted.id), tx.ledger.postings_of(spent.id)
    # the grant's revert took back the 300 left and ended the lot then; the spend's revert gave 200 back to
    # it, which lapse (the lot ended): credits that come back to an ended lot count for nothing
    assert (lot.remaining, lot.expires_at) == (Credits(200), T0 + 2 * HOUR)
    assert grant_revert.credits == Credits(-300) and spend_revert.credits == Credits(200)
    assert balances(uow, now=T0 + 3 * HOUR) == c(1000, 0)
    assert verify_ledger(uow=uow) == []
    assert audit == [
        RevertAudit(
            grant_revert,
            [Posting(Account.WALLET, Credits(-300), "alice", "lot_grant"), Posting(Account.PROMOTIONS, Credits(300))],
            replace(granted, reverted_by=grant_revert.id),
            grant_legs,
        ),
        RevertAudit(
            spend_revert,
            [Posting(Account.WALLET, Credits(200), "alice", "lot_grant"), Posting(Account.REVENUE, Credits(-200))],
            replace(spent, reverted_by=spend_revert.id),
            spend_legs,
        ),
    ]


# -- sources on history rows -----------------------------------------------------------------------
def test_history_rows_say_which_lots_paid_a_hold_its_capture_and_its_release(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=300, lot_id="lot_promo", expires_at=T0 + 24 * HOUR))
        tx.ledger.record(credit(credits=1000, kind=CreditKind.PAID, lot_id="lot_paid", at=T0 + MINUTE))
        captured = place(tx, "alice", 400, at=T0 + 2 * MINUTE)  # 300 promotional, then 100 paid
        released = place(tx, "alice", 50, at=T0 + 3 * MINUTE)  # paid
        settle(tx, captured, 350, at=T0 + 4 * MINUTE)  # the hold's first 350: all 300 promotional, 50 paid
        settle(tx, released, 0, at=T0 + 5 * MINUTE)
        tx.commit()

    def promo(n: int) -> Source:
        return Source("lot_promo", CreditKind.PROMOTIONAL, Credits(n))

    def paid(n: int) -> Source:
        return Source("lot_paid", CreditKind.PAID, Credits(n))

    with uow(read_only=True) as tx:
        history = [(t.kind, t.sources) for t in tx.ledger.transactions("alice", 10)]
        page = [(t.kind, t.sources) for t in tx.ledger.transactions("alice", 2)]
    assert history == [
        (TransactionKind.RELEASE, (paid(50),)),
        (TransactionKind.CAPTURE, (promo(300), paid(50))),
        (TransactionKind.HOLD, (paid(50),)),
        (TransactionKind.HOLD, (promo(300), paid(100))),
        (TransactionKind.TOP_UP, (paid(1000),)),
        (TransactionKind.GRANT, (promo(300),)),
    ]
    assert page == history[:2]


# -- lot changes that end a lot --------------------------------------------------------------------
def test_a_lot_change_with_ends_at_moves_the_expiry_earlier_never_later(uow: Uow) -> None:
    ends = T0 + HOUR
    lots = {
        "lot_forever": credit(credits=100, lot_id="lot_forever"),
        "lot_later": credit(credits=100, lot_id="lot_later", expires_at=ends + HOUR),
        "lot_sooner": credit(credits=100, lot_id="lot_sooner", expires_at=ends - MINUTE),
    }
    fresh = replace(lots["lot_forever"].new_lots[0], id="lot_fresh", granted=Credits(40), remaining=Credits(40))
    booking = Booking(
        id="ctx_ends",
        user_id="alice",
        kind=TransactionKind.GRANT,
        reference_id="ends",
        created_at=T0,
        postings=(
            Posting(Account.WALLET, Credits(40), "alice", "lot_fresh"),
            Posting(Account.PROMOTIONS, Credits(-40)),
            Posting(Account.WALLET, Credits(-10), "alice", "lot_later"),
            Posting(Account.PROMOTIONS, Credits(10)),
        ),
        new_lots=(fresh,),
        lot_changes=(
            LotChange("lot_forever", ends_at=ends),
            LotChange("lot_later", remaining=Credits(-10), ends_at=ends + MINUTE),
            LotChange("lot_later", ends_at=ends),  # two changes to one lot: the sooner end wins
            LotChange("lot_sooner", ends_at=ends),
            LotChange("lot_fresh", ends_at=ends),  # a lot this booking creates
        ),
    )
    with uow() as tx:
        for b in lots.values():
            tx.ledger.record(b)
        tx.ledger.record(booking)
        tx.commit()
    with uow(read_only=True) as tx:
        found = {lot.id: (lot.remaining.minor, lot.expires_at) for lot in tx.ledger.live_lots("alice")}
    assert found == {
        "lot_forever": (100, ends),
        "lot_later": (90, ends),
        "lot_sooner": (100, ends - MINUTE),
        "lot_fresh": (40, ends),
    }
    assert balances(uow, now=ends - MINUTE) == c(230, 0)
    assert balances(uow, now=ends) == c(0, 0)


# -- pending credits -------------------------------------------------------------------------------
def test_credits_not_effective_yet_are_left_out_of_balances_and_balance_after(uow: Uow) -> None:
    soon, later = T0 + HOUR, T0 + 2 * HOUR
    with uow() as tx:
        first = tx.ledger.record(credit(credits=1000, kind=CreditKind.PAID))
        far = tx.ledger.record(credit(credits=500, at=T0 + MINUTE, effective_at=later, lot_id="lot_far"))
        # granted after, effective before: the wallet's pending credits are still counted until `later`
        near = tx.ledger.record(credit(credits=200, at=T0 + 2 * MINUTE, effective_at=soon, lot_id="lot_near"))
        spent = tx.ledger.record(spend(tx.ledger.lock_wallet("alice", T0), 100, at=T0 + 3 * MINUTE))
        bob = tx.ledger.record(credit("bob", 70, at=T0 + MINUTE))
        tx.commit()
    assert [t.balance_after for t in (first, far, near, spent, bob)] == list(c(1000, 1000, 1000, 900, 70))
    assert [t.credits for t in (far, near)] == list(c(500, 200))  # the wallet got them, to spend later
    assert balances(uow, now=T0) == c(900, 0)
    assert balances(uow, now=soon - MINUTE) == c(900, 0)
    assert balances(uow, now=soon) == c(1100, 0)  # effective from then on
    assert balances(uow, now=later - MINUTE) == c(1100, 0)
    assert balances(uow, now=later) == c(1600, 0)
    assert balances(uow, "bob") == c(70, 0)
    with uow() as tx:
        after_soon = tx.ledger.record(credit(credits=1, at=soon))
        after_later = tx.ledger.record(credit(credits=1, at=later))
        state = tx.ledger.lock_wallet("alice", T0)
        tx.commit()
    assert (after_soon.balance_after, after_later.balance_after) == c(1101, 1602)
    assert state.available == Credits(1602)  # the stored balance counts every credit the wallet holds
    assert verify_ledger(uow=uow) == []


def test_the_revert_of_a_pending_grant_leaves_nothing_pending(uow: Uow) -> None:
    effective = T0 + 24 * HOUR
    with uow() as tx:
        tx.ledger.record(credit(credits=1000, kind=CreditKind.PAID))
        pending = tx.ledger.record(credit(credits=500, effective_at=effective, lot_id="lot_pending"))
        reverted = revert(tx, pending.id, key="r")
        tx.commit()
    assert (pending.balance_after, reverted.credits, reverted.balance_after) == c(1000, -500, 1000)
    assert balances(uow, now=T0) == c(1000, 0)
    assert balances(uow, now=effective) == c(1000, 0)
    with uow(read_only=True) as tx:
        [lot] = tx.ledger.lots(["lot_pending"])
    assert (lot.remaining, lot.effective_at, lot.expires_at) == (Credits(0), effective, T0 + 2 * HOUR)
    assert verify_ledger(uow=uow) == []


def test_a_lot_with_priority_and_effective_date_round_trips_through_every_read(uow: Uow) -> None:
    effective = T0 + 3 * HOUR
    booking = credit(
        credits=250,
        kind=CreditKind.PAID,
        priority=0,
        effective_at=effective,
        expires_at=effective + HOUR,
        transaction_kind=TransactionKind.GRANT,
    )
    with uow() as tx:
        tx.ledger.record(booking)
        tx.commit()
    expected = booking.new_lots[0]
    assert (expected.priority, expected.effective_at, expected.source_transaction_id) == (0, effective, booking.id)
    with uow() as tx:
        assert tx.ledger.lock_wallet("alice", T0).lots == (expected,)
        assert tx.ledger.lots([expected.id]) == [expected]
        assert tx.ledger.live_lots("alice") == [expected]
        assert tx.ledger.postings_of(booking.id) == [
            Posting(Account.WALLET, Credits(250), "alice", expected.id),
            Posting(Account.OFFLINE_FUNDING, Credits(-250)),
        ]
    assert balances(uow, now=effective) == c(250, 0)
    # due for the expiry run only once expired; lock_wallet_for_credit names it then
    with uow() as tx:
        assert tx.ledger.lock_wallet_for_credit("alice", effective).lots == ()
        assert tx.ledger.lock_wallet_for_credit("alice", effective + HOUR).lots == (expected,)
