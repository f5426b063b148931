"""Which credits a spend uses: promotional first (soonest expiry first, never-expiring last), then paid,
oldest first; expired credits never. Both on the pure `allocate` and through spend_credits."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import T0, FakeClock, lots, new_key, spendable, top_up
from wallet_core.errors import InsufficientCredits
from wallet_core.ledger import CreditKind, Lot, allocate
from wallet_core.money import Credits
from wallet_core.service import Wallet

NOW = T0
DAY = timedelta(days=1)


def lot(
    lot_id: str,
    remaining: str,
    *,
    kind: CreditKind = CreditKind.PROMOTIONAL,
    created: timedelta = timedelta(0),
    expires: timedelta | None = None,
    held: str = "0",
) -> Lot:
    """A lot created `created` after NOW (negative: before), expiring `expires` after NOW."""
    amount = Credits.parse(remaining)
    return Lot(
        id=lot_id,
        user_id="alice",
        kind=kind,
        granted=amount + Credits.parse(held),
        remaining=amount,
        held=Credits.parse(held),
        created_at=NOW + created,
        expires_at=None if expires is None else NOW + expires,
    )


def paid(lot_id: str, remaining: str, created: timedelta = timedelta(0)) -> Lot:
    return lot(lot_id, remaining, kind=CreditKind.PAID, created=created)


def plan(lots: list[Lot], amount: str, now: datetime = NOW) -> list[tuple[str, str]]:
    return [(chosen.id, str(take)) for chosen, take in allocate(lots, Credits.parse(amount), now)]


def test_promotional_credits_are_spent_before_paid_ones() -> None:
    lots = [paid("paid", "10", created=-30 * DAY), lot("promo", "10", created=-DAY)]
    assert plan(lots, "4") == [("promo", "4.00")]
    assert plan(lots, "12") == [("promo", "10.00"), ("paid", "2.00")]


def test_promotional_credits_that_expire_soonest_are_spent_first() -> None:
    lots = [
        lot("late", "5", created=-3 * DAY, expires=30 * DAY),
        lot("soon", "5", created=-DAY, expires=2 * DAY),
        lot("middle", "5", created=-2 * DAY, expires=10 * DAY),
    ]
    assert plan(lots, "12") == [("soon", "5.00"), ("middle", "5.00"), ("late", "2.00")]


def test_never_expiring_promotional_credits_come_after_expiring_ones_and_before_paid() -> None:
    lots = [
        paid("paid", "5", created=-10 * DAY),
        lot("forever", "5", created=-10 * DAY),
        lot("expiring", "5", created=-DAY, expires=365 * DAY),
    ]
    assert plan(lots, "15") == [("expiring", "5.00"), ("forever", "5.00"), ("paid", "5.00")]


def test_paid_credits_are_spent_oldest_first() -> None:
    lots = [paid("new", "5", created=-DAY), paid("old", "5", created=-9 * DAY), paid("mid", "5", created=-3 * DAY)]
    assert plan(lots, "11") == [("old", "5.00"), ("mid", "5.00"), ("new", "1.00")]


def test_among_lots_expiring_together_the_oldest_goes_first() -> None:
    lots = [lot("young", "5", created=-DAY, expires=DAY), lot("old", "5", created=-5 * DAY, expires=DAY)]
    assert plan(lots, "6") == [("old", "5.00"), ("young", "1.00")]
    forever = [lot("young", "5", created=-DAY), lot("old", "5", created=-5 * DAY)]
    assert plan(forever, "6") == [("old", "5.00"), ("young", "1.00")]


def test_expired_lots_are_never_used() -> None:
    lots = [
        lot("gone", "100", created=-5 * DAY, expires=-DAY),
        lot("at-the-second", "100", created=-5 * DAY, expires=timedelta(0)),  # expiry is inclusive
        lot("live", "3", created=-5 * DAY, expires=timedelta(seconds=1)),
        paid("paid", "2"),
    ]
    assert plan(lots, "5") == [("live", "3.00"), ("paid", "2.00")]
    with pytest.raises(InsufficientCredits):
        plan(lots, "5.01")
    # One second later the 'live' lot has expired too.
    assert plan(lots, "2", NOW + timedelta(seconds=1)) == [("paid", "2.00")]


def test_insufficient_credits_names_what_is_spendable_and_what_is_needed() -> None:
    lots = [
        lot("gone", "100", created=-5 * DAY, expires=-DAY),  # expired: not spendable
        lot("promo", "3", created=-DAY, held="50"),  # held: not spendable
        paid("paid", "2.50"),
    ]
    with pytest.raises(InsufficientCredits) as err:
        plan(lots, "10")
    assert "5.50 spendable" in err.value.description
    assert "10.00 are needed" in err.value.description


def test_an_empty_wallet_has_nothing_spendable() -> None:
    with pytest.raises(InsufficientCredits, match=r"0\.00 spendable credits, 0\.01 are needed"):
        plan([], "0.01")


def test_an_exact_fit_empties_every_lot_and_no_more() -> None:
    lots = [lot("promo", "3.33"), paid("paid", "6.67")]
    assert plan(lots, "10") == [("promo", "3.33"), ("paid", "6.67")]
    with pytest.raises(InsufficientCredits):
        plan(lots, "10.01")


def test_a_spend_within_one_lot_touches_only_that_lot() -> None:
    lots = [lot("promo", "3"), paid("paid", "7")]
    assert plan(lots, "3") == [("promo", "3.00")]


def test_empty_lots_are_skipped() -> None:
    lots = [lot("empty", "0", expires=DAY, held="4"), lot("promo", "3"), paid("paid", "7")]
    assert plan(lots, "5") == [("promo", "3.00"), ("paid", "2.00")]


@st.composite
def wallets(draw: st.DrawFn) -> list[Lot]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(CreditKind))
        expires = None
        if kind is CreditKind.PROMOTIONAL and draw(st.booleans()):
            expires = timedelta(hours=draw(st.integers(-48, 48)))
        out.append(
            lot(
                f"lot{i}",
                str(Credits(draw(st.integers(0, 5_000)))),
                kind=kind,
                created=-timedelta(hours=draw(st.integers(0, 100))),
                expires=expires,
            )
        )
    return out


@given(wallets(), st.integers(1, 20_000))
def test_allocation_covers_the_amount_from_live_lots_in_spending_order(lots: list[Lot], minor: int) -> None:
    live = [x for x in lots if not x.expired(NOW)]
    spendable = sum(x.remaining.minor for x in live)
    amount = Credits(minor)
    if minor > spendable:
        with pytest.raises(InsufficientCredits) as err:
            allocate(lots, amount, NOW)
        assert f"has {Credits(spendable)} spendable" in err.value.description
        return
    chosen = allocate(lots, amount, NOW)
    assert sum(take.minor for _, take in chosen) == minor
    assert all(0 < take.minor <= x.remaining.minor for x, take in chosen)
    assert all(not x.expired(NOW) for x, _ in chosen)
    assert len({x.id for x, _ in chosen}) == len(chosen)
    order = sorted(live, key=Lot.spend_order)
    positions = [order.index(x) for x, _ in chosen]
    assert positions == sorted(positions)
    # Every lot before the last one used is emptied: no later lot is touched while an earlier has credits.
    for x, take in chosen[:-1]:
        assert take == x.remaining
    used = {x.id for x, _ in chosen}
    last = positions[-1] if positions else -1
    assert all(x.id in used or not x.remaining.is_positive() for x in order[:last])


# -- through spend_credits: which lots the ledger drains ------------------------------------------


def _remaining(store: InMemoryStore) -> dict[tuple[str, str], str]:
    return {(x.kind.value, str(x.granted)): str(x.remaining) for x in lots(store)}


def test_spending_drains_promotional_credits_first_then_paid_oldest_first(
    wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    top_up(wallet, gateway, "1.00", "alice")  # 100 paid credits, oldest
    fake_clock.advance(hours=1)
    top_up(wallet, gateway, "2.00", "alice")  # 200 paid credits
    wallet.grant("alice", "30", reason="promo", granted_by="admin")  # never expires
    wallet.grant("alice", "20", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=30))
    wallet.grant("alice", "10", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=7))

    wallet.spend("alice", "25", idempotency_key=new_key(), reason="usage", actor="service:api")
    assert _remaining(store) == {
        ("paid", "100.00"): "100.00",
        ("paid", "200.00"): "200.00",
        ("promotional", "30.00"): "30.00",
        ("promotional", "20.00"): "5.00",
        ("promotional", "10.00"): "0.00",
    }
    wallet.spend("alice", "150", idempotency_key=new_key(), reason="usage", actor="service:api")
    assert _remaining(store) == {
        ("paid", "100.00"): "0.00",
        ("paid", "200.00"): "185.00",
        ("promotional", "30.00"): "0.00",
        ("promotional", "20.00"): "0.00",
        ("promotional", "10.00"): "0.00",
    }
    assert spendable(wallet) == Credits.parse("185")
    assert wallet.verify() == []


def test_a_spend_split_over_lots_posts_one_leg_per_lot(
    wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    wallet.grant("alice", "1", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=1))
    wallet.grant("alice", "2", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=2))
    top_up(wallet, gateway, "1.00", "alice")
    result = wallet.spend("alice", "53", idempotency_key=new_key(), reason="usage", actor="service:api")

    legs = [p for tx_id, p in store.state.postings if tx_id == result.transaction_id]
    by_lot = {store.state.lots[p.lot_id].granted: p.amount for p in legs if p.lot_id is not None}
    assert by_lot == {Credits.parse("1"): Credits.parse("-1"), Credits.parse("2"): Credits.parse("-2"),
                      Credits.parse("100"): Credits.parse("-50")}
    assert sum(p.amount.minor for p in legs) == 0


def test_expired_promotional_credits_are_never_spent(
    wallet: Wallet, fake_clock: FakeClock, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    wallet.grant("alice", "50", reason="promo", granted_by="admin", expires_at=fake_clock.now + timedelta(days=1))
    top_up(wallet, gateway, "1.00", "alice")
    fake_clock.advance(days=1)  # the grant expires exactly now
    with pytest.raises(InsufficientCredits, match=r"has 100\.00 spendable credits, 120\.00 are needed"):
        wallet.spend("alice", "120", idempotency_key=new_key(), reason="usage", actor="service:api")
    wallet.spend("alice", "100", idempotency_key=new_key(), reason="usage", actor="service:api")
    assert spendable(wallet) == Credits(0)
    promo = next(x for x in lots(store) if x.kind is CreditKind.PROMOTIONAL)
    assert promo.remaining == Credits(0)  # booked out by the spend, not spent
    assert wallet.verify() == []
