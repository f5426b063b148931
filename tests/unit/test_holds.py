"""Holds: reserve credits before the cost is known, then capture all or part (the rest goes back) or release."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import WalletDriver, account_totals, postings_of, transactions_of
from wallet_core.errors import HoldNotOpen, IdempotencyConflict, InsufficientCredits, InvalidInput, NotFound
from wallet_core.holds import DEFAULT_HOLD_TTL, HoldStatus
from wallet_core.ledger import Account, CreditKind, TransactionKind
from wallet_core.money import Credits
from wallet_core.use_cases import place_hold


def c(text: str) -> Credits:
    return Credits.parse(text)


def _snapshot(store: InMemoryStore) -> tuple[object, int]:
    return store.state.copy(), store.commits


@pytest.fixture
def funded(wallet: WalletDriver) -> WalletDriver:
    """alice has 10 promotional credits expiring in 30 days, then 100 paid credits."""
    wallet.grant("10", expires_in=timedelta(days=30))
    wallet.top_up("1.00")
    return wallet


def _remaining(wallet: WalletDriver) -> dict[CreditKind, tuple[Credits, Credits]]:
    """(remaining, held) of each of alice's lots, by kind (the fixture has one lot of each)."""
    return {lot.kind: (lot.remaining, lot.held) for lot in wallet.lots()}


def test_a_hold_moves_credits_from_spendable_to_held(funded: WalletDriver, store: InMemoryStore) -> None:
    result = funded.hold("30", key="job-1")

    assert result.status is HoldStatus.OPEN
    assert result.amount == c("30")
    assert result.captured == c("0")
    assert result.balance == c("80")
    assert result.expires_at == funded.clock.now + DEFAULT_HOLD_TTL
    assert result.replayed is False
    assert funded.balances() == (c("80"), c("30"))

    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.HOLD
    assert booked.credits == c("-30")
    assert booked.held_change == c("30")
    assert booked.balance_after == c("80")
    assert booked.hold_id == result.hold_id
    # Reserved in spending order: the promotional lot first.
    assert _remaining(funded) == {CreditKind.PROMOTIONAL: (c("0"), c("10")), CreditKind.PAID: (c("80"), c("20"))}
    hold = store.state.holds[result.hold_id]
    assert [amount for _, amount in hold.allocations] == [c("10"), c("20")]
    # Nothing goes to revenue yet.
    assert not any(p.account is Account.REVENUE for p in postings_of(store, result.transaction_id))
    assert funded.verify() == []


def test_held_credits_cannot_be_spent(funded: WalletDriver) -> None:
    funded.hold("100")
    with pytest.raises(InsufficientCredits, match=r"has 10\.00 spendable"):
        funded.spend("10.01")
    funded.spend("10")
    assert funded.balances() == (c("0"), c("100"))


def test_a_hold_larger_than_the_spendable_balance_is_refused_and_writes_nothing(
    funded: WalletDriver, store: InMemoryStore
) -> None:
    funded.hold("50")
    before = _snapshot(store)
    with pytest.raises(InsufficientCredits, match=r"has 60\.00 spendable credits, 60\.01 are needed"):
        funded.hold("60.01")
    assert _snapshot(store) == before


