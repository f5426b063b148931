"""`wallet verify`: silent on a healthy ledger, and names the account or transaction that breaks a rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import (
    T0,
    FakeClock,
    balances,
    charged,
    dispute_event,
    new_key,
    paid_top_up,
    refund,
    refund_event,
    sum_of_all_postings,
    top_up,
)
from wallet_core.ledger import Account, Booking, CreditKind, Posting, TransactionKind, WalletState
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.refunds import (
    dispute_closed_reference,
    dispute_reference,
    give_back_booking,
    take_back_booking,
    top_up_lot_id,
)
from wallet_core.service import Wallet
from wallet_core.topups import TopUp
from wallet_core.use_cases import Violation


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.fixture
def busy(wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway) -> Wallet:
    """Two users after a bit of everything: top-ups, grants, spends, holds, captures, releases, expiry."""
    for user in ("alice", "bob"):
        top_up(wallet, gateway, "2.00", user)
        wallet.grant(user, "30", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=1))
        wallet.grant(user, "15", reason="promo", granted_by="admin")
        wallet.spend(user, "12.34", idempotency_key=new_key(), reason="usage", actor="service:api")
        captured = wallet.hold(
            user, "40", idempotency_key=new_key(), reason="reserve", expires_in_seconds=3600, actor="service:api"
        )
        wallet.capture(captured.hold_id, "25.50", actor="service:api")
        released = wallet.hold(user, "10", idempotency_key=new_key(), reason="reserve", actor="service:api")
        wallet.release(released.hold_id, actor="service:api")
        wallet.hold(
            user, "7", idempotency_key=new_key(), reason="reserve", expires_in_seconds=604_800, actor="service:api"
        )  # left open
        wallet.hold(
            user, "3", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
        )  # will expire
        wallet.grant(
            user, "4", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=1)
        )  # will expire
    fake_clock.advance(days=1)
    report = wallet.expire()
    assert (report.wallets_expired, report.holds_released) == (2, 2)
    wallet.spend("alice", "1", idempotency_key=new_key(), reason="usage", actor="service:api")
    return wallet


def _subjects(found: list[Violation]) -> set[str]:
    return {v.subject for v in found}


def test_an_empty_ledger_is_healthy(wallet: Wallet) -> None:
    assert wallet.verify() == []


def test_a_busy_ledger_is_healthy(busy: Wallet, store: InMemoryStore) -> None:
    assert busy.verify() == []
    assert sum_of_all_postings(store) == c("0")
    assert balances(busy, "alice") == (c("199.16"), c("7"))  # the numbers the fixture should leave
    assert balances(busy, "bob") == (c("200.16"), c("7"))


def test_a_stored_balance_that_disagrees_with_the_postings_is_named(busy: Wallet, store: InMemoryStore) -> None:
    store.state.available["alice"] += c("0.01")
    found = busy.verify()
    assert _subjects(found) == {"wallet:alice"}
    [problem] = found
    assert problem.problem == "stored balance 199.17 but postings sum to 199.16"


def test_a_stored_held_balance_that_disagrees_is_named(busy: Wallet, store: InMemoryStore) -> None:
    store.state.held["bob"] = c("0")
    found = busy.verify()
    assert _subjects(found) == {"held:bob"}
    assert "stored balance 0.00 but postings sum to 7.00" in found[0].problem


def test_a_dropped_posting_names_its_transaction_the_account_and_the_ledger(
    busy: Wallet, store: InMemoryStore
) -> None:
    index, (tx_id, dropped) = next(
        (i, (t, p)) for i, (t, p) in enumerate(store.state.postings)
        if p.account is Account.REVENUE and store.state.transactions[t].user_id == "bob"
    )
    del store.state.postings[index]

    found = busy.verify()

    assert tx_id in _subjects(found)
    assert "ledger" in _subjects(found)
    by_subject = {v.subject: v.problem for v in found}
    assert by_subject[tx_id] == f"postings sum to {-dropped.amount}, not 0"
    assert str(-dropped.amount) in by_subject["ledger"]
    assert not any("alice" in s for s in _subjects(found))


def test_a_dropped_wallet_leg_also_names_the_users_account(busy: Wallet, store: InMemoryStore) -> None:
    index, (tx_id, _) = next(
        (i, (t, p)) for i, (t, p) in enumerate(store.state.postings)
        if p.account is Account.WALLET and p.user_id == "alice"
    )
    del store.state.postings[index]
    subjects = _subjects(busy.verify())
    assert {tx_id, "ledger", "wallet:alice"} <= subjects
    assert not any("bob" in s for s in subjects)


def test_a_lot_that_disagrees_with_the_postings_is_named(busy: Wallet, store: InMemoryStore) -> None:
    lot = next(x for x in store.state.lots.values() if x.user_id == "bob" and x.kind is CreditKind.PAID)
    store.state.lots[lot.id] = replace(lot, remaining=lot.remaining + c("1"))
    found = busy.verify()
    assert _subjects(found) == {"wallet:bob"}
    assert found[0].problem == "postings sum to 200.16 but its lots hold 201.16"


def test_a_lot_whose_held_part_disagrees_is_named(busy: Wallet, store: InMemoryStore) -> None:
    lot = next(x for x in store.state.lots.values() if x.user_id == "alice" and x.held.is_positive())
    store.state.lots[lot.id] = replace(lot, held=Credits(0))
    found = busy.verify()
    assert _subjects(found) == {"held:alice"}
    assert found[0].problem == "postings sum to 7.00 but its lots hold 0.00"


def _overdraw_bob(store: InMemoryStore, *, onto_lot: bool) -> None:
    """A balanced transaction, kept consistent on the stored balance, that spends all of bob's credits and 5
    more into revenue: the 5 go onto his paid lot (a lot in 'debt' no refund or dispute made) or onto no lot."""
    bobs = [x for x in store.state.lots.values() if x.user_id == "bob" and x.remaining.is_positive()]
    paid = next(x for x in bobs if x.kind is CreditKind.PAID)
    legs = [Posting(Account.WALLET, -x.remaining, "bob", x.id) for x in bobs]
    legs.append(Posting(Account.WALLET, c("-5"), "bob", paid.id if onto_lot else None))
    legs.append(Posting(Account.REVENUE, Credits(-sum(p.amount.minor for p in legs))))
    store.state.postings.extend(("ctx_overdraw", p) for p in legs)
    for x in bobs:
        store.state.lots[x.id] = replace(x, remaining=c("-5") if onto_lot and x.id == paid.id else Credits(0))
    store.state.available["bob"] = c("-5")


def test_a_negative_balance_beyond_the_recorded_debt_is_named(busy: Wallet, store: InMemoryStore) -> None:
    _overdraw_bob(store, onto_lot=False)

    found = busy.verify()

    assert found == [
        Violation("wallet:bob", "postings sum to -5.00 but its lots hold 0.00"),
        Violation("wallet:bob", "negative balance -5.00 beyond its recorded debt 0.00"),
    ]


def test_a_negative_balance_is_named_even_when_everything_adds_up(busy: Wallet, store: InMemoryStore) -> None:
    # Everything adds up (postings, stored balance, lots); only the sign is wrong, and no refund or dispute
    # was ever booked, so bob owes nothing.
    _overdraw_bob(store, onto_lot=True)

    found = busy.verify()

    assert found == [
        Violation("wallet:bob", "negative balance -5.00 beyond its recorded debt 0.00"),
        Violation("wallet:bob", "its lots are overdrawn by 5.00 that no refund or dispute took back"),
    ]


def test_a_lot_overdrawn_is_named_even_when_the_wallet_stays_positive(busy: Wallet, store: InMemoryStore) -> None:
    # Bob's paid lot goes 5 below zero by a spend, while a later grant keeps the wallet positive.
    busy.grant("bob", "100", reason="promo", granted_by="admin")
    bobs = [x for x in store.state.lots.values() if x.user_id == "bob" and x.remaining.is_positive()]
    paid = next(x for x in bobs if x.kind is CreditKind.PAID)
    overdraw = paid.remaining + c("5")
    store.state.postings.extend([
        ("ctx_overdraw", Posting(Account.WALLET, -overdraw, "bob", paid.id)),
        ("ctx_overdraw", Posting(Account.REVENUE, overdraw)),
    ])
    store.state.lots[paid.id] = replace(paid, remaining=c("-5"))
    store.state.available["bob"] = store.state.available["bob"] - overdraw
    assert store.state.available["bob"].is_positive()

    assert busy.verify() == [
        Violation("wallet:bob", "its lots are overdrawn by 5.00 that no refund or dispute took back"),
    ]


def test_a_transaction_with_unbalanced_postings_is_named(busy: Wallet, store: InMemoryStore) -> None:
    tx_id = next(t.id for t in store.state.transactions.values() if t.user_id == "alice")
    store.state.postings.append((tx_id, Posting(Account.PROMOTIONS, c("-3"))))
    found = busy.verify()
    assert {v.subject for v in found} == {tx_id, "ledger"}
    assert {v.problem for v in found} == {"postings sum to -3.00, not 0", "all postings sum to -3.00, not 0"}


# -- a payment's refunds and disputes never take more than it granted -----------------------------------------


def _plant(uow: UnitOfWorkFactory, booking_of: Callable[[WalletState], Booking]) -> None:
    """Record a booking straight through the repository, past every use case's checks (as a bug would)."""
    with uow() as tx:
        tx.ledger.record(booking_of(tx.ledger.lock_wallet("alice", T0)))
        tx.commit()


