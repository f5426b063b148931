"""Holds: reserve credits before the cost is known, then capture all or part (the rest goes back) or release."""

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
    balances,
    held,
    history,
    lots,
    new_key,
    postings_of,
    spendable,
    top_up,
    transactions_of,
)
from wallet_core.errors import HoldNotOpen, IdempotencyConflict, InsufficientCredits, InvalidInput, NotFound
from wallet_core.holds import DEFAULT_HOLD_TTL, HoldStatus
from wallet_core.ledger import Account, CreditKind, TransactionKind
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWorkFactory
from wallet_core.service import Wallet
from wallet_core.use_cases import place_hold


def c(text: str) -> Credits:
    return Credits.parse(text)


def _snapshot(store: InMemoryStore) -> tuple[object, int]:
    return store.state.copy(), store.commits


@pytest.fixture
def funded(wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway) -> Wallet:
    """alice has 10 promotional credits expiring in 30 days, then 100 paid credits."""
    wallet.grant("alice", "10", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=30))
    top_up(wallet, gateway, "1.00", "alice")
    return wallet


def _remaining(store: InMemoryStore) -> dict[CreditKind, tuple[Credits, Credits]]:
    """(remaining, held) of each of alice's lots, by kind (the fixture has one lot of each)."""
    return {lot.kind: (lot.remaining, lot.held) for lot in lots(store)}


