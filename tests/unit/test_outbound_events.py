"""Outbound events: every change adds the event it means in its own unit of work (nothing for a change
that rolled back), balance alerts fire once per crossing, and a consumer pages through them in order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from tests.unit.helpers import FakeClock, new_key, paid_top_up, refund, refund_event, top_up
from wallet_core.errors import InsufficientCredits, InvalidInput
from wallet_core.money import Credits
from wallet_core.outbound_events import WalletEvent
from wallet_core.service import Wallet
from wallet_core.topups import TopUpPolicy


def events(store: InMemoryStore) -> list[WalletEvent]:
    return list(store.state.outbox)


def types(store: InMemoryStore) -> list[str]:
    return [e.type.value for e in events(store)]


def test_each_change_tells_what_it_did_with_the_ids_to_act_on(
    wallet: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    outcome = top_up(wallet, gateway, "1.00")
    grant = wallet.grant(
        "alice", "10", reason="promo", granted_by="admin", expires_at=fake_clock() + timedelta(hours=1)
    )
    spend = wallet.spend("alice", "5", idempotency_key=new_key(), reason="usage")
    hold = wallet.hold("alice", "20", idempotency_key=new_key(), reason="job")
    wallet.capture(hold.hold_id, "15")
    released = wallet.hold("alice", "1", idempotency_key=new_key(), reason="job")
    wallet.release(released.hold_id)
    wallet.revert(spend.transaction_id, reason="oops", idempotency_key=new_key())
    fake_clock.advance(hours=2)
    wallet.expire()

    assert types(store) == [
        "credits.granted",
        "top_up.succeeded",
        "credits.granted",
        "credits.spent",
        "hold.created",
        "hold.captured",
        "hold.created",
        "hold.released",
        "credits.reverted",
        "credits.expired",
    ]
    granted, succeeded = events(store)[:2]
    assert granted.data["top_up_id"] == outcome.top_up_id == succeeded.data["top_up_id"]
    assert succeeded.data["payment_intent_id"] and succeeded.data["balance"] == "100.00"
    assert events(store)[2].data["transaction_id"] == grant.transaction_id
    spent = events(store)[3]
    assert (spent.user_id, spent.data["transaction_id"], spent.data["credits"], spent.data["balance"]) == (
        "alice",
        spend.transaction_id,
        "-5.00",
        "105.00",
    )
    assert events(store)[4].data["hold_id"] == hold.hold_id
    assert events(store)[8].data["reverts"] == spend.transaction_id
    assert len({e.id for e in events(store)}) == len(events(store))
    body = spent.body()
    assert set(body) == {"id", "type", "created_at", "user_id", "data"} and str(body["id"]).startswith("evt_")


def test_a_change_that_rolled_back_tells_nothing(wallet: Wallet, store: InMemoryStore) -> None:
    wallet.grant("alice", "10", reason="promo", granted_by="admin")
    before = types(store)
    with pytest.raises(InsufficientCredits):
        wallet.spend("alice", "11", idempotency_key=new_key(), reason="usage")
    with pytest.raises(InvalidInput):
        wallet.spend("alice", "-1", idempotency_key=new_key(), reason="usage")
    assert types(store) == before


def test_refunds_failures_and_hold_expiry(
    wallet: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    pi = paid_top_up(wallet, gateway, store, "2.00").payment_intent_id
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 100)))
    pending = wallet.top_up("alice", "3.00")
    wallet.handle_stripe_webhook(*gateway.fail(pending.payment_intent_id))
    wallet.hold("alice", "10", idempotency_key=new_key(), reason="job", expires_in_seconds=60)
    fake_clock.advance(minutes=2)
    wallet.expire()

    told = {e.type.value: e for e in events(store)}
    assert told["top_up.refunded"].data["payment_intent_id"] == pi
    assert told["top_up.refunded"].data["credits"] == "-100.00"
    assert told["top_up.failed"].data["payment_intent_id"] == pending.payment_intent_id
    assert "hold.expired" in told and "hold.released" not in told


def alerting_wallet(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, clock: FakeClock, default: str | None = None
) -> Wallet:
    uow = in_memory_unit_of_work_factory(store, low_balance_default=None if default is None else Credits.parse(default))
    return Wallet(uow=uow, gateway=gateway, policy=policy, clock=clock)


def test_alerts_fire_once_per_crossing(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, fake_clock: FakeClock
) -> None:
    wallet = alerting_wallet(store, gateway, policy, fake_clock)
    wallet.grant("alice", "150", reason="promo", granted_by="admin")
    wallet.set_low_balance_alert("alice", "100.00")

    def spend(credits: str) -> None:
        wallet.spend("alice", credits, idempotency_key=new_key(), reason="usage")

    spend("40")  # 110: still at or above
    spend("20")  # 90: falls below
    spend("10")  # 80: below, nothing more
    spend("80")  # 0: depleted
    wallet.grant("alice", "50", reason="promo", granted_by="admin")  # 50: up, still below: nothing
    wallet.grant("alice", "60", reason="promo", granted_by="admin")  # 110: recovered
    spend("110")  # 0: low and depleted at once

    alerts = [e for e in events(store) if e.type.value.startswith("wallet.")]
    assert [(e.type.value, e.data["balance"]) for e in alerts] == [
        ("wallet.balance_low", "90.00"),
        ("wallet.depleted", "0.00"),
        ("wallet.recovered", "110.00"),
        ("wallet.balance_low", "0.00"),
        ("wallet.depleted", "0.00"),
    ]
    assert alerts[0].data["low_balance_credits"] == "100.00"


def test_the_default_threshold_and_clearing_a_wallets_own(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, fake_clock: FakeClock
) -> None:
    wallet = alerting_wallet(store, gateway, policy, fake_clock, default="50")
    wallet.grant("bob", "100", reason="promo", granted_by="admin")
    wallet.spend("bob", "60", idempotency_key=new_key(), reason="usage")  # 40 < 50
    assert [e.type.value for e in events(store)][-1] == "wallet.balance_low"

    view = wallet.set_low_balance_alert("bob", "30")  # 40 >= 30: the level moves silently
    assert (view.low_balance_credits, view.effective, view.level.value if view.level else None) == (
        Credits.parse("30"),
        Credits.parse("30"),
        "ok",
    )
    count = len(events(store))
    assert wallet.clear_low_balance_alert("bob").effective == Credits.parse("50")
    assert len(events(store)) == count
    with pytest.raises(InvalidInput, match="low_balance_credits"):
        wallet.set_low_balance_alert("bob", "0")


def test_a_consumer_pages_through_every_event_in_order(wallet: Wallet) -> None:
    for n in range(5):
        wallet.grant(f"user{n % 2}", "1", reason="promo", granted_by="admin")
    first = wallet.events_after(None, limit=2)
    second = wallet.events_after(first.next_cursor, limit=10)
    assert len(first.events) == 2 and len(second.events) == 3
    assert wallet.events_after(second.next_cursor).events == []
    assert wallet.events_after(second.next_cursor).next_cursor == second.next_cursor
    assert [e.user_id for e in wallet.events_after(user_id="user1").events] == ["user1", "user1"]
    assert wallet.events_after(type="credits.spent").events == []
    for bad in ("abc", "-1", "1.5"):
        with pytest.raises(InvalidInput, match="after"):
            wallet.events_after(bad)
    with pytest.raises(InvalidInput, match="type"):
        wallet.events_after(type="credits.stolen")
