"""Spending credits: the balance goes down into revenue, never below zero, exactly once per Idempotency-Key."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import WalletDriver, account_totals, assert_nothing_written, postings_of, transactions_of
from wallet_core.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from wallet_core.ledger import Account, CreditKind, Lot, TransactionKind
from wallet_core.money import Credits
from wallet_core.use_cases import SpendResult, spend_credits


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.fixture
def funded(wallet: WalletDriver) -> WalletDriver:
    """alice has 100 paid credits (a 1.00 USD top-up) and 20 promotional ones."""
    wallet.top_up("1.00")
    wallet.grant("20")
    return wallet


def test_a_spend_lowers_the_balance_and_says_what_is_left(funded: WalletDriver, store: InMemoryStore) -> None:
    result = funded.spend("30.50", key="order-1", reason="render job 7", metadata={"job": "7"})

    assert result.user_id == "alice"
    assert result.credits_spent == c("30.50")
    assert result.balance == c("89.50")
    assert result.replayed is False
    assert funded.balances() == (c("89.50"), c("0"))

    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.SPEND
    assert booked.credits == c("-30.50")
    assert booked.held_change == c("0")
    assert booked.balance_after == c("89.50")
    assert booked.reason == "render job 7"
    assert booked.actor == "service:api"
    assert dict(booked.metadata) == {"job": "7"}
    assert booked.reference_id == "spend:order-1"
    assert booked.created_at == funded.clock.now


def test_spent_credits_are_posted_to_revenue(funded: WalletDriver, store: InMemoryStore) -> None:
    result = funded.spend("30.50")

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


def test_spending_everything_leaves_exactly_zero(funded: WalletDriver) -> None:
    assert funded.spend("120").balance == c("0")
    assert funded.balances() == (c("0"), c("0"))
    with pytest.raises(InsufficientCredits):
        funded.spend("0.01")


def _snapshot(store: InMemoryStore) -> tuple[object, int]:
    return store.state.copy(), store.commits


def test_a_spend_larger_than_the_balance_is_refused_and_writes_nothing(
    funded: WalletDriver, store: InMemoryStore
) -> None:
    before = _snapshot(store)
    with pytest.raises(InsufficientCredits) as err:
        funded.spend("120.01", key="too-much")
    assert "120.00 spendable" in err.value.description
    assert "120.01 are needed" in err.value.description
    assert _snapshot(store) == before
    assert store.state.by_reference.get("spend:too-much") is None
    assert funded.spendable() == c("120")


def test_a_refused_spend_does_not_even_book_out_expired_credits(wallet: WalletDriver, store: InMemoryStore) -> None:
    wallet.grant("50", expires_in=timedelta(hours=1))
    wallet.grant("5")
    wallet.clock.advance(hours=2)
    before = _snapshot(store)

    with pytest.raises(InsufficientCredits, match=r"has 5\.00 spendable"):
        wallet.spend("6")

    assert _snapshot(store) == before
    assert [t.kind for t in transactions_of(store, "alice")] == [TransactionKind.GRANT, TransactionKind.GRANT]
    assert wallet.spendable() == c("5")


def test_a_new_wallet_cannot_spend_and_is_not_created_by_trying(wallet: WalletDriver, store: InMemoryStore) -> None:
    with pytest.raises(InsufficientCredits, match=r"has 0\.00 spendable credits, 1\.00 are needed"):
        wallet.spend("1", user="nobody")
    assert_nothing_written(store)


def test_a_refused_key_can_be_used_again_once_there_are_credits(wallet: WalletDriver) -> None:
    with pytest.raises(InsufficientCredits):
        wallet.spend("10", key="retry-me")
    wallet.grant("10")
    result = wallet.spend("10", key="retry-me")
    assert result.replayed is False
    assert wallet.spendable() == c("0")


# -- idempotency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "has space", "k" * 256, "tab\tkey", "caf\u00e9", "line\n"])
def test_a_valid_idempotency_key_is_required(funded: WalletDriver, store: InMemoryStore, key: str | None) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        spend_credits(
            user_id="alice", credits="1", idempotency_key=key, reason="usage", actor="a", uow=funded.uow,
            now=funded.clock,
        )
    assert err.value.field == "Idempotency-Key"
    assert _snapshot(store) == before
    assert funded.spendable() == c("120")


def test_a_retry_with_the_same_key_replays_and_moves_nothing(funded: WalletDriver, store: InMemoryStore) -> None:
    first = funded.spend("30", key="order-1")
    funded.spend("10", key="order-2")  # something else happens in between
    before = _snapshot(store)

    again = funded.spend("30.00", key="order-1")  # the same amount, written differently

    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert again.credits_spent == c("30")
    assert again.balance == first.balance == c("90")  # the balance right after the first spend
    assert _snapshot(store) == before
    assert funded.spendable() == c("80")


def test_a_replay_is_answered_even_when_the_balance_could_not_pay_again(funded: WalletDriver) -> None:
    first = funded.spend("120", key="all-of-it")
    again = funded.spend("120", key="all-of-it")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert funded.spendable() == c("0")


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
    funded: WalletDriver, store: InMemoryStore, change: dict[str, object]
) -> None:
    funded.grant("500", user="bob")
    funded.spend("30", key="order-1", reason="usage", metadata={"order": "o-1"})
    before = _snapshot(store)

    request: dict[str, object] = {
        "credits": "30", "user": "alice", "reason": "usage", "metadata": {"order": "o-1"}, **change
    }
    with pytest.raises(IdempotencyConflict) as err:
        funded.spend(request["credits"], str(request["user"]), key="order-1", reason=request["reason"],
                     metadata=request["metadata"])

    changed = "user_id" if "user" in change else next(iter(change))
    assert changed in err.value.description

    assert _snapshot(store) == before
    assert funded.spendable() == c("90")
    assert funded.spendable("bob") == c("500")


def test_concurrent_retries_with_the_same_key_spend_once(funded: WalletDriver, store: InMemoryStore) -> None:
    results: list[SpendResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(funded.spend("7", key="double-click"))
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
    assert funded.spendable() == c("113")


def test_concurrent_spends_never_overdraw(funded: WalletDriver) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            funded.spend("10", key=f"job-{n}")
            outcomes.append("spent")
        except InsufficientCredits:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["refused"] * 8 + ["spent"] * 12
    assert funded.spendable() == c("0")
    assert funded.verify() == []


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "problem"),
    [("0", "greater than 0"), (0, "greater than 0"), ("-1", "greater than 0"), ("abc", "decimal number"),
     (1.5, "float"), ("0.001", "2 decimal places"), (None, "decimal number"), (True, "decimal number")],
)
def test_invalid_amounts_are_refused(funded: WalletDriver, store: InMemoryStore, credits: object, problem: str) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend(credits)
    assert err.value.field == "credits"
    assert problem in err.value.description
    assert _snapshot(store) == before


@pytest.mark.parametrize("reason", [None, "", "  ", "bell\x07", "r" * 501])
def test_a_valid_reason_is_required(funded: WalletDriver, store: InMemoryStore, reason: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("1", reason=reason)
    assert err.value.field == "reason"
    assert _snapshot(store) == before


@pytest.mark.parametrize("user_id", ["", "has space", "x" * 129, "alice\n", None])
def test_bad_user_ids_are_refused(funded: WalletDriver, store: InMemoryStore, user_id: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("1", user_id)  # type: ignore[arg-type]
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
def test_invalid_metadata_is_refused(funded: WalletDriver, store: InMemoryStore, metadata: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("1", metadata=metadata)
    assert err.value.field == "metadata"
    assert _snapshot(store) == before


@pytest.mark.parametrize("value", ["del\x7f", "nel\x85", "csi\x9b31m"], ids=["del", "nel", "csi"])
def test_metadata_with_del_or_c1_control_characters_is_refused(
    funded: WalletDriver, store: InMemoryStore, value: str
) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.spend("1", metadata={"job": value})
    assert err.value.field == "metadata"
    assert _snapshot(store) == before


def test_metadata_at_the_limits_is_kept(funded: WalletDriver, store: InMemoryStore) -> None:
    metadata = {f"k{i:02d}" + "x" * 37: "v" * 500 for i in range(20)}
    result = funded.spend("1", metadata=metadata)
    assert dict(store.state.transactions[result.transaction_id].metadata) == metadata
    [shown] = [t for t in funded.history() if t.id == result.transaction_id]
    assert dict(shown.metadata) == metadata


# -- expiry --------------------------------------------------------------------------------------


def test_expired_promotional_credits_are_not_spendable_and_are_booked_out_by_the_spend(
    wallet: WalletDriver, store: InMemoryStore
) -> None:
    wallet.grant("50", expires_in=timedelta(days=7))
    wallet.grant("30")
    wallet.spend("10")  # from the expiring grant: 40 of it left
    wallet.clock.advance(days=7)
    assert wallet.balances() == (c("30"), c("0"))

    result = wallet.spend("5")

    assert result.balance == c("25")
    assert wallet.balances() == (c("25"), c("0"))
    kinds = [t.kind for t in transactions_of(store, "alice")]
    assert kinds == [
        TransactionKind.GRANT, TransactionKind.GRANT, TransactionKind.SPEND, TransactionKind.EXPIRY,
        TransactionKind.SPEND,
    ]
    expiry = transactions_of(store, "alice")[3]
    assert expiry.credits == c("-40")
    assert expiry.actor == "system"
    assert expiry.created_at == wallet.clock.now
    assert account_totals(store)[(Account.EXPIRED, None)] == c("40")
    assert account_totals(store)[(Account.REVENUE, None)] == c("15")
    assert all(x.remaining == c("0") for x in wallet.lots() if x.expires_at is not None)
    assert wallet.verify() == []
    # Nothing is left to expire now.
    assert wallet.expire().wallets_expired == 0


def test_history_shows_the_spend_after_the_expiry_it_caused(wallet: WalletDriver) -> None:
    users = [f"user{n}" for n in range(20)]
    for user in users:
        wallet.grant("50", user, expires_in=timedelta(days=1))
        wallet.grant("10", user)
    wallet.clock.advance(days=2)
    for user in users:
        wallet.spend("4", user)
    for user in users:
        rows = wallet.history(user)
        assert [t.kind for t in rows[:2]] == [TransactionKind.SPEND, TransactionKind.EXPIRY]
        assert rows[0].balance_after == wallet.spendable(user) == c("6")


def test_a_wallet_that_owes_credits_cannot_spend(wallet: WalletDriver, store: InMemoryStore) -> None:
    # Build the state by hand: the wallet owes 5 credits (as after a refund of spent paid credits), even
    # though a lot still shows credits left.
    store.state.available["alice"] = c("-5")
    store.state.held["alice"] = c("0")
    store.state.lots["lot_x"] = Lot(
        id="lot_x", user_id="alice", kind=CreditKind.PAID, granted=c("10"), remaining=c("10"), held=c("0"),
        created_at=wallet.clock.now,
    )
    before = _snapshot(store)

    with pytest.raises(InsufficientCredits, match=r"owes 5\.00"):
        wallet.spend("1")
    with pytest.raises(InsufficientCredits, match=r"owes 5\.00"):
        wallet.hold("1")

    assert _snapshot(store) == before
