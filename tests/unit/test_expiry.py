"""The expiry run: promotional credits past expiry are booked out once; paid credits never expire."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import (
    FakeClock,
    account_totals,
    balances,
    held,
    new_key,
    postings_of,
    spendable,
    top_up,
    transactions_of,
)
from wallet_core.holds import HoldStatus
from wallet_core.ledger import Account, TransactionKind
from wallet_core.money import Credits
from wallet_core.service import Wallet
from wallet_core.use_cases import ExpiryReport

DAY = timedelta(days=1)
NOTHING = ExpiryReport(wallets_expired=0, credits_expired=Credits(0), holds_released=0)


def c(text: str) -> Credits:
    return Credits.parse(text)


def _snapshot(store: InMemoryStore) -> tuple[object, int]:
    return store.state.copy(), store.commits


def test_an_empty_ledger_has_nothing_to_expire(wallet: Wallet, store: InMemoryStore) -> None:
    assert wallet.expire() == NOTHING
    assert store.commits == 0


def test_credits_expire_at_their_expiry_and_not_before(
    wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    wallet.grant("alice", "25", reason="promo", granted_by="admin", expires_at=fake_clock.now + 7 * DAY)
    wallet.grant("alice", "5", reason="promo", granted_by="admin")
    fake_clock.advance(7 * DAY - timedelta(seconds=1))
    before = _snapshot(store)
    assert wallet.expire() == NOTHING
    assert _snapshot(store) == before
    assert balances(wallet) == (c("30"), c("0"))

    fake_clock.advance(seconds=1)
    # The balance leaves them out at once, before the run books them out.
    assert balances(wallet) == (c("5"), c("0"))
    report = wallet.expire()

    assert report == ExpiryReport(wallets_expired=1, credits_expired=c("25"), holds_released=0)
    assert balances(wallet) == (c("5"), c("0"))
    [expiry] = [t for t in transactions_of(store, "alice") if t.kind is TransactionKind.EXPIRY]
    assert expiry.credits == c("-25")
    assert expiry.balance_after == c("5")
    assert expiry.created_at == fake_clock.now
    assert expiry.actor == "system"
    assert "expired" in (expiry.reason or "")
    legs = postings_of(store, expiry.id)
    assert sorted((p.account, p.amount) for p in legs) == [(Account.EXPIRED, c("25")), (Account.WALLET, c("-25"))]
    assert wallet.verify() == []


def test_a_second_run_changes_nothing(wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "25", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
    fake_clock.advance(2 * DAY)
    assert wallet.expire().wallets_expired == 1
    before = _snapshot(store)

    assert wallet.expire() == NOTHING
    fake_clock.advance(365 * DAY)
    assert wallet.expire() == NOTHING
    assert _snapshot(store) == before


def test_only_what_is_left_of_a_lot_expires(wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "25", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
    wallet.spend("alice", "10", idempotency_key=new_key(), reason="usage", actor="service:api")
    fake_clock.advance(DAY)
    assert wallet.expire().credits_expired == c("15")
    assert account_totals(store)[(Account.EXPIRED, None)] == c("15")
    assert account_totals(store)[(Account.REVENUE, None)] == c("10")


def test_a_spent_lot_does_not_expire(wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "25", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
    wallet.spend("alice", "25", idempotency_key=new_key(), reason="usage", actor="service:api")
    fake_clock.advance(DAY)
    assert wallet.expire() == NOTHING
    assert (Account.EXPIRED, None) not in account_totals(store)


def test_paid_and_never_expiring_credits_never_expire(
    wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway
) -> None:
    top_up(wallet, gateway, "1.00", "alice")
    wallet.grant("alice", "5", reason="promo", granted_by="admin")
    fake_clock.advance(3650 * DAY)
    assert wallet.expire() == NOTHING
    assert balances(wallet) == (c("105"), c("0"))


def test_lots_expire_one_by_one_as_their_time_comes(wallet: Wallet, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "1", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
    wallet.grant("alice", "2", reason="promo", granted_by="admin", expires_at=fake_clock.now + 2 * DAY)
    wallet.grant("alice", "4", reason="promo", granted_by="admin", expires_at=fake_clock.now + 3 * DAY)
    seen = []
    reports = []
    for _ in range(4):
        fake_clock.advance(DAY)
        seen.append(spendable(wallet))
        reports.append(wallet.expire())
    assert seen == [c("6"), c("4"), c("0"), c("0")]
    assert [r.credits_expired for r in reports] == [c("1"), c("2"), c("4"), c("0")]
    assert [r.wallets_expired for r in reports] == [1, 1, 1, 0]


def test_the_report_counts_wallets_credits_and_holds(
    wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock, gateway: FakePaymentGateway
) -> None:
    for user, credits in (("alice", "10"), ("bob", "20.50"), ("carol", "3")):
        wallet.grant(user, credits, reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
        wallet.grant(
            user, credits, reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY
        )  # two lots: still one wallet
    wallet.grant("dave", "99", reason="promo", granted_by="admin", expires_at=fake_clock.now + 10 * DAY)  # not due
    top_up(wallet, gateway, "1.00", "erin")
    h1 = wallet.hold(
        "erin", "50", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    h2 = wallet.hold(
        "erin", "20", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
    )
    h3 = wallet.hold(
        "erin", "10", idempotency_key=new_key(), reason="reserve", expires_in_seconds=86_400 * 2, actor="service:api"
    )  # not due
    fake_clock.advance(DAY)

    report = wallet.expire()

    assert report == ExpiryReport(wallets_expired=3, credits_expired=c("67"), holds_released=2)
    assert {u: spendable(wallet, u) for u in ("alice", "bob", "carol", "dave", "erin")} == {
        "alice": c("0"), "bob": c("0"), "carol": c("0"), "dave": c("99"), "erin": c("90"),
    }
    assert [store.state.holds[h.hold_id].status for h in (h1, h2, h3)] == [
        HoldStatus.EXPIRED, HoldStatus.EXPIRED, HoldStatus.OPEN,
    ]
    assert held(wallet, "erin") == c("10")
    assert wallet.verify() == []


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_small_batches_still_reach_every_wallet_and_hold(wallet: Wallet, batch: int, fake_clock: FakeClock) -> None:
    users = [f"user{n}" for n in range(5)]
    for user in users:
        wallet.grant(user, "10", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
        wallet.grant(user, "10", reason="promo", granted_by="admin")
        wallet.hold(
            user, "5", idempotency_key=new_key(), reason="reserve", expires_in_seconds=60, actor="service:api"
        )  # reserves from the expiring lot
    fake_clock.advance(DAY)

    report = wallet.expire(batch=batch)

    assert report == ExpiryReport(wallets_expired=5, credits_expired=c("50"), holds_released=5)
    assert all(balances(wallet, u) == (c("10"), c("0")) for u in users)
    assert wallet.expire(batch=batch) == NOTHING
    assert wallet.verify() == []


def test_credits_booked_out_by_a_spend_are_not_expired_again(wallet: Wallet, fake_clock: FakeClock) -> None:
    wallet.grant("alice", "25", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
    wallet.grant("alice", "5", reason="promo", granted_by="admin")
    fake_clock.advance(DAY)
    wallet.spend("alice", "1", idempotency_key=new_key(), reason="usage", actor="service:api")  # books the 25 out first
    assert wallet.expire() == NOTHING
    assert balances(wallet) == (c("4"), c("0"))


def test_an_open_hold_keeps_its_promotional_credits_from_the_expiry_run(
    wallet: Wallet, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    wallet.grant("alice", "25", reason="promo", granted_by="admin", expires_at=fake_clock.now + DAY)
    hold = wallet.hold(
        "alice", "20", idempotency_key=new_key(), reason="reserve", expires_in_seconds=7 * 86_400, actor="service:api"
    )
    fake_clock.advance(DAY)

    report = wallet.expire()

    assert report == ExpiryReport(wallets_expired=1, credits_expired=c("5"), holds_released=0)
    assert balances(wallet) == (c("0"), c("20"))
    assert wallet.capture(hold.hold_id, actor="service:api").captured == c("20")
    assert wallet.verify() == []
