"""The SavedCards contract (tx.saved_cards) for every backend: each user's Stripe Customer, stored once,
and the one card they saved for payments made without them."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from tests.contract.builders import HOUR, T0, Uow
from wallet_core.saved_cards import SavedCard

VISA = SavedCard(
    user_id="alice",
    customer_id="cus_alice",
    payment_method_id="pm_visa",
    brand="visa",
    last4="4242",
    exp_month=12,
    exp_year=2034,
    saved_at=T0,
)


def test_nothing_is_stored_for_a_new_user(uow: Uow) -> None:
    with uow(read_only=True) as tx:
        assert tx.saved_cards.customer_id("alice") is None
        assert tx.saved_cards.get("alice") is None


def test_the_first_customer_stored_stays(uow: Uow) -> None:
    with uow() as tx:
        assert tx.saved_cards.set_customer("alice", "cus_first", T0) == "cus_first"
        tx.commit()
    with uow() as tx:
        # A concurrent first request that lost the race: the earlier customer is the answer.
        assert tx.saved_cards.set_customer("alice", "cus_second", T0 + HOUR) == "cus_first"
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.saved_cards.customer_id("alice") == "cus_first"
        assert tx.saved_cards.customer_id("bob") is None


def test_saving_replaces_the_users_card_and_forget_removes_it(uow: Uow) -> None:
    bob = replace(VISA, user_id="bob", customer_id="cus_bob", payment_method_id="pm_bob")
    with uow() as tx:
        tx.saved_cards.save(VISA)
        tx.saved_cards.save(bob)
        tx.commit()
    mastercard = replace(
        VISA, payment_method_id="pm_mc", brand="mastercard", last4="4444", exp_month=1, exp_year=2030,
        saved_at=T0 + HOUR,
    )
    with uow() as tx:
        assert tx.saved_cards.get("alice") == VISA
        tx.saved_cards.save(mastercard)
        tx.commit()
    with uow() as tx:
        assert tx.saved_cards.get("alice") == mastercard
        assert tx.saved_cards.forget("alice") == mastercard
        assert tx.saved_cards.forget("alice") is None
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.saved_cards.get("alice") is None
        assert tx.saved_cards.get("bob") == bob


def test_leaving_without_commit_stores_nothing(uow: Uow) -> None:
    with uow() as tx:
        tx.saved_cards.set_customer("alice", "cus_alice", T0)
        tx.saved_cards.save(VISA)
    with uow(read_only=True) as tx:
        assert tx.saved_cards.customer_id("alice") is None
        assert tx.saved_cards.get("alice") is None


def test_of_two_concurrent_first_customers_the_first_committed_is_the_one_stored(uow: Uow) -> None:
    answers: list[str] = []

    def second_request() -> None:
        with uow() as tx:
            answers.append(tx.saved_cards.set_customer("alice", "cus_second", T0))
            tx.commit()

    with uow() as tx:
        assert tx.saved_cards.set_customer("alice", "cus_first", T0) == "cus_first"
        racer = threading.Thread(target=second_request)
        racer.start()
        time.sleep(0.2)  # the second one now waits for this transaction (row lock, or the writer lock)
        assert answers == []
        tx.commit()
    racer.join(timeout=10)
    assert answers == ["cus_first"]
    with uow(read_only=True) as tx:
        assert tx.saved_cards.customer_id("alice") == "cus_first"
