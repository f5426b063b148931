"""Automatic top-up (issue 13) on the in-memory fakes: a change below the rule's threshold records one
automatic top-up in its own unit of work, the worker charges the saved card off-session, and the
credits come only from payment_intent.succeeded, exactly once."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.fake_webhook_sender import FakeWebhookSender
from adapters.memory_ledger import InMemoryStore, in_memory_unit_of_work_factory
from entrypoints.worker import DeliveryWorker
from tests.unit.helpers import FakeClock, new_key, spendable
from wallet_core.auto_top_up import (
    AttemptOutcome,
    AutoCharge,
    AutoTopUpRule,
    AutoTopUpStatus,
    amount_due,
    month_start,
)
from wallet_core.errors import AutoTopUpInFlight, InvalidInput, NotFound, PaymentDeclined, PaymentGatewayFailed
from wallet_core.event_types import EventType
from wallet_core.money import Credits, Usd
from wallet_core.outbound_events import WalletEvent
from wallet_core.payments import META_TOP_UP_ID
from wallet_core.saved_cards import SavedCard
from wallet_core.service import Wallet
from wallet_core.topups import TopUp, TopUpPolicy, TopUpStatus
from wallet_core.use_cases.auto_top_up import CHARGE_LEASE, charge_request


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.fixture
def auto(store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, fake_clock: FakeClock) -> Wallet:
    """The application service with automatic top-ups on (the unit of work knows the top-up policy)."""
    return Wallet(
        uow=in_memory_unit_of_work_factory(store, top_up_policy=policy), gateway=gateway, policy=policy,
        clock=fake_clock,
    )


def save_card(store: InMemoryStore, gateway: FakePaymentGateway, at: datetime, user: str = "alice") -> SavedCard:
    """A card saved the way the saved-cards feature does it: a Customer, a SetupIntent the user confirmed
    (the fake Stripe attaches its PaymentMethod to the Customer), and the wallet's record of the card."""
    customer = gateway.create_customer(user, f"cus-{user}-{new_key()}")
    setup = gateway.create_setup_intent(customer, user, new_key())
    gateway.succeed_setup_intent(setup.id)
    pm = gateway.setup_intents[setup.id].payment_method_id
    assert pm is not None
    card = SavedCard(user, customer, pm, "visa", "4242", 12, 2034, at)
    with in_memory_unit_of_work_factory(store)() as tx:
        tx.saved_cards.save(card)
        tx.commit()
    return card


def funded(auto: Wallet, credits: str, user: str = "alice") -> None:
    auto.grant(user, credits, reason="start", granted_by="admin:test", idempotency_key=new_key())


def spend(auto: Wallet, credits: str, user: str = "alice") -> None:
    auto.spend(user, credits, idempotency_key=new_key(), reason="usage")


def automatic(store: InMemoryStore, user: str = "alice") -> list[TopUp]:
    return [t for t in store.state.top_ups.values() if t.automatic and t.user_id == user]


def events_of(store: InMemoryStore, type_: EventType) -> list[WalletEvent]:
    return [e for e in store.state.outbox if e.type is type_]


def deliver_success(auto: Wallet, gateway: FakePaymentGateway, top_up: TopUp) -> str:
    """Stripe's payment_intent.succeeded for the automatic top-up's intent, through the signed webhook."""
    [intent] = [i for i in gateway.intents.values() if i.metadata.get(META_TOP_UP_ID) == top_up.id]
    return auto.handle_stripe_webhook(*gateway.succeed(intent.id)).outcome


@pytest.fixture
def ready(auto: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock) -> Wallet:
    """alice: 1000 credits, a saved card, a rule topping up to 2000 below 500 (100 credits per USD)."""
    funded(auto, "1000.00")
    save_card(store, gateway, fake_clock())
    auto.put_auto_top_up("alice", "500.00", target_credits="2000.00")
    return auto


# -- the trigger ---------------------------------------------------------------------------------


