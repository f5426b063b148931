"""Grants with an effective date, a priority and a category, and the wallet's lots as a user sees them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import FakeClock, new_key, paid_top_up, postings_of, refund, refund_event, top_up
from wallet_core.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from wallet_core.ledger import Account, CreditKind
from wallet_core.money import Credits
from wallet_core.service import Wallet


def c(text: str) -> Credits:
    return Credits.parse(text)


def grant(wallet: Wallet, credits: str, key: str | None = None, **options: Any) -> str:
    return wallet.grant(
        "alice",
        credits,
        reason="promo",
        granted_by="admin",
        idempotency_key=key or new_key(),
        **options,
    ).transaction_id


def test_lower_priority_numbers_are_spent_first_and_paid_credits_last(
    wallet: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    top_up(wallet, gateway, "1.00")  # 100 paid credits, the oldest lot
    late = grant(wallet, "10", priority=90)
    early = grant(wallet, "10", priority=5)
    middle = grant(wallet, "10")  # 50

    spent = wallet.spend("alice", "25", idempotency_key=new_key(), reason="usage")

    lot = {t: postings_of(store, t)[0].lot_id for t in (late, early, middle)}
    assert [(s.lot_id, s.credits) for s in spent.sources] == [
        (lot[early], c("10")),
        (lot[middle], c("10")),
        (lot[late], c("5")),
    ]
    view = wallet.wallet("alice")
    assert [x.kind for x in view.lots] == [CreditKind.PROMOTIONAL, CreditKind.PAID]
    assert view.by_category == {CreditKind.PROMOTIONAL: c("5"), CreditKind.PAID: c("100")}


def test_credits_with_a_future_effective_at_are_pending_until_then(wallet: Wallet, fake_clock: FakeClock) -> None:
    grant(wallet, "10")
    result = wallet.grant(
        "alice",
        "40",
        reason="next month's allowance",
        granted_by="admin",
        idempotency_key="k1",
        effective_at=fake_clock() + timedelta(days=3),
    )

    assert result.balance == c("10")
    view = wallet.wallet("alice")
    assert (view.balance, view.pending) == (c("10"), c("40"))
    with pytest.raises(InsufficientCredits):
        wallet.spend("alice", "11", idempotency_key=new_key(), reason="usage")

    fake_clock.advance(days=3)
    view = wallet.wallet("alice")
    assert (view.balance, view.pending) == (c("50"), c("0"))
    assert wallet.spend("alice", "50", idempotency_key=new_key(), reason="usage").balance == c("0")
    assert wallet.verify() == []


def test_pending_credits_repay_no_debt_and_count_from_their_effective_at(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    pi = paid_top_up(wallet, gateway, store, "1.00").payment_intent_id
    wallet.spend("alice", "100", idempotency_key=new_key(), reason="usage")
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 100)))  # the spent 100 are now owed
    grant(wallet, "40", effective_at=fake_clock() + timedelta(hours=1))

    view = wallet.wallet("alice")
    assert (view.balance, view.pending, view.debt) == (c("-100"), c("40"), c("100"))

    fake_clock.advance(hours=1)
    view = wallet.wallet("alice")
    assert (view.balance, view.pending, view.debt) == (c("-60"), c("0"), c("60"))
    assert view.by_category == {CreditKind.PAID: c("-100"), CreditKind.PROMOTIONAL: c("40")}
    with pytest.raises(InsufficientCredits, match="owes"):
        wallet.spend("alice", "1", idempotency_key=new_key(), reason="usage")
    assert grant(wallet, "100") and wallet.balance("alice") == c("40").decimal  # the next grant repays first
    assert wallet.verify() == []


def test_a_paid_grant_is_funded_outside_stripe_and_spent_after_promotions(wallet: Wallet, store: InMemoryStore) -> None:
    paid = grant(wallet, "100", category="paid")
    grant(wallet, "10")

    spent = wallet.spend("alice", "15", idempotency_key=new_key(), reason="usage")

    assert [p.account for p in postings_of(store, paid)] == [Account.WALLET, Account.OFFLINE_FUNDING]
    assert [(s.category, s.credits) for s in spent.sources] == [
        (CreditKind.PROMOTIONAL, c("10")),
        (CreditKind.PAID, c("5")),
    ]
    view = wallet.wallet("alice")
    assert view.by_category == {CreditKind.PROMOTIONAL: c("0"), CreditKind.PAID: c("95")}
    assert [lot.source_transaction_id for lot in view.lots] == [paid]
    assert wallet.verify() == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": "1e2"}, "priority"),
        ({"category": "gift"}, "category"),
        ({"effective_at": "past"}, "effective_at"),
        ({"effective_at": "too far"}, "effective_at"),
        ({"effective_at": "in a day", "expires_at": "in an hour"}, "expires_at"),
    ],
)
def test_bad_options_are_refused_and_write_nothing(
    wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock, options: dict[str, object], field: str
) -> None:
    times = {
        "past": -timedelta(seconds=1),
        "too far": timedelta(days=366),
        "in a day": timedelta(days=1),
        "in an hour": timedelta(hours=1),
    }
    given: dict[str, Any] = {
        k: fake_clock() + times[v] if isinstance(v, str) and v in times else v for k, v in options.items()
    }
    with pytest.raises(InvalidInput, match=field):
        grant(wallet, "10", **given)
    assert store.commits == 0


def test_a_retry_must_repeat_every_option(wallet: Wallet) -> None:
    grant(wallet, "10", key="k1", priority=7, category="paid")
    assert wallet.grant(
        "alice", "10", reason="promo", granted_by="admin", idempotency_key="k1", priority=7, category="paid"
    ).replayed
    with pytest.raises(IdempotencyConflict, match="priority"):
        grant(wallet, "10", key="k1", priority=8, category="paid")
    with pytest.raises(IdempotencyConflict, match="category"):
        grant(wallet, "10", key="k1", priority=7)
