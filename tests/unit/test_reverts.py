"""Reverts: a grant's unspent credits taken back, a spend's or a capture's credits given back to the
lots that paid, each as a new transaction that names the one it corrects, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import FakeClock, assert_store_unchanged, new_key, postings_of, snapshot, top_up
from wallet_core.errors import IdempotencyConflict, InvalidInput, NotFound, NotRevertible
from wallet_core.ledger import Account, CreditKind, Posting, TransactionKind
from wallet_core.money import Credits
from wallet_core.service import Wallet


def grant(wallet: Wallet, credits: str, **options: Any) -> str:
    return wallet.grant(
        "alice", credits, reason="promo", granted_by="admin", idempotency_key=new_key(), **options
    ).transaction_id


def spend(wallet: Wallet, credits: str) -> str:
    return wallet.spend("alice", credits, idempotency_key=new_key(), reason="usage").transaction_id


def test_reverting_a_spend_gives_its_credits_back_to_the_lots_that_paid(wallet: Wallet, store: InMemoryStore) -> None:
    first = grant(wallet, "30", priority=10)
    second = grant(wallet, "50")
    spent = spend(wallet, "40")  # 30 from the priority-10 lot, 10 from the other
    lot_of = {t: postings_of(store, t)[0].lot_id for t in (first, second)}

    result = wallet.revert(spent, reason="charged twice", idempotency_key="r1")

    assert result.reverts == spent and result.credits_reverted == Credits.parse("40")
    assert result.balance == Credits.parse("80") and wallet.balance("alice") == Credits.parse("80").decimal
    assert [(s.lot_id, s.credits) for s in result.sources] == [
        (lot_of[first], Credits.parse("30")),
        (lot_of[second], Credits.parse("10")),
    ]
    revert_legs = postings_of(store, result.transaction_id or "")
    assert sorted(revert_legs, key=repr) == sorted(
        (Posting(p.account, -p.amount, p.user_id, p.lot_id) for p in postings_of(store, spent)), key=repr
    )
    history = {t.id: t for t in wallet.transactions("alice").transactions}
    assert history[spent].reverted_by == result.transaction_id
    assert history[result.transaction_id or ""].reverts == spent
    assert history[result.transaction_id or ""].kind is TransactionKind.REVERT
    assert wallet.verify() == []


def test_reverting_a_grant_takes_back_only_what_is_unspent(wallet: Wallet) -> None:
    granted = grant(wallet, "100")
    spend(wallet, "30")

    result = wallet.revert(granted, reason="granted to the wrong user", idempotency_key="r1")

    assert result.credits_reverted == Credits.parse("70")
    assert wallet.balance("alice") == 0
    assert [s.category for s in result.sources] == [CreditKind.PROMOTIONAL]
    assert wallet.verify() == []


def test_a_reverted_grant_ends_so_credits_coming_back_to_it_lapse(wallet: Wallet, store: InMemoryStore) -> None:
    granted = grant(wallet, "100")
    spent = spend(wallet, "30")
    wallet.revert(granted, reason="wrong user", idempotency_key="r1")

    wallet.revert(spent, reason="and the usage was a test", idempotency_key="r2")

    assert wallet.balance("alice") == 0  # the 30 came back to an ended lot: booked out as expired
    assert wallet.verify() == []
    expired = sum(p.amount.minor for _, p in store.state.postings if p.account is Account.EXPIRED)
    assert expired == Credits.parse("30").minor


def test_reverting_a_capture_gives_back_the_captured_credits_only(wallet: Wallet) -> None:
    grant(wallet, "100")
    hold = wallet.hold("alice", "60", idempotency_key=new_key(), reason="job")
    captured = wallet.capture(hold.hold_id, "25")
    assert wallet.balance("alice") == Credits.parse("75").decimal

    result = wallet.revert(captured.transaction_id, reason="job failed", idempotency_key="r1")

    assert result.credits_reverted == Credits.parse("25")
    assert wallet.balance("alice") == Credits.parse("100").decimal
    assert wallet.verify() == []


def test_credits_given_back_to_an_expired_lot_come_back_expired(wallet: Wallet, fake_clock: FakeClock) -> None:
    grant(wallet, "50", expires_at=fake_clock() + timedelta(days=1))
    spent = spend(wallet, "20")
    fake_clock.advance(days=2)

    result = wallet.revert(spent, reason="refund the usage", idempotency_key="r1")

    assert result.credits_reverted == Credits.parse("20") and result.balance == Credits(0)
    assert wallet.balance("alice") == 0
    assert wallet.verify() == []


def test_a_retry_with_the_same_key_replays_and_another_key_is_refused(wallet: Wallet, store: InMemoryStore) -> None:
    grant(wallet, "50")
    spent = spend(wallet, "20")
    first = wallet.revert(spent, reason="oops", idempotency_key="r1")
    before = snapshot(store)

    again = wallet.revert(spent, reason="oops", idempotency_key="r1")
    assert again.replayed and again.transaction_id == first.transaction_id
    assert (again.credits_reverted, again.balance, again.sources) == (
        first.credits_reverted,
        first.balance,
        first.sources,
    )
    with pytest.raises(NotRevertible, match="already reverted"):
        wallet.revert(spent, reason="oops", idempotency_key="r2")
    with pytest.raises(IdempotencyConflict):
        wallet.revert(spent, reason="another reason", idempotency_key="r1")
    assert_store_unchanged(store, before)


def test_a_dry_run_answers_the_same_and_writes_nothing(wallet: Wallet, store: InMemoryStore) -> None:
    grant(wallet, "50")
    spent = spend(wallet, "20")
    before = snapshot(store)

    dry = wallet.revert(spent, reason="check first", idempotency_key="r1", dry_run=True)

    assert_store_unchanged(store, before)
    assert dry.dry_run and dry.transaction_id is None
    real = wallet.revert(spent, reason="check first", idempotency_key="r1")
    assert (dry.credits_reverted, dry.balance, dry.sources) == (real.credits_reverted, real.balance, real.sources)


@pytest.mark.parametrize("kind", ["revert", "hold"])
def test_refused_kinds_say_why(wallet: Wallet, kind: str) -> None:
    grant(wallet, "50")
    spent = spend(wallet, "20")
    if kind == "revert":
        target = wallet.revert(spent, reason="x", idempotency_key="r1").transaction_id or ""
        match = "itself a revert"
    elif kind == "hold":
        target = wallet.hold("alice", "5", idempotency_key=new_key(), reason="job").transaction_id
        match = "release the hold"
    with pytest.raises(NotRevertible, match=match):
        wallet.revert(target, reason="x", idempotency_key=new_key())


def test_a_top_up_grant_is_refused_with_where_to_refund(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    top_up(wallet, gateway, "10.00")
    [paid] = [t.id for t in wallet.transactions("alice").transactions if t.kind is TransactionKind.TOP_UP]
    with pytest.raises(NotRevertible, match="refund the payment at Stripe"):
        wallet.revert(paid, reason="x", idempotency_key=new_key())


def test_a_grant_with_nothing_left_is_refused(wallet: Wallet) -> None:
    granted = grant(wallet, "20")
    spend(wallet, "20")
    with pytest.raises(NotRevertible, match="nothing left to revert"):
        wallet.revert(granted, reason="x", idempotency_key="r1")


def test_unknown_and_malformed_ids(wallet: Wallet, store: InMemoryStore) -> None:
    with pytest.raises(NotFound):
        wallet.revert("ctx_nope", reason="x", idempotency_key="r1")
    with pytest.raises(InvalidInput, match="transaction_id"):
        wallet.revert("ctx nope", reason="x", idempotency_key="r1")
    with pytest.raises(InvalidInput, match="Idempotency-Key"):
        wallet.revert("ctx_nope", reason="x", idempotency_key=None)
    with pytest.raises(InvalidInput, match="reason"):
        wallet.revert("ctx_nope", reason="", idempotency_key="r1")
    assert store.commits == 0


def test_verify_names_a_revert_that_does_not_mirror(wallet: Wallet, store: InMemoryStore) -> None:
    grant(wallet, "50")
    spent = spend(wallet, "20")
    reverted = wallet.revert(spent, reason="x", idempotency_key="r1").transaction_id
    # Tamper: the revert gives one credit more back (and takes it from revenue, so it still balances).
    legs = [(t, p) for t, p in store.state.postings if t == reverted]
    store.state.postings = [(t, p) for t, p in store.state.postings if t != reverted] + [
        (
            t,
            Posting(
                p.account, Credits(p.amount.minor + (100 if p.account is Account.WALLET else -100)), p.user_id, p.lot_id
            ),
        )
        for t, p in legs
    ]
    problems = [v for v in wallet.verify() if v.subject == reverted]
    assert problems and "does not mirror" in problems[0].problem


def test_a_dry_run_with_a_used_key_says_what_a_revert_would_do_now(wallet: Wallet, store: InMemoryStore) -> None:
    grant(wallet, "50")
    spent = spend(wallet, "20")
    wallet.revert(spent, reason="oops", idempotency_key="r1")
    before = snapshot(store)
    with pytest.raises(NotRevertible, match="already reverted"):
        wallet.revert(spent, reason="oops", idempotency_key="r1", dry_run=True)
    assert_store_unchanged(store, before)


def test_a_replay_of_a_revert_into_an_ended_lot_answers_the_first_balance(wallet: Wallet) -> None:
    granted = grant(wallet, "100")
    spent = spend(wallet, "30")
    wallet.revert(granted, reason="wrong user", idempotency_key="r1")
    first = wallet.revert(spent, reason="and the usage", idempotency_key="r2")
    again = wallet.revert(spent, reason="and the usage", idempotency_key="r2")
    assert first.balance == again.balance == Credits(0) and again.replayed