def test_a_spend_below_the_threshold_records_one_automatic_top_up_and_does_not_wait_for_stripe(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    spend(ready, "600.00")  # 400 left: below 500

    [top_up] = automatic(store)
    assert top_up.status is TopUpStatus.PENDING
    assert top_up.payment_intent_id is None
    assert (top_up.amount, top_up.credits) == (Usd(1600), c("1600.00"))  # 2000 - 400 credits = 16.00 USD
    assert gateway.charge_calls == []  # the spend did not call Stripe: the worker will
    view = ready.auto_top_up("alice")
    assert view.in_flight_top_up_id == top_up.id
    assert view.rule.last_attempt is not None and view.rule.last_attempt.outcome is AttemptOutcome.PENDING
    assert view.charged_this_month == Usd(1600)  # a pending charge counts


def test_a_spend_that_stays_at_or_above_the_threshold_records_nothing(ready: Wallet, store: InMemoryStore) -> None:
    spend(ready, "500.00")  # exactly 500 left
    assert automatic(store) == []


def test_no_second_automatic_top_up_while_one_is_in_flight(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    spend(ready, "600.00")
    spend(ready, "100.00")
    ready.charge_auto_top_ups()  # sent: still in flight until its webhook
    spend(ready, "100.00")
    assert len(automatic(store)) == 1
    assert len(gateway.charge_calls) == 1


def test_the_store_itself_refuses_a_second_charge_in_flight_for_a_wallet(store: InMemoryStore) -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    first = AutoCharge("tu_1", "alice", Usd(1000), "cus_1", "pm_1", at, at)
    with in_memory_unit_of_work_factory(store)() as tx:
        tx.auto_top_ups.add_charge(first)
        with pytest.raises(AutoTopUpInFlight):
            tx.auto_top_ups.add_charge(replace(first, top_up_id="tu_2"))
        tx.auto_top_ups.add_charge(replace(first, top_up_id="tu_3", user_id="bob"))  # another wallet: fine


def test_without_a_saved_card_the_rule_is_paused_and_records_nothing(auto: Wallet, store: InMemoryStore) -> None:
    funded(auto, "1000.00")
    view = auto.put_auto_top_up("alice", "500.00", amount_usd="20.00")
    assert view.status is AutoTopUpStatus.PAUSED_NO_PAYMENT_METHOD
    spend(auto, "600.00")
    assert automatic(store) == []


def test_putting_a_rule_charges_nothing_by_itself(auto: Wallet, store: InMemoryStore, gateway: FakePaymentGateway,
                                                   fake_clock: FakeClock) -> None:
    funded(auto, "100.00")
    save_card(store, gateway, fake_clock())
    auto.put_auto_top_up("alice", "500.00", amount_usd="20.00")
    assert automatic(store) == []


# -- amounts -------------------------------------------------------------------------------------

POLICY = TopUpPolicy(min_amount=Usd(100), max_amount=Usd(50_000), credits_per_usd=Decimal(100))


def rule(*, target: str | None = None, amount: str | None = None) -> AutoTopUpRule:
    return AutoTopUpRule(
        "alice", c("500.00"), c(target) if target else None, Usd.parse(amount) if amount else None, None,
        datetime(2025, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("spendable_now", "policy", "expected"),
    [
        ("400.00", POLICY, "16.00"),  # to the target: 1600 credits missing at 100 a USD
        ("765.44", POLICY, "12.35"),  # 1234.56 credits = 12.3456 USD, rounded up to the cent
        ("1999.50", POLICY, "1.00"),  # 0.50 credits = 0.01 USD, raised to the minimum
        ("-100000.00", POLICY, "500.00"),  # 102000 credits = 1020 USD, capped at the maximum
        ("400.00", replace(POLICY, credits_per_usd=Decimal(3), max_amount=Usd(100_000)), "533.34"),  # 533.333..
        ("1999.99", replace(POLICY, credits_per_usd=Decimal("0.5"), min_amount=Usd(1)), "0.02"),  # 0.01 credits
    ],
)
def test_to_a_target_the_missing_credits_in_usd_rounded_up_within_the_limits(
    spendable_now: str, policy: TopUpPolicy, expected: str
) -> None:
    assert amount_due(rule(target="2000.00"), c(spendable_now), policy) == Usd.parse(expected)


def test_a_fixed_amount_is_charged_whatever_the_balance() -> None:
    assert amount_due(rule(amount="20.00"), c("499.99"), POLICY) == Usd(2000)
    assert amount_due(rule(amount="20.00"), c("-5000.00"), POLICY) == Usd(2000)


def test_a_capped_top_up_is_one_charge_and_the_next_change_below_tops_up_again(
    auto: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock, policy: TopUpPolicy
) -> None:
    funded(auto, "100000.00")
    save_card(store, gateway, fake_clock())
    auto.put_auto_top_up("alice", "90000.00", target_credits="100000.00")
    spend(auto, "99000.00")  # 1000 left: 99000 credits missing = 990 USD, capped at 500
    [first] = automatic(store)
    assert first.amount == policy.max_amount
    auto.charge_auto_top_ups()
    assert deliver_success(auto, gateway, first) == "granted"
    assert spendable(auto) == c("51000.00")  # still below 90000: no second charge for this crossing
    assert len(automatic(store)) == 1
    spend(auto, "1.00")  # the next change below the threshold tops up again
    assert len(automatic(store)) == 2


# -- the monthly limit ---------------------------------------------------------------------------


def test_a_top_up_beyond_the_monthly_limit_is_skipped_and_recorded(
    auto: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    funded(auto, "1000.00")
    save_card(store, gateway, fake_clock())
    auto.put_auto_top_up("alice", "500.00", amount_usd="20.00", monthly_limit_usd="30.00")
    spend(auto, "600.00")
    auto.charge_auto_top_ups()
    [first] = automatic(store)
    assert deliver_success(auto, gateway, first) == "granted"  # 2400 credits now, 20 USD charged this month
    spend(auto, "2000.00")  # 400: another 20 USD would make 40 > 30

    assert len(automatic(store)) == 1
    view = auto.auto_top_up("alice")
    assert view.charged_this_month == Usd(2000)
    last = view.rule.last_attempt
    assert last is not None and last.outcome is AttemptOutcome.SKIPPED_MONTHLY_LIMIT
    assert last.amount == Usd(2000) and last.top_up_id is None
    assert view.status is AutoTopUpStatus.ACTIVE

    fake_clock.now = month_start(fake_clock.now) + timedelta(days=40)  # the next calendar month (UTC)
    spend(auto, "1.00")
    assert len(automatic(store)) == 2


def test_a_failed_charge_does_not_count_against_the_monthly_limit(
    auto: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    funded(auto, "1000.00")
    save_card(store, gateway, fake_clock())
    auto.put_auto_top_up("alice", "500.00", amount_usd="20.00", monthly_limit_usd="20.00")
    gateway.decline_next_charge()
    spend(auto, "600.00")
    auto.charge_auto_top_ups()
    assert auto.auto_top_up("alice").charged_this_month == Usd(0)
    spend(auto, "1.00")
    assert len(automatic(store)) == 2


# -- charging ------------------------------------------------------------------------------------


def test_the_worker_charges_the_saved_card_off_session_under_the_top_up_id(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    card = store.state.saved_cards["alice"]
    spend(ready, "600.00")
    done = ready.charge_auto_top_ups()

    assert (done.claimed, done.accepted) == (1, 1)
    [top_up] = automatic(store)
    [request] = gateway.charge_calls
    assert request.idempotency_key == top_up.id
    assert request.metadata[META_TOP_UP_ID] == top_up.id
    assert (request.customer_id, request.payment_method_id) == (card.customer_id, card.payment_method_id)
    assert request.amount == top_up.amount
    stored = store.state.top_ups[top_up.id]
    assert stored.payment_intent_id is not None and stored.status is TopUpStatus.PENDING
    assert spendable(ready) == c("400.00")  # no credits before Stripe's webhook
    assert ready.charge_auto_top_ups().claimed == 0  # sent: nothing more to do but wait


def test_the_succeeded_webhook_grants_exactly_once_and_tells_auto_top_up_succeeded(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    spend(ready, "600.00")
    ready.charge_auto_top_ups()
    [top_up] = automatic(store)
    [intent_id] = [i for i, v in gateway.intents.items() if v.metadata.get(META_TOP_UP_ID) == top_up.id]
    signed = gateway.succeed(intent_id)

    assert ready.handle_stripe_webhook(*signed).outcome == "granted"
    assert ready.handle_stripe_webhook(*signed).outcome == "duplicate"
    assert ready.handle_stripe_webhook(*gateway.succeed(intent_id)).outcome == "already_granted"

    assert spendable(ready) == c("2000.00")
    assert store.state.top_ups[top_up.id].status is TopUpStatus.SUCCEEDED
    [told] = events_of(store, EventType.AUTO_TOP_UP_SUCCEEDED)
    assert told.data["top_up_id"] == top_up.id and told.data["payment_intent_id"] == intent_id
    assert told.data["balance"] == "2000.00" and told.data["amount_usd"] == "16.00"
    view = ready.auto_top_up("alice")
    assert view.in_flight_top_up_id is None
    assert view.rule.last_attempt is not None and view.rule.last_attempt.outcome is AttemptOutcome.SUCCEEDED


def test_a_webhook_arriving_before_the_worker_stored_the_intent_finds_the_top_up_by_its_metadata(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    spend(ready, "600.00")
    gateway.time_out_next_charge()  # Stripe charged, but the worker never heard back
    assert ready.charge_auto_top_ups().deferred == 1
    [top_up] = automatic(store)
    assert store.state.top_ups[top_up.id].payment_intent_id is None

    assert deliver_success(ready, gateway, top_up) == "granted"
    assert spendable(ready) == c("2000.00")

    fake_clock.advance(minutes=5)
    assert ready.charge_auto_top_ups().claimed == 0  # ended by the webhook: nothing to send again
    assert len({r.idempotency_key for r in gateway.charge_calls}) == 1
    assert ready.check_ledger().violations == []


def test_stripe_unreachable_is_no_card_failure_and_the_charge_is_sent_again_with_the_same_key(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    spend(ready, "600.00")
    gateway.fail_next(PaymentGatewayFailed("Stripe could not be reached (simulated)"))
    done = ready.charge_auto_top_ups()

    assert (done.deferred, done.declined) == (1, 0)
    view = ready.auto_top_up("alice")
    assert view.rule.consecutive_failures == 0
    assert view.in_flight_top_up_id is not None
    assert events_of(store, EventType.AUTO_TOP_UP_FAILED) == []
    assert ready.charge_auto_top_ups().claimed == 0  # not before its retry time

    fake_clock.advance(minutes=2)
    assert ready.charge_auto_top_ups().accepted == 1
    [top_up] = automatic(store)
    assert [r.idempotency_key for r in gateway.charge_calls] == [top_up.id]  # the outage refused the first


def test_a_charge_whose_answer_was_lost_is_sent_again_and_stripe_answers_the_same_intent(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    spend(ready, "600.00")
    gateway.time_out_next_charge()
    assert ready.charge_auto_top_ups().deferred == 1
    fake_clock.advance(minutes=2)
    assert ready.charge_auto_top_ups().accepted == 1

    [top_up] = automatic(store)
    assert [r.idempotency_key for r in gateway.charge_calls] == [top_up.id, top_up.id]
    [intent] = [i for i in gateway.intents.values() if i.metadata.get(META_TOP_UP_ID) == top_up.id]
    assert store.state.top_ups[top_up.id].payment_intent_id == intent.id
    assert ready.auto_top_up("alice").rule.consecutive_failures == 0


def test_a_worker_killed_mid_charge_leaves_it_to_the_next_claim_which_sends_the_same_charge(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    spend(ready, "600.00")
    uow = in_memory_unit_of_work_factory(store)
    with uow() as tx:  # a worker claims the charge, sends it to Stripe, and dies before recording anything
        [claimed] = tx.auto_top_ups.claim_charges(fake_clock(), fake_clock() + CHARGE_LEASE, 10)
        tx.commit()
    [top_up] = automatic(store)
    first = gateway.charge_off_session(charge_request(claimed, top_up))

    assert ready.charge_auto_top_ups().claimed == 0  # leased
    fake_clock.advance(CHARGE_LEASE + timedelta(seconds=1))
    assert ready.charge_auto_top_ups().accepted == 1

    assert store.state.top_ups[top_up.id].payment_intent_id == first.id  # the same PaymentIntent
    assert len([i for i in gateway.intents.values() if i.metadata.get(META_TOP_UP_ID) == top_up.id]) == 1


# -- failures ------------------------------------------------------------------------------------


def test_three_consecutive_declines_disable_the_rule_and_tell_auto_top_up_disabled(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    gateway.decline_next_charge("card_declined")
    gateway.decline_next_charge("authentication_required")
    gateway.decline_next_charge("card_declined")
    for n in (1, 2, 3):
        spend(ready, "1.00" if n > 1 else "600.00")
        assert ready.charge_auto_top_ups().declined == 1
        assert ready.auto_top_up("alice").rule.consecutive_failures == n

    view = ready.auto_top_up("alice")
    assert view.status is AutoTopUpStatus.DISABLED_AFTER_FAILURES
    assert view.in_flight_top_up_id is None
    assert view.rule.last_attempt is not None and view.rule.last_attempt.error_code == "card_declined"
    assert [t.status for t in automatic(store)] == [TopUpStatus.FAILED] * 3
    failed = events_of(store, EventType.AUTO_TOP_UP_FAILED)
    assert [e.data["error_code"] for e in failed] == ["card_declined", "authentication_required", "card_declined"]
    assert len(events_of(store, EventType.TOP_UP_FAILED)) == 3  # like any top-up that failed
    [disabled] = events_of(store, EventType.AUTO_TOP_UP_DISABLED)
    assert disabled.data["consecutive_failures"] == 3

    spend(ready, "1.00")  # disabled: nothing more is charged
    assert len(automatic(store)) == 3
    assert len(gateway.charge_calls) == 3
    assert spendable(ready) == c("397.00")


def test_a_success_in_between_resets_the_consecutive_failures(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    gateway.decline_next_charge()
    spend(ready, "600.00")
    ready.charge_auto_top_ups()
    spend(ready, "1.00")
    ready.charge_auto_top_ups()
    assert deliver_success(ready, gateway, automatic(store)[-1]) == "granted"
    assert ready.auto_top_up("alice").rule.consecutive_failures == 0


def test_putting_the_rule_again_re_enables_it(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    card = store.state.saved_cards["alice"]
    gateway.always_decline(card.payment_method_id)
    for _ in range(3):
        spend(ready, "600.00" if not automatic(store) else "1.00")
        ready.charge_auto_top_ups()
    assert ready.auto_top_up("alice").status is AutoTopUpStatus.DISABLED_AFTER_FAILURES

    gateway.declining.clear()
    view = ready.put_auto_top_up("alice", "500.00", target_credits="2000.00")
    assert view.status is AutoTopUpStatus.ACTIVE
    assert view.rule.consecutive_failures == 0
    spend(ready, "1.00")
    assert ready.charge_auto_top_ups().accepted == 1


def test_saving_a_card_after_the_rule_was_disabled_re_enables_it(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    for _ in range(3):
        gateway.decline_next_charge()
        spend(ready, "600.00" if not automatic(store) else "1.00")
        ready.charge_auto_top_ups()
    assert ready.auto_top_up("alice").status is AutoTopUpStatus.DISABLED_AFTER_FAILURES

    fake_clock.advance(minutes=1)
    save_card(store, gateway, fake_clock())
    assert ready.auto_top_up("alice").status is AutoTopUpStatus.ACTIVE
    spend(ready, "1.00")
    assert ready.charge_auto_top_ups().accepted == 1
    assert ready.auto_top_up("alice").rule.consecutive_failures == 0


def test_a_payment_failed_webhook_before_the_worker_records_the_decline_counts_one_failure(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    spend(ready, "600.00")
    [top_up] = automatic(store)
    gateway.decline_next_charge()
    charge = store.state.auto_charges["alice"]
    with pytest.raises(PaymentDeclined, match="declined"):
        gateway.charge_off_session(charge_request(charge, top_up))  # Stripe declined; its webhook comes first
    [intent_id] = [i for i, v in gateway.intents.items() if v.metadata.get(META_TOP_UP_ID) == top_up.id]
    assert ready.handle_stripe_webhook(*gateway.fail(intent_id)).outcome == "failed"
    assert ready.charge_auto_top_ups().claimed == 0  # no longer in flight

    assert ready.auto_top_up("alice").rule.consecutive_failures == 1
    assert len(events_of(store, EventType.AUTO_TOP_UP_FAILED)) == 1
    assert len(events_of(store, EventType.TOP_UP_FAILED)) == 1
    assert store.state.top_ups[top_up.id].payment_intent_id == intent_id


# -- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"threshold_credits": "500.00", "target_credits": "500.00"}, "target_credits"),  # not below the target
        ({"threshold_credits": "500.00", "target_credits": "100.00"}, "target_credits"),
        ({"threshold_credits": "500.00", "amount_usd": "0.50"}, "amount_usd"),  # below TOP_UP_MIN_USD
        ({"threshold_credits": "500.00", "amount_usd": "500.01"}, "amount_usd"),  # above TOP_UP_MAX_USD
        ({"threshold_credits": "500.00"}, "amount_usd"),  # neither
        ({"threshold_credits": "500.00", "target_credits": "900.00", "amount_usd": "5.00"}, "target_credits"),
        ({"threshold_credits": "0", "amount_usd": "5.00"}, "threshold_credits"),
        ({"threshold_credits": "500.00", "amount_usd": "20.00", "monthly_limit_usd": "10.00"}, "monthly_limit_usd"),
        ({"threshold_credits": 500.0, "amount_usd": "20.00"}, "threshold_credits"),  # a float is not exact
    ],
)
def test_a_bad_rule_is_refused_naming_the_field_and_nothing_is_stored(
    auto: Wallet, store: InMemoryStore, terms: dict[str, object], field: str
) -> None:
    threshold = terms.pop("threshold_credits")
    with pytest.raises(InvalidInput) as refused:
        auto.put_auto_top_up("alice", threshold, **terms)
    assert refused.value.field == field
    assert store.state.auto_rules == {}


def test_a_rule_is_read_and_removed(auto: Wallet, store: InMemoryStore) -> None:
    with pytest.raises(NotFound):
        auto.auto_top_up("alice")
    put = auto.put_auto_top_up("alice", "500.00", amount_usd="20.00", monthly_limit_usd="200.00")
    got = auto.auto_top_up("alice")
    assert got == put
    assert (got.rule.threshold, got.rule.amount, got.rule.monthly_limit) == (c("500.00"), Usd(2000), Usd(20000))
    assert got.rule.target is None and got.rule.last_attempt is None
    auto.remove_auto_top_up("alice")
    with pytest.raises(NotFound):
        auto.auto_top_up("alice")
    with pytest.raises(NotFound):
        auto.remove_auto_top_up("alice")


def test_a_rule_removed_before_its_charge_was_sent_charges_nothing(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    spend(ready, "600.00")
    ready.remove_auto_top_up("alice")
    assert ready.charge_auto_top_ups().canceled == 1
    assert gateway.charge_calls == []
    [top_up] = automatic(store)
    assert store.state.top_ups[top_up.id].status is TopUpStatus.CANCELED
    assert store.state.auto_charges == {}


def test_without_the_policy_in_the_unit_of_work_nothing_is_charged(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy, fake_clock: FakeClock
) -> None:
    off = Wallet(uow=in_memory_unit_of_work_factory(store), gateway=gateway, policy=policy, clock=fake_clock)
    funded(off, "1000.00")
    save_card(store, gateway, fake_clock())
    off.put_auto_top_up("alice", "500.00", amount_usd="20.00")
    spend(off, "600.00")
    assert automatic(store) == []


# -- the worker thread ---------------------------------------------------------------------------


def test_the_worker_thread_charges_an_automatic_top_up_and_delivers_what_its_outcome_tells(
    store: InMemoryStore, gateway: FakePaymentGateway, policy: TopUpPolicy
) -> None:
    sender = FakeWebhookSender()
    wallet = Wallet(
        uow=in_memory_unit_of_work_factory(store, top_up_policy=policy), gateway=gateway, policy=policy,
        webhook_sender=sender,
    )
    wallet.add_webhook_endpoint("https://hooks.example.com/wallet", ["auto_top_up.failed"])
    funded(wallet, "1000.00")
    save_card(store, gateway, datetime.now(UTC))
    wallet.put_auto_top_up("alice", "500.00", amount_usd="20.00")
    gateway.decline_next_charge()
    spend(wallet, "600.00")

    worker = DeliveryWorker(wallet, poll_seconds=0.05, charger=wallet)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not sender.sent and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        assert worker.stop(timeout=5)
    assert len(gateway.charge_calls) == 1
    [sent] = sender.sent
    assert b'"auto_top_up.failed"' in sent.body


def test_reconcile_grants_an_automatic_top_up_whose_webhook_and_worker_answer_were_both_lost(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    spend(ready, "600.00")
    gateway.time_out_next_charge()  # Stripe charged; the worker never heard; the webhook never came
    ready.charge_auto_top_ups()
    [top_up] = automatic(store)

    report = ready.reconcile()
    assert report.needs_review == 0, report.reviews
    assert spendable(ready) == c("2000.00")
    stored = store.state.top_ups[top_up.id]
    assert stored.status is TopUpStatus.SUCCEEDED and stored.payment_intent_id is not None
    assert len(events_of(store, EventType.AUTO_TOP_UP_SUCCEEDED)) == 1
    assert ready.reconcile().needs_review == 0  # a second run finds it correct

    fake_clock.advance(minutes=5)
    assert ready.charge_auto_top_ups().claimed == 0  # ended: nothing to send again
    assert ready.check_ledger().violations == []


def test_a_card_removed_before_the_charge_was_sent_charges_nothing(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    spend(ready, "600.00")
    with in_memory_unit_of_work_factory(store)() as tx:
        tx.saved_cards.forget("alice")
        tx.commit()
    assert ready.charge_auto_top_ups().canceled == 1
    assert gateway.charge_calls == []
    view = ready.auto_top_up("alice")
    assert view.rule.consecutive_failures == 0  # the user's doing, no card failure
    assert view.rule.last_attempt is not None and view.rule.last_attempt.outcome is AttemptOutcome.CANCELED
    assert view.in_flight_top_up_id is None


def test_a_card_replaced_before_the_charge_was_sent_is_the_one_charged(
    ready: Wallet, store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    spend(ready, "600.00")
    fake_clock.advance(minutes=1)
    newer = save_card(store, gateway, fake_clock())
    assert ready.charge_auto_top_ups().accepted == 1
    [request] = gateway.charge_calls
    assert (request.customer_id, request.payment_method_id) == (newer.customer_id, newer.payment_method_id)
