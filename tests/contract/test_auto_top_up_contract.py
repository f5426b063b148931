"""The AutoTopUpRules contract (tx.auto_top_ups) for every backend: each wallet's rule, the one automatic
top-up it may have in flight, the worker's claim with a lease, and what counts against a monthly limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from tests.contract.builders import HOUR, T0, Uow
from wallet_core.auto_top_up import AttemptOutcome, AutoCharge, AutoTopUpAttempt, AutoTopUpRule
from wallet_core.errors import AutoTopUpInFlight, DuplicateTopUp
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUp, TopUpStatus

RULE = AutoTopUpRule(
    user_id="alice",
    threshold=Credits(50_000),
    target=Credits(200_000),
    amount=None,
    monthly_limit=Usd(20_000),
    updated_at=T0,
)
CHARGE = AutoCharge("tu_a1", "alice", Usd(1600), "cus_alice", "pm_visa", T0, T0)


def automatic(top_up_id: str, cents: int, status: TopUpStatus = TopUpStatus.PENDING, *, user: str = "alice",
              at: datetime = T0, intent: str | None = None) -> TopUp:
    return TopUp(top_up_id, user, Usd(cents), "usd", Credits(cents * 100), status, intent, at, automatic=True)


def test_a_rule_is_stored_replaced_read_back_exactly_and_removed(uow: Uow) -> None:
    attempt = AutoTopUpAttempt(T0 + HOUR, AttemptOutcome.FAILED, Usd(1600), "tu_a1", "pi_1", "card_declined",
                               "Your card was declined.")
    fixed = replace(RULE, target=None, amount=Usd(2000), monthly_limit=None, consecutive_failures=3,
                    disabled_at=T0 + HOUR, last_attempt=attempt)
    with uow() as tx:
        assert tx.auto_top_ups.get("alice") is None
        tx.auto_top_ups.put(RULE)
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.auto_top_ups.get("alice") == RULE
    with uow() as tx:
        tx.auto_top_ups.put(fixed)
        tx.commit()
    with uow() as tx:
        assert tx.auto_top_ups.get("alice") == fixed
        assert tx.auto_top_ups.get("bob") is None
        assert tx.auto_top_ups.delete("alice") is True
        assert tx.auto_top_ups.delete("alice") is False
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.auto_top_ups.get("alice") is None


def test_one_charge_in_flight_per_wallet(uow: Uow) -> None:
    with uow() as tx:
        tx.auto_top_ups.add_charge(CHARGE)
        tx.commit()
    with uow() as tx:
        with pytest.raises(AutoTopUpInFlight):
            tx.auto_top_ups.add_charge(replace(CHARGE, top_up_id="tu_a2"))
    with uow() as tx:
        tx.auto_top_ups.add_charge(replace(CHARGE, top_up_id="tu_b1", user_id="bob"))
        assert tx.auto_top_ups.charge_of("alice") == CHARGE
        finished = tx.auto_top_ups.finish_charge("tu_a1")
        assert finished == CHARGE
        assert tx.auto_top_ups.finish_charge("tu_a1") is None  # once: whoever finishes it counts the outcome
        assert tx.auto_top_ups.charge_of("alice") is None
        tx.auto_top_ups.add_charge(replace(CHARGE, top_up_id="tu_a2"))  # free again
        tx.commit()


def test_claims_lease_the_due_charges_oldest_first_and_count_attempts(uow: Uow) -> None:
    with uow() as tx:
        tx.auto_top_ups.add_charge(replace(CHARGE, due_at=T0 + HOUR))
        tx.auto_top_ups.add_charge(replace(CHARGE, top_up_id="tu_b1", user_id="bob", due_at=T0))
        tx.auto_top_ups.add_charge(replace(CHARGE, top_up_id="tu_c1", user_id="carol", due_at=T0 + 3 * HOUR))
        tx.auto_top_ups.add_charge(replace(CHARGE, top_up_id="tu_d1", user_id="dave", due_at=None))  # sent
        tx.commit()
    lease = T0 + 2 * HOUR + HOUR / 2
    with uow() as tx:
        claimed = tx.auto_top_ups.claim_charges(T0 + 2 * HOUR, lease, 10)
        tx.commit()
    assert [(c.user_id, c.attempts, c.due_at) for c in claimed] == [("bob", 1, lease), ("alice", 1, lease)]
    with uow() as tx:
        assert tx.auto_top_ups.claim_charges(T0 + 2 * HOUR, lease, 10) == []  # leased
        again = tx.auto_top_ups.claim_charges(lease, lease + HOUR, 1)
        assert [(c.user_id, c.attempts) for c in again] == [("alice", 2)]  # leased alike: by user id
        tx.commit()


def test_a_charge_saved_after_it_was_finished_is_not_brought_back(uow: Uow) -> None:
    with uow() as tx:
        tx.auto_top_ups.add_charge(CHARGE)
        sent = replace(CHARGE, due_at=None, attempts=2, payment_intent_id="pi_1", customer_id="cus_new",
                       payment_method_id="pm_new")
        assert tx.auto_top_ups.save_charge(sent) is True
        assert tx.auto_top_ups.charge_of("alice") == sent
        tx.auto_top_ups.finish_charge(CHARGE.top_up_id)
        assert tx.auto_top_ups.save_charge(replace(CHARGE, due_at=T0 + HOUR)) is False
        assert tx.auto_top_ups.charge_of("alice") is None
        tx.commit()


def test_the_monthly_sum_counts_automatic_top_ups_pending_or_paid_since_a_time(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(automatic("tu_1", 1000))  # pending, no PaymentIntent yet
        tx.top_ups.add(automatic("tu_2", 2000, TopUpStatus.SUCCEEDED, intent="pi_2"))
        tx.top_ups.add(automatic("tu_3", 4000, TopUpStatus.REFUNDED, intent="pi_3"))  # charged, then refunded
        tx.top_ups.add(automatic("tu_4", 8000, TopUpStatus.FAILED, intent="pi_4"))  # not charged
        tx.top_ups.add(automatic("tu_5", 16000, at=T0 - HOUR))  # before
        tx.top_ups.add(automatic("tu_6", 32000, user="bob"))
        tx.top_ups.add(replace(automatic("tu_7", 64000, intent="pi_7"), automatic=False))  # bought by hand
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.auto_top_ups.charged_since("alice", T0) == Usd(7000)
        assert tx.auto_top_ups.charged_since("alice", T0 - HOUR) == Usd(23000)
        stored = tx.top_ups.get("tu_1")
        assert stored is not None and stored.automatic and stored.payment_intent_id is None


def test_an_automatic_top_up_gets_its_payment_intent_once(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(automatic("tu_1", 1000))
        tx.top_ups.add(automatic("tu_2", 1000))  # two without an intent: no conflict
        tx.top_ups.set_payment_intent("tu_1", "pi_1", T0)
        tx.top_ups.set_payment_intent("tu_1", "pi_1", T0)  # the same again: nothing changes
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.set_payment_intent("tu_2", "pi_1", T0)  # another top-up's intent
        tx.commit()
    with uow(read_only=True) as tx:
        found = tx.top_ups.find_by_payment_intent("pi_1")
        assert found is not None and found.id == "tu_1" and found.automatic


def test_automatic_top_ups_count_against_none_of_the_users_own_top_up_limits(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(automatic("tu_1", 1000))  # pending
        tx.top_ups.add(automatic("tu_2", 1000, TopUpStatus.FAILED, intent="pi_2"))  # failed: open for a user's own
        tx.commit()
    with uow(read_only=True) as tx:
        activity = tx.top_ups.activity("alice", open_since=T0 - HOUR, started_since=T0 - HOUR)
    assert (activity.open_top_ups, activity.started) == (0, 0)
