"""Spending credits: the balance goes down into revenue, never below zero, exactly once per Idempotency-Key."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import (
    FakeClock,
    account_totals,
    assert_nothing_written,
    balances,
    history,
    lots,
    new_key,
    postings_of,
    spendable,
    top_up,
    transactions_of,
)
from wallet_core.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from wallet_core.ledger import Account, CreditKind, Lot, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.service import Wallet
from wallet_core.use_cases import SpendResult, spend_credits


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.fixture
def funded(wallet: Wallet, gateway: FakePaymentGateway) -> Wallet:
    """alice has 100 paid credits (a 1.00 USD top-up) and 20 promotional ones."""
    top_up(wallet, gateway, "1.00", "alice")
    wallet.grant("alice", "20", reason="promo", granted_by="admin")
    return wallet


def test_a_spend_lowers_the_balance_and_says_what_is_left(
    funded: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    result = funded.spend(
        "alice", "30.50", idempotency_key="order-1", reason="render job 7", metadata={"job": "7"}, actor="service:api"
    )

    assert result.user_id == "alice"
    assert result.credits_spent == c("30.50")
    assert result.balance == c("89.50")
    assert result.replayed is False
    assert balances(funded) == (c("89.50"), c("0"))

    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.SPEND
    assert booked.credits == c("-30.50")
    assert booked.held_change == c("0")
    assert booked.balance_after == c("89.50")
    assert booked.reason == "render job 7"
    assert booked.actor == "service:api"
    assert dict(booked.metadata) == {"job": "7"}
    assert booked.reference_id == "spend:order-1"
    assert booked.created_at == fake_clock.now


def test_spent_credits_are_posted_to_revenue(funded: Wallet, store: InMemoryStore) -> None:
    result = funded.spend("alice", "30.50", idempotency_key=new_key(), reason="usage", actor="service:api")

    legs = postings_of(store, result.transaction_id)
    revenue = [p for p in legs if p.account is Account.REVENUE]
    assert [p.amount for p in revenue] == [c("30.50")]
    assert revenue[0].user_id is None
    wallet_legs = [p for p in legs if p.account is Account.WALLET]
    assert sum(p.amount.minor for p in wallet_legs) == -3050
    assert all(p.user_id == "alice" and p.lot_id is not None for p in wallet_legs)
    assert sum(p.amount.minor for p in legs) == 0
    totals = account_totals(store)
    assert totals[(Account.REVENUE, None)] == c("30.50")
    assert totals[(Account.WALLET, "alice")] == c("89.50")
    assert funded.verify() == []


def test_spending_everything_leaves_exactly_zero(funded: Wallet) -> None:
    assert funded.spend("alice", "120", idempotency_key=new_key(), reason="usage", actor="service:api").balance == c(
        "0"
    )
    assert balances(funded) == (c("0"), c("0"))
    with pytest.raises(InsufficientCredits):
        funded.spend("alice", "0.01", idempotency_key=new_key(), reason="usage", actor="service:api")


def _snapshot(store: InMemoryStore) -> tuple[object, int]:
    return store.state.copy(), store.commits


def test_a_spend_larger_than_the_balance_is_refused_and_writes_nothing(
    funded: Wallet, store: InMemoryStore
) -> None:
    before = _snapshot(store)
    with pytest.raises(InsufficientCredits) as err:
        funded.spend("alice", "120.01", idempotency_key="too-much", reason="usage", actor="service:api")
    assert "120.00 spendable" in err.value.description
    assert "120.01 are needed" in err.value.description
    assert _snapshot(store) == before
    assert store.state.by_reference.get("spend:too-much") is None
    assert spendable(funded) == c("120")


def test_a_refused_spend_does_not_even_book_out_expired_credits(
    wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    wallet.grant("alice", "50", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(hours=1))
    wallet.grant("alice", "5", reason="promo", granted_by="admin")
    fake_clock.advance(hours=2)
    before = _snapshot(store)

    with pytest.raises(InsufficientCredits, match=r"has 5\.00 spendable"):
        wallet.spend("alice", "6", idempotency_key=new_key(), reason="usage", actor="service:api")

    assert _snapshot(store) == before
    assert [t.kind for t in transactions_of(store, "alice")] == [TransactionKind.GRANT, TransactionKind.GRANT]
    assert spendable(wallet) == c("5")


def test_a_new_wallet_cannot_spend_and_is_not_created_by_trying(wallet: Wallet, store: InMemoryStore) -> None:
    with pytest.raises(InsufficientCredits, match=r"has 0\.00 spendable credits, 1\.00 are needed"):
        wallet.spend("nobody", "1", idempotency_key=new_key(), reason="usage", actor="service:api")
    assert_nothing_written(store)


def test_a_refused_key_can_be_used_again_once_there_are_credits(wallet: Wallet) -> None:
    with pytest.raises(InsufficientCredits):
        wallet.spend("alice", "10", idempotency_key="retry-me", reason="usage", actor="service:api")
    wallet.grant("alice", "10", reason="promo", granted_by="admin")
    result = wallet.spend("alice", "10", idempotency_key="retry-me", reason="usage", actor="service:api")
    assert result.replayed is False
    assert spendable(wallet) == c("0")


# -- idempotency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "has space", "k" * 256, "tab\tkey", "caf\u00e9", "line\n"])
def test_a_valid_idempotency_key_is_required(
    funded: Wallet, store: InMemoryStore, key: str | None, fake_clock: FakeClock, uow: UnitOfWorkFactory
) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        spend_credits(
            user_id="alice", credits="1", idempotency_key=key, reason="usage", actor="a", uow=uow,
            now=fake_clock,
        )
    assert err.value.field == "Idempotency-Key"
    assert _snapshot(store) == before
    assert spendable(funded) == c("120")


def test_a_retry_with_the_same_key_replays_and_moves_nothing(funded: Wallet, store: InMemoryStore) -> None:
    first = funded.spend("alice", "30", idempotency_key="order-1", reason="usage", actor="service:api")
    funded.spend(
        "alice", "10", idempotency_key="order-2", reason="usage", actor="service:api"
    )  # something else happens in between
    before = _snapshot(store)

    again = funded.spend(
        "alice", "30.00", idempotency_key="order-1", reason="usage", actor="service:api"
    )  # the same amount, written differently

    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert again.credits_spent == c("30")
    assert again.balance == first.balance == c("90")  # the balance right after the first spend
    assert _snapshot(store) == before
    assert spendable(funded) == c("80")


def test_a_replay_is_answered_even_when_the_balance_could_not_pay_again(funded: Wallet) -> None:
    first = funded.spend("alice", "120", idempotency_key="all-of-it", reason="usage", actor="service:api")
    again = funded.spend("alice", "120", idempotency_key="all-of-it", reason="usage", actor="service:api")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert spendable(funded) == c("0")


@pytest.mark.parametrize(
    "change",
    [
        {"credits": "31"},
        {"credits": "29.99"},
        {"user": "bob"},
        {"reason": "another job"},
        {"metadata": {"order": "o-2"}},
        {"metadata": None},
        {"metadata": {"order": "o-1", "more": "x"}},
    ],
    ids=["more", "less", "other-user", "other-reason", "other-metadata", "no-metadata", "more-metadata"],
)
def test_the_same_key_for_a_different_spend_is_a_conflict(
    funded: Wallet, store: InMemoryStore, change: dict[str, object]
) -> None:
    funded.grant("bob", "500", reason="promo", granted_by="admin")
    funded.spend(
        "alice", "30", idempotency_key="order-1", reason="usage", metadata={"order": "o-1"}, actor="service:api"
    )
    before = _snapshot(store)

    request: dict[str, Any] = {
        "credits": "30", "user": "alice", "reason": "usage", "metadata": {"order": "o-1"}, **change
    }
    with pytest.raises(IdempotencyConflict) as err:
        funded.spend(
            str(request["user"]),
            request["credits"],
            idempotency_key="order-1",
            reason=request["reason"],
            metadata=request["metadata"],
            actor="service:api",
        )

    changed = "user_id" if "user" in change else next(iter(change))
    assert changed in err.value.description

    assert _snapshot(store) == before
    assert spendable(funded) == c("90")
    assert spendable(funded, "bob") == c("500")


def test_concurrent_retries_with_the_same_key_spend_once(funded: Wallet, store: InMemoryStore) -> None:
    results: list[SpendResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(
                funded.spend("alice", "7", idempotency_key="double-click", reason="usage", actor="service:api")
            )
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sum(not r.replayed for r in results) == 1
    assert len({r.transaction_id for r in results}) == 1
    assert spendable(funded) == c("113")


def test_concurrent_spends_never_overdraw(funded: Wallet) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            funded.spend("alice", "10", idempotency_key=f"job-{n}" or new_key(), reason="usage", actor="service:api")
            outcomes.append("spent")
        except InsufficientCredits:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["refused"] * 8 + ["spent"] * 12
    assert spendable(funded) == c("0")
    assert funded.verify() == []


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "problem"),
    [("0", "greater than 0"), (0, "greater than 0"), ("-1", "greater than 0"), ("abc", "decimal number"),
     (1.5, "float"), ("0.001", "2 decimal places"), (None, "decimal number"), (True, "decimal number")],
)
def test_invalid_amounts_are_refused(funded: Wallet, store: InMemoryStore, credits: object, problem: str) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("alice", credits, idempotency_key=new_key(), reason="usage", actor="service:api")
    assert err.value.field == "credits"
    assert problem in err.value.description
    assert _snapshot(store) == before


@pytest.mark.parametrize("reason", [None, "", "  ", "bell\x07", "r" * 501])
def test_a_valid_reason_is_required(funded: Wallet, store: InMemoryStore, reason: Any) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("alice", "1", idempotency_key=new_key(), reason=reason, actor="service:api")
    assert err.value.field == "reason"
    assert _snapshot(store) == before


@pytest.mark.parametrize("user_id", ["", "has space", "x" * 129, "alice\n", None])
def test_bad_user_ids_are_refused(funded: Wallet, store: InMemoryStore, user_id: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend(user_id, "1", idempotency_key=new_key(), reason="usage", actor="service:api")  # type: ignore[arg-type]
    assert err.value.field == "user_id"
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "metadata",
    [
        {"job": 7},
        {"job": None},
        {"job": ["a"]},
        {7: "job"},
        {"": "empty key"},
        {"k" * 41: "long key"},
        {"job": "v" * 501},
        {f"k{i}": "v" for i in range(21)},
        {"job": "line\nbreak"},
        {"job\x00": "nul in key"},
        {"job": "esc\x1b[31m"},
        ["job", "7"],
        "job=7",
    ],
    ids=[
        "int-value", "none-value", "list-value", "int-key", "empty-key", "long-key", "long-value", "21-keys",
        "newline", "nul-key", "escape", "list", "string",
    ],
)
def test_invalid_metadata_is_refused(funded: Wallet, store: InMemoryStore, metadata: Any) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("alice", "1", idempotency_key=new_key(), reason="usage", metadata=metadata, actor="service:api")
    assert err.value.field == "metadata"
    assert _snapshot(store) == before


@pytest.mark.parametrize("value", ["del\x7f", "nel\x85", "csi\x9b31m"], ids=["del", "nel", "csi"])
def test_metadata_with_del_or_c1_control_characters_is_refused(
    funded: Wallet, store: InMemoryStore, value: str
) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend(
            "alice", "1", idempotency_key=new_key(), reason="usage", metadata={"job": value}, actor="service:api"
        )
    assert err.value.field == "metadata"
    assert _snapshot(store) == before


def test_metadata_at_the_limits_is_kept(funded: Wallet, store: InMemoryStore) -> None:
    metadata = {f"k{i:02d}" + "x" * 37: "v" * 500 for i in range(20)}
    result = funded.spend(
        "alice", "1", idempotency_key=new_key(), reason="usage", metadata=metadata, actor="service:api"
    )
    assert dict(store.state.transactions[result.transaction_id].metadata) == metadata
    [shown] = [t for t in history(funded) if t.id == result.transaction_id]
    assert dict(shown.metadata) == metadata


# -- expiry --------------------------------------------------------------------------------------


def test_expired_promotional_credits_are_not_spendable_and_are_booked_out_by_the_spend(
    wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    wallet.grant("alice", "50", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=7))
    wallet.grant("alice", "30", reason="promo", granted_by="admin")
    wallet.spend(
        "alice", "10", idempotency_key=new_key(), reason="usage", actor="service:api"
    )  # from the expiring grant: 40 of it left
    fake_clock.advance(days=7)
    assert balances(wallet) == (c("30"), c("0"))

    result = wallet.spend("alice", "5", idempotency_key=new_key(), reason="usage", actor="service:api")

    assert result.balance == c("25")
    assert balances(wallet) == (c("25"), c("0"))
    kinds = [t.kind for t in transactions_of(store, "alice")]
    assert kinds == [
        TransactionKind.GRANT, TransactionKind.GRANT, TransactionKind.SPEND, TransactionKind.EXPIRY,
        TransactionKind.SPEND,
    ]
    expiry = transactions_of(store, "alice")[3]
    assert expiry.credits == c("-40")
    assert expiry.actor == "system"
    assert expiry.created_at == fake_clock.now
    assert account_totals(store)[(Account.EXPIRED, None)] == c("40")
    assert account_totals(store)[(Account.REVENUE, None)] == c("15")
    assert all(x.remaining == c("0") for x in lots(store) if x.expires_at is not None)
    assert wallet.verify() == []
    # Nothing is left to expire now.
    assert wallet.expire().wallets_expired == 0


def test_history_shows_the_spend_after_the_expiry_it_caused(wallet: Wallet, fake_clock: FakeClock) -> None:
    users = [f"user{n}" for n in range(20)]
    for user in users:
        wallet.grant(user, "50", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=1))
        wallet.grant(user, "10", reason="promo", granted_by="admin")
    fake_clock.advance(days=2)
    for user in users:
        wallet.spend(user, "4", idempotency_key=new_key(), reason="usage", actor="service:api")
    for user in users:
        rows = history(wallet, user)
        assert [t.kind for t in rows[:2]] == [TransactionKind.SPEND, TransactionKind.EXPIRY]
        assert rows[0].balance_after == spendable(wallet, user) == c("6")


def test_a_wallet_that_owes_credits_cannot_spend(wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock) -> None:
    # Build the state by hand: the wallet owes 5 credits (as after a refund of spent paid credits), even
    # though a lot still shows credits left.
    store.state.available["alice"] = c("-5")
    store.state.held["alice"] = c("0")
    store.state.lots["lot_x"] = Lot(
        id="lot_x", user_id="alice", kind=CreditKind.PAID, granted=c("10"), remaining=c("10"), held=c("0"),
        created_at=fake_clock.now,
    )
    before = _snapshot(store)

    with pytest.raises(InsufficientCredits, match=r"owes 5\.00"):
        wallet.spend("alice", "1", idempotency_key=new_key(), reason="usage", actor="service:api")
    with pytest.raises(InsufficientCredits, match=r"owes 5\.00"):
        wallet.hold("alice", "1", idempotency_key=new_key(), reason="reserve", actor="service:api")

    assert _snapshot(store) == before