def _freeze(top_up: TopUp, dispute_id: str, credits: str) -> Callable[[WalletState], Booking]:
    return lambda state: take_back_booking(
        state, lot_id=top_up_lot_id(charged(top_up).payment_intent_id), credits=c(credits), to_account=Account.DISPUTED,
        kind=TransactionKind.DISPUTE, reference_id=dispute_reference(dispute_id), now=T0, reason="planted",
        metadata={"dispute_id": dispute_id, "top_up_id": top_up.id},
    )


def test_disputes_and_refunds_taking_more_than_the_payment_granted_are_named(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory
) -> None:
    top_up = paid_top_up(wallet, gateway, store, "10.00", "alice")
    pi = top_up.payment_intent_id
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 300)))
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))  # freezes the 700 left
    assert wallet.verify() == []

    _plant(uow, _freeze(top_up, "dp_2", "1000"))  # what a second dispute froze before the fix

    assert wallet.verify() == [
        Violation(f"payment:{pi}", "refunds took 300.00 and disputes froze 1700.00 credits, more than the 1000.00 "
                                   "it granted"),
    ]


def test_a_won_dispute_that_gave_back_more_than_it_froze_is_named(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory
) -> None:
    top_up = paid_top_up(wallet, gateway, store, "10.00", "alice")
    pi = top_up.payment_intent_id
    _plant(uow, _freeze(top_up, "dp_1", "400"))
    _plant(uow, lambda state: give_back_booking(
        state, lot_id=top_up_lot_id(pi), credits=c("500"), from_account=Account.DISPUTED,
        kind=TransactionKind.DISPUTE_WON, reference_id=dispute_closed_reference("dp_1"), now=T0, reason="planted",
    ))
    # (the disputed account also went below zero, which nothing else in the ledger looks at)

    assert wallet.verify() == [Violation(f"payment:{pi}", "dispute dp_1 gave back more than it froze")]