def test_a_hold_moves_credits_from_spendable_to_held(
    funded: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    result = funded.hold("alice", "30", idempotency_key="job-1", reason="reserve", actor="service:api")

    assert result.status is HoldStatus.OPEN
    assert result.amount == c("30")
    assert result.captured == c("0")
    assert result.balance == c("80")
    assert result.expires_at == fake_clock.now + DEFAULT_HOLD_TTL
    assert result.replayed is False
    assert balances(funded) == (c("80"), c("30"))

    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.HOLD
    assert booked.credits == c("-30")
    assert booked.held_change == c("30")
    assert booked.balance_after == c("80")
    assert booked.hold_id == result.hold_id
    # Reserved in spending order: the promotional lot first.
    assert _remaining(store) == {CreditKind.PROMOTIONAL: (c("0"), c("10")), CreditKind.PAID: (c("80"), c("20"))}
    hold = store.state.holds[result.hold_id]
    assert [amount for _, amount in hold.allocations] == [c("10"), c("20")]
    # Nothing goes to revenue yet.
    assert not any(p.account is Account.REVENUE for p in postings_of(store, result.transaction_id))
    assert funded.verify() == []


def test_held_credits_cannot_be_spent(funded: Wallet) -> None:
    funded.hold("alice", "100", idempotency_key=new_key(), reason="reserve", actor="service:api")
    with pytest.raises(InsufficientCredits, match=r"has 10\.00 spendable"):
        funded.spend("alice", "10.01", idempotency_key=new_key(), reason="usage", actor="service:api")
    funded.spend("alice", "10", idempotency_key=new_key(), reason="usage", actor="service:api")
    assert balances(funded) == (c("0"), c("100"))


def test_a_hold_larger_than_the_spendable_balance_is_refused_and_writes_nothing(
    funded: Wallet, store: InMemoryStore
) -> None:
    funded.hold("alice", "50", idempotency_key=new_key(), reason="reserve", actor="service:api")
    before = _snapshot(store)
    with pytest.raises(InsufficientCredits, match=r"has 60\.00 spendable credits, 60\.01 are needed"):
        funded.hold("alice", "60.01", idempotency_key=new_key(), reason="reserve", actor="service:api")
    assert _snapshot(store) == before


def test_capturing_all_of_a_hold_spends_it(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    result = funded.capture(hold.hold_id, actor="service:api")

    assert result.status is HoldStatus.CAPTURED
    assert result.captured == c("30")
    assert result.balance == c("80")
    assert result.replayed is False
    assert balances(funded) == (c("80"), c("0"))
    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.CAPTURE
    assert booked.credits == c("0")
    assert booked.held_change == c("-30")
    assert account_totals(store)[(Account.REVENUE, None)] == c("30")
    assert _remaining(store) == {CreditKind.PROMOTIONAL: (c("0"), c("0")), CreditKind.PAID: (c("80"), c("0"))}
    assert store.state.holds[hold.hold_id].status is HoldStatus.CAPTURED
    assert funded.verify() == []


def test_capturing_part_of_a_hold_gives_the_rest_back_to_the_same_lots(
    funded: Wallet, store: InMemoryStore
) -> None:
    hold = funded.hold(
        "alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api"
    )  # promotional 10 + paid 20
    result = funded.capture(hold.hold_id, "15", actor="service:api")  # promotional 10 + paid 5 captured, paid 15 back

    assert result.captured == c("15")
    assert result.amount == c("30")
    assert result.balance == c("95")
    assert balances(funded) == (c("95"), c("0"))
    assert _remaining(store) == {CreditKind.PROMOTIONAL: (c("0"), c("0")), CreditKind.PAID: (c("95"), c("0"))}
    booked = store.state.transactions[result.transaction_id]
    assert booked.credits == c("15")
    assert booked.held_change == c("-30")
    assert account_totals(store)[(Account.REVENUE, None)] == c("15")
    assert store.state.holds[hold.hold_id].captured == c("15")
    assert funded.verify() == []


def test_a_partial_capture_of_the_first_lot_returns_the_rest_of_it(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    funded.capture(hold.hold_id, "4", actor="service:api")
    assert _remaining(store) == {CreditKind.PROMOTIONAL: (c("6"), c("0")), CreditKind.PAID: (c("100"), c("0"))}
    assert balances(funded) == (c("106"), c("0"))


def test_capturing_nothing_is_refused_in_favour_of_release(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    before = _snapshot(store)
    with pytest.raises(InvalidInput, match="release the hold"):
        funded.capture(hold.hold_id, "0", actor="service:api")
    assert _snapshot(store) == before
    assert store.state.holds[hold.hold_id].status is HoldStatus.OPEN


def test_releasing_a_hold_gives_everything_back(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    result = funded.release(hold.hold_id, actor="service:api")

    assert result.status is HoldStatus.RELEASED
    assert result.captured == c("0")
    assert result.balance == c("110")
    assert balances(funded) == (c("110"), c("0"))
    assert _remaining(store) == {CreditKind.PROMOTIONAL: (c("10"), c("0")), CreditKind.PAID: (c("100"), c("0"))}
    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.RELEASE
    assert booked.credits == c("30")
    assert booked.held_change == c("-30")
    assert account_totals(store).get((Account.REVENUE, None), c("0")) == c("0")
    assert store.state.holds[hold.hold_id].status is HoldStatus.RELEASED
    assert funded.verify() == []


def test_capturing_more_than_was_held_is_refused(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.capture(hold.hold_id, "30.01", actor="service:api")
    assert err.value.field == "credits"
    assert "30.00" in err.value.description
    assert _snapshot(store) == before
    assert funded.capture(hold.hold_id, "30", actor="service:api").captured == c("30")  # the hold is still open


@pytest.mark.parametrize("credits", ["-1", "abc", 1.5, "0.001"])
def test_invalid_capture_amounts_are_refused(funded: Wallet, store: InMemoryStore, credits: object) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.capture(hold.hold_id, credits, actor="service:api")
    assert err.value.field == "credits"
    assert _snapshot(store) == before


def test_an_unknown_hold_is_not_found(funded: Wallet) -> None:
    with pytest.raises(NotFound):
        funded.capture("hold_nope", actor="service:api")
    with pytest.raises(NotFound):
        funded.release("hold_nope", actor="service:api")
    with pytest.raises(InvalidInput):
        funded.capture("not a hold id", actor="service:api")


# -- a settled hold stays settled ----------------------------------------------------------------


def test_a_released_hold_cannot_be_captured(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    funded.release(hold.hold_id, actor="service:api")
    before = _snapshot(store)
    with pytest.raises(HoldNotOpen, match="released"):
        funded.capture(hold.hold_id, actor="service:api")
    assert _snapshot(store) == before
    assert balances(funded) == (c("110"), c("0"))


def test_a_captured_hold_cannot_be_released(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    funded.capture(hold.hold_id, "10", actor="service:api")
    before = _snapshot(store)
    with pytest.raises(HoldNotOpen, match="captured"):
        funded.release(hold.hold_id, actor="service:api")
    assert _snapshot(store) == before
    assert balances(funded) == (c("100"), c("0"))


def test_a_retried_capture_of_the_same_amount_is_replayed(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    first = funded.capture(hold.hold_id, "12", actor="service:api")
    before = _snapshot(store)
    again = funded.capture(hold.hold_id, "12.00", actor="service:api")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert again.captured == c("12")
    assert again.status is HoldStatus.CAPTURED
    assert _snapshot(store) == before


def test_a_retried_full_capture_is_replayed(funded: Wallet) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    first = funded.capture(hold.hold_id, actor="service:api")
    again = funded.capture(hold.hold_id, actor="service:api")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert balances(funded) == (c("80"), c("0"))


@pytest.mark.parametrize("second", ["11", "13", None])
def test_a_second_capture_of_a_different_amount_is_a_conflict(
    funded: Wallet, store: InMemoryStore, second: str | None
) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    funded.capture(hold.hold_id, "12", actor="service:api")
    before = _snapshot(store)
    with pytest.raises(IdempotencyConflict):
        funded.capture(hold.hold_id, second, actor="service:api")
    assert _snapshot(store) == before


def test_a_retried_release_is_replayed(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    first = funded.release(hold.hold_id, actor="service:api")
    before = _snapshot(store)
    again = funded.release(hold.hold_id, actor="service:api")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert _snapshot(store) == before
    assert balances(funded) == (c("110"), c("0"))


def test_a_hold_past_its_expiry_cannot_be_captured_but_can_be_released(
    funded: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    hold = funded.hold(
        "alice", "30", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    fake_clock.advance(seconds=59)
    assert store.state.holds[hold.hold_id].status is HoldStatus.OPEN
    fake_clock.advance(seconds=1)  # exactly at expiry
    before = _snapshot(store)
    with pytest.raises(HoldNotOpen, match="expired"):
        funded.capture(hold.hold_id, actor="service:api")
    with pytest.raises(HoldNotOpen, match="expired"):
        funded.capture(hold.hold_id, "1", actor="service:api")
    assert _snapshot(store) == before
    # Releasing does what the expiry run would do, so it is allowed (same answer before or after the run).
    released = funded.release(hold.hold_id, actor="service:api")
    assert released.status is HoldStatus.RELEASED
    assert balances(funded) == (c("110"), c("0"))


def test_a_hold_can_be_captured_until_the_last_second(funded: Wallet, fake_clock: FakeClock) -> None:
    hold = funded.hold(
        "alice", "30", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    fake_clock.advance(seconds=59)
    assert funded.capture(hold.hold_id, actor="service:api").status is HoldStatus.CAPTURED


def test_the_expiry_run_releases_expired_holds_and_they_stay_closed(
    funded: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    expiring = funded.hold(
        "alice", "30", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    lasting = funded.hold(
        "alice", "5", idempotency_key=new_key(), reason="reserve", expires_in_seconds=3600, actor="service:api"
    )
    fake_clock.advance(seconds=60)

    report = funded.expire()

    assert report.holds_released == 1
    assert report.wallets_expired == 0
    assert report.credits_expired == c("0")
    assert store.state.holds[expiring.hold_id].status is HoldStatus.EXPIRED
    assert store.state.holds[lasting.hold_id].status is HoldStatus.OPEN
    assert balances(funded) == (c("105"), c("5"))
    release = transactions_of(store, "alice")[-1]
    assert release.kind is TransactionKind.RELEASE
    assert release.hold_id == expiring.hold_id
    assert release.credits == c("30")
    assert release.actor == "system"
    with pytest.raises(HoldNotOpen):
        funded.capture(expiring.hold_id, actor="service:api")
    assert funded.expire().holds_released == 0
    assert funded.verify() == []


# -- placing holds: idempotency and validation ---------------------------------------------------


def test_a_retried_hold_with_the_same_key_is_replayed(funded: Wallet, store: InMemoryStore) -> None:
    first = funded.hold("alice", "30", idempotency_key="job-1", reason="reserve", actor="service:api")
    before = _snapshot(store)
    again = funded.hold("alice", "30.00", idempotency_key="job-1", reason="reserve", actor="service:api")
    assert again.replayed is True
    assert again.hold_id == first.hold_id
    assert again.transaction_id == first.transaction_id
    assert again.balance == first.balance
    assert _snapshot(store) == before
    assert balances(funded) == (c("80"), c("30"))


def test_a_replayed_hold_reports_its_current_status(funded: Wallet) -> None:
    first = funded.hold("alice", "30", idempotency_key="job-1", reason="reserve", actor="service:api")
    funded.capture(first.hold_id, "3", actor="service:api")
    again = funded.hold("alice", "30", idempotency_key="job-1", reason="reserve", actor="service:api")
    assert again.replayed is True
    assert again.status is HoldStatus.CAPTURED
    assert again.captured == c("3")


@pytest.mark.parametrize(
    "change",
    [{"credits": "31"}, {"user": "bob"}, {"reason": "other"}, {"ttl": 601}, {"ttl": None}],
    ids=["amount", "user", "reason", "longer", "default-expiry"],
)
def test_the_same_key_for_a_different_hold_is_a_conflict(
    funded: Wallet, store: InMemoryStore, change: dict[str, object]
) -> None:
    funded.grant("bob", "100", reason="promo", granted_by="admin")
    funded.hold("alice", "30", idempotency_key="job-1", reason="reserve", expires_in_seconds=600, actor="service:api")
    before = _snapshot(store)
    request: dict[str, Any] = {"credits": "30", "user": "alice", "reason": "reserve", "ttl": 600, **change}
    with pytest.raises(IdempotencyConflict):
        funded.hold(
            str(request["user"]),
            request["credits"],
            idempotency_key="job-1",
            reason=request["reason"],
            expires_in_seconds=request["ttl"],
            actor="service:api",
        )
    assert _snapshot(store) == before


def test_the_same_hold_with_its_expiry_spelled_differently_is_a_replay(funded: Wallet) -> None:
    first = funded.hold(
        "alice", "30", idempotency_key="job-1", reason="reserve", expires_in_seconds="900", actor="service:api"
    )
    again = funded.hold("alice", "30", idempotency_key="job-1", reason="reserve", actor="service:api")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id


@pytest.mark.parametrize("key", [None, "", "has space"])
def test_placing_a_hold_needs_an_idempotency_key(
    funded: Wallet, store: InMemoryStore, key: str | None, fake_clock: FakeClock, uow: UnitOfWorkFactory
) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        place_hold(
            user_id="alice", credits="1", idempotency_key=key, reason="r", actor="a", uow=uow,
            now=fake_clock,
        )
    assert err.value.field == "Idempotency-Key"
    assert _snapshot(store) == before


@pytest.mark.parametrize("ttl", [0, "0", -1, 604_801, "abc", True, 1.5, "60s", " 60"])
def test_invalid_hold_lifetimes_are_refused(funded: Wallet, store: InMemoryStore, ttl: Any) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.hold(
            "alice", "1", idempotency_key=new_key(), reason="reserve", expires_in_seconds=ttl, actor="service:api"
        )
    assert err.value.field == "expires_in_seconds"
    assert _snapshot(store) == before


@pytest.mark.parametrize(("ttl", "seconds"), [(1, 1), ("60", 60), (604_800, 604_800)])
def test_hold_lifetimes_from_a_second_to_a_week_are_accepted(
    funded: Wallet, ttl: Any, seconds: int, fake_clock: FakeClock
) -> None:
    assert funded.hold(
        "alice", "1", idempotency_key=new_key(), reason="reserve", expires_in_seconds=ttl, actor="service:api"
    ).expires_at == fake_clock.now + timedelta(seconds=seconds)


@pytest.mark.parametrize("credits", ["0", "-5", "abc", None])
def test_invalid_hold_amounts_are_refused(funded: Wallet, store: InMemoryStore, credits: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.hold("alice", credits, idempotency_key=new_key(), reason="reserve", actor="service:api")
    assert err.value.field == "credits"
    assert _snapshot(store) == before


def test_concurrent_capture_and_release_settle_the_hold_once(funded: Wallet, store: InMemoryStore) -> None:
    hold = funded.hold("alice", "30", idempotency_key=new_key(), reason="reserve", actor="service:api")
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            result = (
                funded.capture(hold.hold_id, "10", actor="service:api")
                if n % 2
                else funded.release(hold.hold_id, actor="service:api")
            )
            outcomes.append(f"{result.status}{'-replayed' if result.replayed else ''}")
        except HoldNotOpen:
            outcomes.append("not-open")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    settled = [o for o in outcomes if o in ("captured", "released")]
    assert len(settled) == 1
    final = store.state.holds[hold.hold_id].status
    assert settled == [str(final)]
    assert held(funded) == c("0")
    assert spendable(funded) == (c("100") if final is HoldStatus.CAPTURED else c("110"))
    assert funded.verify() == []


# -- holds on promotional credits that expire while held -----------------------------------------


@pytest.fixture
def held_promo(wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway) -> tuple[Wallet, str]:
    """alice holds 30 of her 40 promotional credits (expiring in one hour) for two hours, and has 100 paid."""
    wallet.grant("alice", "40", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(hours=1))
    top_up(wallet, gateway, "1.00", "alice")
    hold = wallet.hold(
        "alice", "30", idempotency_key=new_key(), reason="reserve", expires_in_seconds=7200, actor="service:api"
    )
    assert balances(wallet) == (c("110"), c("30"))
    fake_clock.advance(minutes=90)  # the promotional credits have expired; the hold has not
    return wallet, hold.hold_id


def test_promotional_credits_that_expire_while_held_stay_held(held_promo: tuple[Wallet, str]) -> None:
    wallet, _ = held_promo
    # The 10 unheld promotional credits are gone; the 30 held ones are still reserved.
    assert balances(wallet) == (c("100"), c("30"))


def test_a_hold_on_expired_promotional_credits_can_still_be_captured(
    held_promo: tuple[Wallet, str], store: InMemoryStore
) -> None:
    wallet, hold_id = held_promo
    result = wallet.capture(hold_id, actor="service:api")
    assert result.captured == c("30")
    assert balances(wallet) == (c("100"), c("0"))
    assert account_totals(store)[(Account.REVENUE, None)] == c("30")
    assert wallet.verify() == []


def test_the_uncaptured_part_of_expired_promotional_credits_is_not_spendable_and_expires(
    held_promo: tuple[Wallet, str], store: InMemoryStore
) -> None:
    wallet, hold_id = held_promo
    result = wallet.capture(hold_id, "12", actor="service:api")
    assert result.balance == c("100")
    assert balances(wallet) == (c("100"), c("0"))
    with pytest.raises(InsufficientCredits, match=r"has 100\.00 spendable"):
        wallet.spend("alice", "100.01", idempotency_key=new_key(), reason="usage", actor="service:api")
    # The capture booked out the 10 never held, and the 18 it did not take went to `expired`, not back.
    assert account_totals(store)[(Account.EXPIRED, None)] == c("28")
    assert wallet.expire() == type(wallet.expire())(0, c("0"), 0)
    assert balances(wallet) == (c("100"), c("0"))
    assert wallet.verify() == []


def test_the_expiry_run_releases_the_hold_and_books_out_its_expired_credits_together(
    held_promo: tuple[Wallet, str], store: InMemoryStore, fake_clock: FakeClock
) -> None:
    wallet, hold_id = held_promo
    fake_clock.advance(hours=1)  # now the hold has expired too

    report = wallet.expire()

    assert report.holds_released == 1
    assert report.wallets_expired == 1
    assert report.credits_expired == c("40")
    assert store.state.holds[hold_id].status is HoldStatus.EXPIRED
    assert balances(wallet) == (c("100"), c("0"))
    kinds = [t.kind for t in transactions_of(store, "alice")]
    assert kinds[-2:] == [TransactionKind.EXPIRY, TransactionKind.RELEASE]
    assert wallet.expire() == type(report)(0, c("0"), 0)
    assert wallet.verify() == []


def test_released_expired_promotional_credits_are_not_spendable(held_promo: tuple[Wallet, str]) -> None:
    wallet, hold_id = held_promo
    wallet.release(hold_id, actor="service:api")
    assert balances(wallet) == (c("100"), c("0"))
    with pytest.raises(InsufficientCredits):
        wallet.spend("alice", "100.01", idempotency_key=new_key(), reason="usage", actor="service:api")
    assert wallet.spend("alice", "100", idempotency_key=new_key(), reason="usage", actor="service:api").balance == c(
        "0"
    )
    assert wallet.verify() == []


def test_releasing_expired_promotional_credits_reports_the_spendable_balance(
    held_promo: tuple[Wallet, str],
) -> None:
    wallet, hold_id = held_promo
    result = wallet.release(hold_id, actor="service:api")
    assert result.balance == spendable(wallet) == c("100")


def test_history_shows_the_hold_after_the_expiry_it_caused(wallet: Wallet, fake_clock: FakeClock) -> None:
    users = [f"user{n}" for n in range(20)]
    for user in users:
        wallet.grant(user, "50", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=1))
        wallet.grant(user, "10", reason="promo", granted_by="admin")
    fake_clock.advance(days=2)
    for user in users:
        wallet.hold(user, "4", idempotency_key=new_key(), reason="reserve", actor="service:api")
    for user in users:
        rows = history(wallet, user)
        assert [t.kind for t in rows[:2]] == [TransactionKind.HOLD, TransactionKind.EXPIRY]
        assert rows[0].balance_after == spendable(wallet, user) == c("6")


def test_keys_are_scoped_by_operation_so_a_spend_and_a_hold_may_share_one(
    funded: Wallet, store: InMemoryStore
) -> None:
    """docs/ledger.md: an Idempotency-Key names one spend, or one hold; the two never collide."""
    spent = funded.spend("alice", "5", idempotency_key="shared", reason="usage", actor="service:api")
    held = funded.hold("alice", "5", idempotency_key="shared", reason="reserve", actor="service:api")
    assert spent.transaction_id != held.transaction_id
    assert funded.spend("alice", "5", idempotency_key="shared", reason="usage", actor="service:api").replayed