def test_capturing_all_of_a_hold_spends_it(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    result = funded.capture(hold.hold_id)

    assert result.status is HoldStatus.CAPTURED
    assert result.captured == c("30")
    assert result.balance == c("80")
    assert result.replayed is False
    assert funded.balances() == (c("80"), c("0"))
    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.CAPTURE
    assert booked.credits == c("0")
    assert booked.held_change == c("-30")
    assert account_totals(store)[(Account.REVENUE, None)] == c("30")
    assert _remaining(funded) == {CreditKind.PROMOTIONAL: (c("0"), c("0")), CreditKind.PAID: (c("80"), c("0"))}
    assert store.state.holds[hold.hold_id].status is HoldStatus.CAPTURED
    assert funded.verify() == []


def test_capturing_part_of_a_hold_gives_the_rest_back_to_the_same_lots(
    funded: WalletDriver, store: InMemoryStore
) -> None:
    hold = funded.hold("30")  # promotional 10 + paid 20
    result = funded.capture(hold.hold_id, "15")  # promotional 10 + paid 5 captured, paid 15 back

    assert result.captured == c("15")
    assert result.amount == c("30")
    assert result.balance == c("95")
    assert funded.balances() == (c("95"), c("0"))
    assert _remaining(funded) == {CreditKind.PROMOTIONAL: (c("0"), c("0")), CreditKind.PAID: (c("95"), c("0"))}
    booked = store.state.transactions[result.transaction_id]
    assert booked.credits == c("15")
    assert booked.held_change == c("-30")
    assert account_totals(store)[(Account.REVENUE, None)] == c("15")
    assert store.state.holds[hold.hold_id].captured == c("15")
    assert funded.verify() == []


def test_a_partial_capture_of_the_first_lot_returns_the_rest_of_it(funded: WalletDriver) -> None:
    hold = funded.hold("30")
    funded.capture(hold.hold_id, "4")
    assert _remaining(funded) == {CreditKind.PROMOTIONAL: (c("6"), c("0")), CreditKind.PAID: (c("100"), c("0"))}
    assert funded.balances() == (c("106"), c("0"))


def test_capturing_nothing_is_refused_in_favour_of_release(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    before = _snapshot(store)
    with pytest.raises(InvalidInput, match="release the hold"):
        funded.capture(hold.hold_id, "0")
    assert _snapshot(store) == before
    assert store.state.holds[hold.hold_id].status is HoldStatus.OPEN


def test_releasing_a_hold_gives_everything_back(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    result = funded.release(hold.hold_id)

    assert result.status is HoldStatus.RELEASED
    assert result.captured == c("0")
    assert result.balance == c("110")
    assert funded.balances() == (c("110"), c("0"))
    assert _remaining(funded) == {CreditKind.PROMOTIONAL: (c("10"), c("0")), CreditKind.PAID: (c("100"), c("0"))}
    booked = store.state.transactions[result.transaction_id]
    assert booked.kind is TransactionKind.RELEASE
    assert booked.credits == c("30")
    assert booked.held_change == c("-30")
    assert account_totals(store).get((Account.REVENUE, None), c("0")) == c("0")
    assert store.state.holds[hold.hold_id].status is HoldStatus.RELEASED
    assert funded.verify() == []


def test_capturing_more_than_was_held_is_refused(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.capture(hold.hold_id, "30.01")
    assert err.value.field == "credits"
    assert "30.00" in err.value.description
    assert _snapshot(store) == before
    assert funded.capture(hold.hold_id, "30").captured == c("30")  # the hold is still open


@pytest.mark.parametrize("credits", ["-1", "abc", 1.5, "0.001"])
def test_invalid_capture_amounts_are_refused(funded: WalletDriver, store: InMemoryStore, credits: object) -> None:
    hold = funded.hold("30")
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.capture(hold.hold_id, credits)
    assert err.value.field == "credits"
    assert _snapshot(store) == before


def test_an_unknown_hold_is_not_found(funded: WalletDriver) -> None:
    with pytest.raises(NotFound):
        funded.capture("hold_nope")
    with pytest.raises(NotFound):
        funded.release("hold_nope")
    with pytest.raises(InvalidInput):
        funded.capture("not a hold id")


# -- a settled hold stays settled ----------------------------------------------------------------


def test_a_released_hold_cannot_be_captured(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    funded.release(hold.hold_id)
    before = _snapshot(store)
    with pytest.raises(HoldNotOpen, match="released"):
        funded.capture(hold.hold_id)
    assert _snapshot(store) == before
    assert funded.balances() == (c("110"), c("0"))


def test_a_captured_hold_cannot_be_released(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    funded.capture(hold.hold_id, "10")
    before = _snapshot(store)
    with pytest.raises(HoldNotOpen, match="captured"):
        funded.release(hold.hold_id)
    assert _snapshot(store) == before
    assert funded.balances() == (c("100"), c("0"))


def test_a_retried_capture_of_the_same_amount_is_replayed(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    first = funded.capture(hold.hold_id, "12")
    before = _snapshot(store)
    again = funded.capture(hold.hold_id, "12.00")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert again.captured == c("12")
    assert again.status is HoldStatus.CAPTURED
    assert _snapshot(store) == before


def test_a_retried_full_capture_is_replayed(funded: WalletDriver) -> None:
    hold = funded.hold("30")
    first = funded.capture(hold.hold_id)
    again = funded.capture(hold.hold_id)
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert funded.balances() == (c("80"), c("0"))


@pytest.mark.parametrize("second", ["11", "13", None])
def test_a_second_capture_of_a_different_amount_is_a_conflict(
    funded: WalletDriver, store: InMemoryStore, second: str | None
) -> None:
    hold = funded.hold("30")
    funded.capture(hold.hold_id, "12")
    before = _snapshot(store)
    with pytest.raises(IdempotencyConflict):
        funded.capture(hold.hold_id, second)
    assert _snapshot(store) == before


def test_a_retried_release_is_replayed(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    first = funded.release(hold.hold_id)
    before = _snapshot(store)
    again = funded.release(hold.hold_id)
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id
    assert _snapshot(store) == before
    assert funded.balances() == (c("110"), c("0"))


def test_a_hold_past_its_expiry_cannot_be_captured_but_can_be_released(
    funded: WalletDriver, store: InMemoryStore
) -> None:
    hold = funded.hold("30", ttl=60)
    funded.clock.advance(seconds=59)
    assert store.state.holds[hold.hold_id].status is HoldStatus.OPEN
    funded.clock.advance(seconds=1)  # exactly at expiry
    before = _snapshot(store)
    with pytest.raises(HoldNotOpen, match="expired"):
        funded.capture(hold.hold_id)
    with pytest.raises(HoldNotOpen, match="expired"):
        funded.capture(hold.hold_id, "1")
    assert _snapshot(store) == before
    # Releasing does what the expiry run would do, so it is allowed (same answer before or after the run).
    released = funded.release(hold.hold_id)
    assert released.status is HoldStatus.RELEASED
    assert funded.balances() == (c("110"), c("0"))


def test_a_hold_can_be_captured_until_the_last_second(funded: WalletDriver) -> None:
    hold = funded.hold("30", ttl=60)
    funded.clock.advance(seconds=59)
    assert funded.capture(hold.hold_id).status is HoldStatus.CAPTURED


def test_the_expiry_run_releases_expired_holds_and_they_stay_closed(
    funded: WalletDriver, store: InMemoryStore
) -> None:
    expiring = funded.hold("30", ttl=60)
    lasting = funded.hold("5", ttl=3600)
    funded.clock.advance(seconds=60)

    report = funded.expire()

    assert report.holds_released == 1
    assert report.wallets_expired == 0
    assert report.credits_expired == c("0")
    assert store.state.holds[expiring.hold_id].status is HoldStatus.EXPIRED
    assert store.state.holds[lasting.hold_id].status is HoldStatus.OPEN
    assert funded.balances() == (c("105"), c("5"))
    release = transactions_of(store, "alice")[-1]
    assert release.kind is TransactionKind.RELEASE
    assert release.hold_id == expiring.hold_id
    assert release.credits == c("30")
    assert release.actor == "system"
    with pytest.raises(HoldNotOpen):
        funded.capture(expiring.hold_id)
    assert funded.expire().holds_released == 0
    assert funded.verify() == []


# -- placing holds: idempotency and validation ---------------------------------------------------


def test_a_retried_hold_with_the_same_key_is_replayed(funded: WalletDriver, store: InMemoryStore) -> None:
    first = funded.hold("30", key="job-1")
    before = _snapshot(store)
    again = funded.hold("30.00", key="job-1")
    assert again.replayed is True
    assert again.hold_id == first.hold_id
    assert again.transaction_id == first.transaction_id
    assert again.balance == first.balance
    assert _snapshot(store) == before
    assert funded.balances() == (c("80"), c("30"))


def test_a_replayed_hold_reports_its_current_status(funded: WalletDriver) -> None:
    first = funded.hold("30", key="job-1")
    funded.capture(first.hold_id, "3")
    again = funded.hold("30", key="job-1")
    assert again.replayed is True
    assert again.status is HoldStatus.CAPTURED
    assert again.captured == c("3")


@pytest.mark.parametrize(
    "change",
    [{"credits": "31"}, {"user": "bob"}, {"reason": "other"}, {"ttl": 601}, {"ttl": None}],
    ids=["amount", "user", "reason", "longer", "default-expiry"],
)
def test_the_same_key_for_a_different_hold_is_a_conflict(
    funded: WalletDriver, store: InMemoryStore, change: dict[str, object]
) -> None:
    funded.grant("100", user="bob")
    funded.hold("30", key="job-1", ttl=600)
    before = _snapshot(store)
    request: dict[str, object] = {"credits": "30", "user": "alice", "reason": "reserve", "ttl": 600, **change}
    with pytest.raises(IdempotencyConflict):
        funded.hold(request["credits"], str(request["user"]), key="job-1", reason=request["reason"],
                    ttl=request["ttl"])
    assert _snapshot(store) == before


def test_the_same_hold_with_its_expiry_spelled_differently_is_a_replay(funded: WalletDriver) -> None:
    first = funded.hold("30", key="job-1", ttl="900")
    again = funded.hold("30", key="job-1")
    assert again.replayed is True
    assert again.transaction_id == first.transaction_id


@pytest.mark.parametrize("key", [None, "", "has space"])
def test_placing_a_hold_needs_an_idempotency_key(funded: WalletDriver, store: InMemoryStore, key: str | None) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        place_hold(
            user_id="alice", credits="1", idempotency_key=key, reason="r", actor="a", uow=funded.uow,
            now=funded.clock,
        )
    assert err.value.field == "Idempotency-Key"
    assert _snapshot(store) == before


@pytest.mark.parametrize("ttl", [0, "0", -1, 604_801, "abc", True, 1.5, "60s", " 60"])
def test_invalid_hold_lifetimes_are_refused(funded: WalletDriver, store: InMemoryStore, ttl: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.hold("1", ttl=ttl)
    assert err.value.field == "expires_in_seconds"
    assert _snapshot(store) == before


@pytest.mark.parametrize(("ttl", "seconds"), [(1, 1), ("60", 60), (604_800, 604_800)])
def test_hold_lifetimes_from_a_second_to_a_week_are_accepted(funded: WalletDriver, ttl: object, seconds: int) -> None:
    assert funded.hold("1", ttl=ttl).expires_at == funded.clock.now + timedelta(seconds=seconds)


@pytest.mark.parametrize("credits", ["0", "-5", "abc", None])
def test_invalid_hold_amounts_are_refused(funded: WalletDriver, store: InMemoryStore, credits: object) -> None:
    before = _snapshot(store)
    with pytest.raises(InvalidInput) as err:
        funded.hold(credits)
    assert err.value.field == "credits"
    assert _snapshot(store) == before


def test_concurrent_capture_and_release_settle_the_hold_once(funded: WalletDriver, store: InMemoryStore) -> None:
    hold = funded.hold("30")
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            result = funded.capture(hold.hold_id, "10") if n % 2 else funded.release(hold.hold_id)
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
    assert funded.held() == c("0")
    assert funded.spendable() == (c("100") if final is HoldStatus.CAPTURED else c("110"))
    assert funded.verify() == []


# -- holds on promotional credits that expire while held -----------------------------------------


@pytest.fixture
def held_promo(wallet: WalletDriver) -> tuple[WalletDriver, str]:
    """alice holds 30 of her 40 promotional credits (expiring in one hour) for two hours, and has 100 paid."""
    wallet.grant("40", expires_in=timedelta(hours=1))
    wallet.top_up("1.00")
    hold = wallet.hold("30", ttl=7200)
    assert wallet.balances() == (c("110"), c("30"))
    wallet.clock.advance(minutes=90)  # the promotional credits have expired; the hold has not
    return wallet, hold.hold_id


def test_promotional_credits_that_expire_while_held_stay_held(held_promo: tuple[WalletDriver, str]) -> None:
    wallet, _ = held_promo
    # The 10 unheld promotional credits are gone; the 30 held ones are still reserved.
    assert wallet.balances() == (c("100"), c("30"))


def test_a_hold_on_expired_promotional_credits_can_still_be_captured(
    held_promo: tuple[WalletDriver, str], store: InMemoryStore
) -> None:
    wallet, hold_id = held_promo
    result = wallet.capture(hold_id)
    assert result.captured == c("30")
    assert wallet.balances() == (c("100"), c("0"))
    assert account_totals(store)[(Account.REVENUE, None)] == c("30")
    assert wallet.verify() == []


def test_the_uncaptured_part_of_expired_promotional_credits_is_not_spendable_and_expires(
    held_promo: tuple[WalletDriver, str], store: InMemoryStore
) -> None:
    wallet, hold_id = held_promo
    result = wallet.capture(hold_id, "12")
    assert result.balance == c("100")
    assert wallet.balances() == (c("100"), c("0"))
    with pytest.raises(InsufficientCredits, match=r"has 100\.00 spendable"):
        wallet.spend("100.01")
    # The capture booked out the 10 never held, and the 18 it did not take went to `expired`, not back.
    assert account_totals(store)[(Account.EXPIRED, None)] == c("28")
    assert wallet.expire() == type(wallet.expire())(0, c("0"), 0)
    assert wallet.balances() == (c("100"), c("0"))
    assert wallet.verify() == []


def test_the_expiry_run_releases_the_hold_and_books_out_its_expired_credits_together(
    held_promo: tuple[WalletDriver, str], store: InMemoryStore
) -> None:
    wallet, hold_id = held_promo
    wallet.clock.advance(hours=1)  # now the hold has expired too

    report = wallet.expire()

    assert report.holds_released == 1
    assert report.wallets_expired == 1
    assert report.credits_expired == c("40")
    assert store.state.holds[hold_id].status is HoldStatus.EXPIRED
    assert wallet.balances() == (c("100"), c("0"))
    kinds = [t.kind for t in transactions_of(store, "alice")]
    assert kinds[-2:] == [TransactionKind.EXPIRY, TransactionKind.RELEASE]
    assert wallet.expire() == type(report)(0, c("0"), 0)
    assert wallet.verify() == []


def test_released_expired_promotional_credits_are_not_spendable(held_promo: tuple[WalletDriver, str]) -> None:
    wallet, hold_id = held_promo
    wallet.release(hold_id)
    assert wallet.balances() == (c("100"), c("0"))
    with pytest.raises(InsufficientCredits):
        wallet.spend("100.01")
    assert wallet.spend("100").balance == c("0")
    assert wallet.verify() == []


def test_releasing_expired_promotional_credits_reports_the_spendable_balance(
    held_promo: tuple[WalletDriver, str],
) -> None:
    wallet, hold_id = held_promo
    result = wallet.release(hold_id)
    assert result.balance == wallet.spendable() == c("100")


def test_history_shows_the_hold_after_the_expiry_it_caused(wallet: WalletDriver) -> None:
    users = [f"user{n}" for n in range(20)]
    for user in users:
        wallet.grant("50", user, expires_in=timedelta(days=1))
        wallet.grant("10", user)
    wallet.clock.advance(days=2)
    for user in users:
        wallet.hold("4", user)
    for user in users:
        rows = wallet.history(user)
        assert [t.kind for t in rows[:2]] == [TransactionKind.HOLD, TransactionKind.EXPIRY]
        assert rows[0].balance_after == wallet.spendable(user) == c("6")


def test_keys_are_scoped_by_operation_so_a_spend_and_a_hold_may_share_one(
    funded: WalletDriver, store: InMemoryStore
) -> None:
    """docs/ledger.md: an Idempotency-Key names one spend, or one hold; the two never collide."""
    spent = funded.spend("5", key="shared")
    held = funded.hold("5", key="shared")
    assert spent.transaction_id != held.transaction_id
    assert funded.spend("5", key="shared").replayed
