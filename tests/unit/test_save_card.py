"""Saving a card for automatic top-up: the user's Stripe Customer made once, a SetupIntent per setup, the
card saved when the wallet learns the SetupIntent succeeded (the browser's complete call or the signed
webhook, in any order, any number of times), replaced and forgotten with the old card detached."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import FakeClock
from wallet_core.errors import (
    CardSetupIncomplete,
    InvalidInput,
    NotFound,
    PaymentGatewayFailed,
    PaymentsNotConfigured,
)
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import PaymentEvent
from wallet_core.saved_cards import SavedCard
from wallet_core.service import Wallet
from wallet_core.use_cases.save_card import customer_idempotency_key


def setup_and_confirm(
    wallet: Wallet, gateway: FakePaymentGateway, user: str = "alice", *, last4: str = "4242", brand: str = "visa"
) -> tuple[str, tuple[bytes, str]]:
    """The user sets up a card and confirms it with Stripe.js: the SetupIntent id and Stripe's signed
    setup_intent.succeeded (not delivered yet)."""
    setup = wallet.setup_card(user)
    event = gateway.succeed_setup_intent(setup.setup_intent_id, brand=brand, last4=last4, exp_month=8, exp_year=2031)
    return setup.setup_intent_id, event


# -- starting a setup ---------------------------------------------------------------------------------


def test_the_first_setup_makes_the_users_customer_and_an_off_session_setup_intent(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    setup = wallet.setup_card("alice")

    assert setup.customer_id in gateway.customers and gateway.customers[setup.customer_id] == "alice"
    intent = gateway.setup_intents[setup.setup_intent_id]
    assert (intent.customer_id, intent.user_id) == (setup.customer_id, "alice")
    assert intent.status == "requires_payment_method"
    assert setup.client_secret == intent.client_secret and setup.client_secret is not None
    assert setup.client_secret not in repr(setup)
    assert store.state.customers == {"alice": setup.customer_id}
    assert gateway.customer_calls == [customer_idempotency_key("alice")]


def test_later_setups_reuse_the_customer_and_make_new_setup_intents(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    first = wallet.setup_card("alice")
    second = wallet.setup_card("alice")
    bob = wallet.setup_card("bob")

    assert second.customer_id == first.customer_id != bob.customer_id
    assert second.setup_intent_id != first.setup_intent_id
    assert len(gateway.customer_calls) == 2  # alice once, bob once


def test_concurrent_first_setups_end_with_one_stored_customer(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    results = []
    barrier = threading.Barrier(4)

    def first_setup() -> None:
        barrier.wait()
        results.append(wallet.setup_card("alice"))

    threads = [threading.Thread(target=first_setup) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len({r.customer_id for r in results}) == 1
    assert len(gateway.customers) == 1  # the same idempotency key each time: one Customer at Stripe
    assert store.state.customers == {"alice": results[0].customer_id}


def test_a_customer_stored_by_a_concurrent_request_wins_over_the_one_just_made(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    real_create = gateway.create_customer

    def create_while_another_request_stores_its_own(user_id: str, idempotency_key: str) -> str:
        made = real_create(user_id, idempotency_key)
        # Meanwhile another request committed a different Customer (Stripe's answer to the key had expired).
        store.state.customers[user_id] = "cus_stored_earlier"
        gateway.customers["cus_stored_earlier"] = user_id
        return made

    gateway.create_customer = create_while_another_request_stores_its_own  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        setup = wallet.setup_card("alice")

    assert setup.customer_id == "cus_stored_earlier"
    assert gateway.setup_intents[setup.setup_intent_id].customer_id == "cus_stored_earlier"
    assert store.state.customers == {"alice": "cus_stored_earlier"}
    assert "is not used" in caplog.text


def test_a_failed_customer_creation_stores_nothing(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    gateway.fail_next()

    with pytest.raises(PaymentGatewayFailed):
        wallet.setup_card("alice")

    assert store.state.customers == {} and gateway.setup_intents == {}
    assert wallet.setup_card("alice").customer_id in gateway.customers  # a retry works


def test_setup_needs_stripe_and_a_valid_user(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    with pytest.raises(InvalidInput, match="user_id"):
        wallet.setup_card("not a user id")
    gateway.configured = False
    with pytest.raises(PaymentsNotConfigured):
        wallet.setup_card("alice")


# -- completing: the browser says it succeeded ---------------------------------------------------------


def test_complete_saves_the_card_as_stripe_has_it(
    wallet: Wallet, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    seti, _ = setup_and_confirm(wallet, gateway, last4="1881")

    card = wallet.complete_card_setup("alice", seti)

    pm_id = gateway.setup_intents[seti].payment_method_id
    assert card == SavedCard(
        user_id="alice",
        customer_id=gateway.setup_intents[seti].customer_id,
        payment_method_id=pm_id or "",
        brand="visa",
        last4="1881",
        exp_month=8,
        exp_year=2031,
        saved_at=fake_clock.now,
    )
    assert wallet.saved_card("alice") == card
    assert wallet.saved_card("bob") is None


def test_complete_twice_answers_the_same_card_without_writing(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, fake_clock: FakeClock
) -> None:
    seti, _ = setup_and_confirm(wallet, gateway)
    first = wallet.complete_card_setup("alice", seti)
    commits = store.commits
    fake_clock.advance(minutes=5)

    assert wallet.complete_card_setup("alice", seti) == first
    assert store.commits == commits
    assert gateway.detached == []


def test_complete_of_an_unconfirmed_setup_is_a_conflict(wallet: Wallet) -> None:
    setup = wallet.setup_card("alice")

    with pytest.raises(CardSetupIncomplete, match="requires_payment_method"):
        wallet.complete_card_setup("alice", setup.setup_intent_id)
    assert wallet.saved_card("alice") is None


def test_complete_of_another_users_setup_is_not_found(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    bobs, _ = setup_and_confirm(wallet, gateway, "bob")
    wallet.setup_card("alice")  # alice has a Customer of her own

    with pytest.raises(NotFound, match="of this user"):
        wallet.complete_card_setup("alice", bobs)
    with pytest.raises(NotFound):
        wallet.complete_card_setup("carol", bobs)  # no Customer at all
    with pytest.raises(NotFound):
        wallet.complete_card_setup("alice", "seti_doesnotexist")
    assert wallet.saved_card("alice") is None and wallet.saved_card("bob") is None


def test_a_setup_intent_naming_the_user_but_of_another_customer_is_not_theirs(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    wallet.setup_card("alice")
    stranger = gateway.create_customer("alice", "someone-elses-key")  # a Customer this wallet never stored
    intent = gateway.create_setup_intent(stranger, "alice", "k1")
    gateway.succeed_setup_intent(intent.id)

    with pytest.raises(NotFound):
        wallet.complete_card_setup("alice", intent.id)


@pytest.mark.parametrize("bad", ["", "pi_123", "seti_1/../x", "seti_" + "x" * 300])
def test_complete_refuses_what_is_not_a_setup_intent_id(wallet: Wallet, bad: str) -> None:
    with pytest.raises(InvalidInput, match="setup_intent_id"):
        wallet.complete_card_setup("alice", bad)


def test_a_later_card_replaces_the_saved_one_and_the_old_one_is_detached(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    first_seti, _ = setup_and_confirm(wallet, gateway, last4="4242")
    first = wallet.complete_card_setup("alice", first_seti)
    second_seti, _ = setup_and_confirm(wallet, gateway, last4="5556")

    second = wallet.complete_card_setup("alice", second_seti)

    assert (second.last4, second.customer_id) == ("5556", first.customer_id)
    assert wallet.saved_card("alice") == second
    assert gateway.detached == [first.payment_method_id]


def test_a_card_that_cannot_be_detached_is_still_replaced(
    wallet: Wallet, gateway: FakePaymentGateway, caplog: pytest.LogCaptureFixture
) -> None:
    first_seti, _ = setup_and_confirm(wallet, gateway)
    first = wallet.complete_card_setup("alice", first_seti)
    second_seti, _ = setup_and_confirm(wallet, gateway, last4="5556")
    real_detach = gateway.detach_payment_method

    def down(payment_method_id: str) -> None:
        raise PaymentGatewayFailed("Stripe could not be reached (simulated)")

    gateway.detach_payment_method = down  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        second = wallet.complete_card_setup("alice", second_seti)

    assert wallet.saved_card("alice") == second
    assert f"card {first.payment_method_id} was replaced or forgotten" in caplog.text
    gateway.detach_payment_method = real_detach  # type: ignore[method-assign]


def test_complete_when_stripe_fails_saves_nothing(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    seti, _ = setup_and_confirm(wallet, gateway)
    gateway.fail_next()

    with pytest.raises(PaymentGatewayFailed):
        wallet.complete_card_setup("alice", seti)
    assert wallet.saved_card("alice") is None


# -- the webhook says it succeeded -----------------------------------------------------------------------


def test_the_webhook_saves_the_card_and_a_replay_changes_nothing(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    seti, event = setup_and_confirm(wallet, gateway, last4="0005")

    outcome = wallet.handle_stripe_webhook(*event)

    assert (outcome.outcome, outcome.event_type) == (PaymentEventOutcome.CARD_SAVED, "setup_intent.succeeded")
    card = wallet.saved_card("alice")
    assert card is not None and card.last4 == "0005"
    assert card.payment_method_id == gateway.setup_intents[seti].payment_method_id
    commits = store.commits
    assert wallet.handle_stripe_webhook(*event).outcome is PaymentEventOutcome.DUPLICATE
    assert store.commits == commits
    assert wallet.saved_card("alice") == card
    [logged] = store.state.events.values()
    assert (logged.type, logged.outcome, logged.payment_intent_id) == ("setup_intent.succeeded", "card_saved", None)


def test_webhook_and_complete_in_either_order_save_one_card(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    seti, event = setup_and_confirm(wallet, gateway)
    card = wallet.complete_card_setup("alice", seti)

    assert wallet.handle_stripe_webhook(*event).outcome is PaymentEventOutcome.CARD_ALREADY_SAVED
    assert wallet.saved_card("alice") == card

    bobs, bob_event = setup_and_confirm(wallet, gateway, "bob")
    assert wallet.handle_stripe_webhook(*bob_event).outcome is PaymentEventOutcome.CARD_SAVED
    bob_card = wallet.saved_card("bob")
    assert wallet.complete_card_setup("bob", bobs) == bob_card
    assert gateway.detached == []


def test_a_late_webhook_for_a_replaced_card_does_not_bring_it_back(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    first_seti, late_event = setup_and_confirm(wallet, gateway, last4="1111")
    wallet.complete_card_setup("alice", first_seti)
    second_seti, _ = setup_and_confirm(wallet, gateway, last4="2222")
    second = wallet.complete_card_setup("alice", second_seti)

    assert wallet.handle_stripe_webhook(*late_event).outcome is PaymentEventOutcome.IGNORED_LATE
    assert wallet.saved_card("alice") == second
    assert gateway.detached == [gateway.setup_intents[first_seti].payment_method_id]


def test_a_late_webhook_for_a_forgotten_card_does_not_bring_it_back(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    seti, late_event = setup_and_confirm(wallet, gateway)
    wallet.complete_card_setup("alice", seti)
    wallet.forget_card("alice")

    assert wallet.handle_stripe_webhook(*late_event).outcome is PaymentEventOutcome.IGNORED_LATE
    assert wallet.saved_card("alice") is None


def test_a_webhook_about_a_setup_intent_of_no_user_of_ours_is_ignored(
    wallet: Wallet, gateway: FakePaymentGateway
) -> None:
    customer = gateway.create_customer("mallory", "k-mallory")  # made at Stripe, never stored by this wallet
    intent = gateway.create_setup_intent(customer, "mallory", "k-setup")
    unknown_customer = gateway.succeed_setup_intent(intent.id)
    wallet.setup_card("alice")
    alices_name = gateway.create_setup_intent(customer, "alice", "k-setup-2")  # alice's name, not her Customer
    wrong_customer = gateway.succeed_setup_intent(alices_name.id)

    assert wallet.handle_stripe_webhook(*unknown_customer).outcome is PaymentEventOutcome.IGNORED
    assert wallet.handle_stripe_webhook(*wrong_customer).outcome is PaymentEventOutcome.IGNORED
    assert wallet.saved_card("mallory") is None and wallet.saved_card("alice") is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"metadata": {}}, id="no-user"),
        pytest.param({"metadata": {"wallet_user_id": "not a user id"}}, id="bad-user"),
        pytest.param({"payment_method": None}, id="no-card"),
        pytest.param({"status": "processing"}, id="not-succeeded"),
    ],
)
def test_a_setup_intent_succeeded_without_what_it_needs_is_ignored(
    wallet: Wallet, gateway: FakePaymentGateway, change: dict[str, object]
) -> None:
    setup = wallet.setup_card("alice")
    gateway.succeed_setup_intent(setup.setup_intent_id)
    obj = {**gateway.setup_intent_object(gateway.setup_intents[setup.setup_intent_id]), **change}

    outcome = wallet.handle_stripe_webhook(*gateway.signed_event("setup_intent.succeeded", obj))

    assert outcome.outcome is PaymentEventOutcome.IGNORED
    assert wallet.saved_card("alice") is None


def test_a_webhook_whose_card_cannot_be_read_is_not_logged_so_stripe_retries(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    _, event = setup_and_confirm(wallet, gateway)
    gateway.fail_next()

    with pytest.raises(PaymentGatewayFailed):
        wallet.handle_stripe_webhook(*event)
    assert store.state.events == {} and wallet.saved_card("alice") is None

    assert wallet.handle_stripe_webhook(*event).outcome is PaymentEventOutcome.CARD_SAVED


def test_a_webhook_whose_card_is_gone_at_stripe_is_ignored(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    seti, event = setup_and_confirm(wallet, gateway)
    gateway.payment_methods.pop(gateway.setup_intents[seti].payment_method_id or "")

    assert wallet.handle_stripe_webhook(*event).outcome is PaymentEventOutcome.IGNORED
    assert wallet.saved_card("alice") is None


def test_a_webhook_applied_without_a_gateway_refuses_rather_than_guess(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    from adapters.memory_ledger import in_memory_unit_of_work_factory
    from wallet_core.use_cases import apply_payment_event

    _, (payload, header) = setup_and_confirm(wallet, gateway)
    event: PaymentEvent = gateway.parse_webhook(payload, header)

    with pytest.raises(PaymentsNotConfigured):
        apply_payment_event(event, uow=in_memory_unit_of_work_factory(store))
    assert store.state.events == {}


def test_other_setup_intent_events_are_ignored(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    setup = wallet.setup_card("alice")
    obj = gateway.setup_intent_object(replace(gateway.setup_intents[setup.setup_intent_id], status="canceled"))

    outcome = wallet.handle_stripe_webhook(*gateway.signed_event("setup_intent.canceled", obj))

    assert outcome.outcome is PaymentEventOutcome.IGNORED


# -- forgetting ----------------------------------------------------------------------------------------


def test_forget_removes_the_card_and_detaches_it(wallet: Wallet, gateway: FakePaymentGateway) -> None:
    seti, _ = setup_and_confirm(wallet, gateway)
    card = wallet.complete_card_setup("alice", seti)

    assert wallet.forget_card("alice") == card
    assert wallet.saved_card("alice") is None
    assert gateway.detached == [card.payment_method_id]
    assert wallet.forget_card("alice") is None  # nothing left: nothing asked of Stripe
    assert gateway.detached == [card.payment_method_id]
    assert wallet.setup_card("alice").customer_id == card.customer_id  # the Customer stays


def test_forget_when_stripe_is_down_still_forgets(
    wallet: Wallet, gateway: FakePaymentGateway, caplog: pytest.LogCaptureFixture
) -> None:
    seti, _ = setup_and_confirm(wallet, gateway)
    wallet.complete_card_setup("alice", seti)
    gateway.fail_next()

    with caplog.at_level(logging.ERROR):
        assert wallet.forget_card("alice") is not None
    assert wallet.saved_card("alice") is None
    assert "could not be detached" in caplog.text


def test_a_setup_intent_succeeded_naming_an_unstorable_id_is_ignored_before_the_database(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    setup = wallet.setup_card("alice")
    gateway.succeed_setup_intent(setup.setup_intent_id)
    obj = {**gateway.setup_intent_object(gateway.setup_intents[setup.setup_intent_id]), "customer": "cus_\x00evil"}

    with caplog.at_level(logging.WARNING):
        outcome = wallet.handle_stripe_webhook(*gateway.signed_event("setup_intent.succeeded", obj))

    assert outcome.outcome is PaymentEventOutcome.IGNORED
    assert "customer id" in caplog.text
    assert wallet.saved_card("alice") is None
    [logged] = store.state.events.values()
    assert logged.outcome == "ignored"
