"""The TopUpRepository contract (tx.top_ups) for every backend.

The in-memory fake is what the unit tests trust, so it must behave like the databases do: every test
here runs the same calls on each backend (tests/contract/conftest.py) and expects the very same answers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.contract.builders import HOUR, T0, Uow, top_up
from wallet_core.errors import DuplicateTopUp, NotFound
from wallet_core.money import Credits, Usd
from wallet_core.topups import TopUpActivity, TopUpStatus


# -- top-ups ---------------------------------------------------------------------------------------
def test_top_ups_are_added_and_found_three_ways(uow: Uow) -> None:
    recorded = top_up()
    with uow() as tx:
        tx.top_ups.add(recorded)
        tx.top_ups.add(top_up("tu_2", intent="pi_2", key=None))
        tx.top_ups.add(top_up("tu_3", intent="pi_3", key=None))  # many top-ups without a key
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == recorded
        assert tx.top_ups.find_by_payment_intent("pi_1") == recorded
        assert tx.top_ups.find_by_idempotency_key("alice", "key-1") == recorded
        assert tx.top_ups.find_by_idempotency_key("bob", "key-1") is None
        assert tx.top_ups.get("tu_404") is None
        assert tx.top_ups.find_by_payment_intent("pi_404") is None
        without_key = tx.top_ups.get("tu_2")
    assert without_key is not None and without_key.idempotency_key is None


def _activity(uow: Uow, user: str = "alice", *, now: datetime = T0 + HOUR) -> TopUpActivity:
    with uow() as tx:
        tx.top_ups.lock(user)
        return tx.top_ups.activity(user, open_since=now - 24 * HOUR, started_since=now - HOUR)


def test_top_up_activity_counts_open_top_ups_and_all_top_ups_started_each_with_its_oldest(uow: Uow) -> None:
    now = T0 + HOUR
    with uow() as tx:
        for n, (at, status) in enumerate(
            [(T0, TopUpStatus.PENDING),  # open; started exactly an hour ago: on the edge, out of the hour
             (now - HOUR / 2, TopUpStatus.FAILED),  # open (its intent can still be paid), and started
             (now - HOUR / 4, TopUpStatus.SUCCEEDED),  # started, no longer open
             (now - timedelta(seconds=1), TopUpStatus.CANCELED),  # started, no longer open
             (now - 25 * HOUR, TopUpStatus.PENDING)],  # older than the open window: neither
            start=1,
        ):
            tx.top_ups.add(replace(top_up(f"tu_{n}", intent=f"pi_{n}", key=None), created_at=at, status=status))
        tx.top_ups.add(replace(top_up("tu_bob", user="bob", intent="pi_bob", key=None), created_at=now))
        tx.commit()
    with uow() as tx:
        tx.top_ups.add(replace(top_up("tu_left", intent="pi_left", key=None), created_at=now))  # not committed

    assert _activity(uow, now=now) == TopUpActivity(
        open_top_ups=2, oldest_open_top_up=T0, started=3, oldest_started=now - HOUR / 2
    )
    assert _activity(uow, "bob", now=now) == TopUpActivity(1, now, 1, now)
    assert _activity(uow, "nobody", now=now) == TopUpActivity()


def test_the_same_idempotency_key_for_the_same_user_is_a_duplicate(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.commit()
    with uow() as tx:
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.add(top_up("tu_2", intent="pi_2", key="key-1"))
        tx.rollback()
        assert tx.top_ups.find_by_idempotency_key("alice", "key-1") == top_up()
        tx.top_ups.add(top_up("tu_bob", user="bob", intent="pi_bob", key="key-1"))  # other user: fine
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_2") is None
        assert tx.top_ups.get("tu_bob") is not None


def test_the_same_payment_intent_is_a_duplicate(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.add(top_up("tu_2", intent="pi_1", key="key-2"))
        with pytest.raises(DuplicateTopUp):
            tx.top_ups.add(top_up("tu_1", intent="pi_9", key="key-9"))  # same id
        tx.top_ups.add(top_up("tu_3", intent="pi_3", key="key-3"))  # still usable, no rollback
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_2") is None
        assert tx.top_ups.find_by_payment_intent("pi_1") == top_up()
        assert tx.top_ups.get("tu_3") is not None


def test_set_top_up_status_persists(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.commit()
    with uow() as tx:
        tx.top_ups.set_status("tu_1", TopUpStatus.SUCCEEDED, T0)
        with pytest.raises(NotFound):
            tx.top_ups.set_status("tu_404", TopUpStatus.SUCCEEDED, T0)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == replace(top_up(), status=TopUpStatus.SUCCEEDED)
        tx.top_ups.set_status("tu_1", TopUpStatus.NEEDS_REVIEW, T0)  # not committed
    with uow() as tx:
        found = tx.top_ups.find_by_payment_intent("pi_1")
    assert found is not None and found.status is TopUpStatus.SUCCEEDED


def test_update_top_up_stores_status_and_refunds_and_an_unknown_top_up_is_not_found(uow: Uow) -> None:
    with uow() as tx:
        tx.top_ups.add(top_up())
        tx.top_ups.add(top_up("tu_2", intent="pi_2", key=None))
        tx.commit()
    with uow() as tx:
        fresh = tx.top_ups.get("tu_1")
    assert fresh is not None and (fresh.refunded, fresh.credits_refunded) == (Usd(0), Credits(0))
    partly = replace(top_up(), status=TopUpStatus.PARTIALLY_REFUNDED, refunded=Usd(301), credits_refunded=Credits(3010))
    with uow() as tx:
        tx.top_ups.update(partly, T0)
        with pytest.raises(NotFound):
            tx.top_ups.update(replace(partly, id="tu_404"), T0)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == partly
        assert tx.top_ups.find_by_payment_intent("pi_1") == partly
        assert tx.top_ups.find_by_idempotency_key("alice", "key-1") == partly
        assert tx.top_ups.get("tu_404") is None
        assert tx.top_ups.get("tu_2") == top_up("tu_2", intent="pi_2", key=None)  # the other is untouched
        # only status, refunded and credits_refunded are stored: the rest of the record stays as it was
        tx.top_ups.update(
            replace(
                partly,
                amount=Usd(1),
                credits=Credits(1),
                user_id="mallory",
                status=TopUpStatus.REFUNDED,
                refunded=Usd(1000),
                credits_refunded=Credits(10000),
            ),
            T0,
        )
        tx.commit()
    refunded = replace(partly, status=TopUpStatus.REFUNDED, refunded=Usd(1000), credits_refunded=Credits(10000))
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == refunded
        tx.top_ups.set_status("tu_1", TopUpStatus.DISPUTED, T0)  # keeps the refunded amounts
        assert tx.top_ups.get("tu_1") == replace(refunded, status=TopUpStatus.DISPUTED)
        tx.top_ups.update(replace(refunded, status=TopUpStatus.DISPUTE_LOST), T0)  # not committed
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == refunded


def test_a_top_up_added_with_refunds_keeps_them(uow: Uow) -> None:
    recorded = replace(top_up(), status=TopUpStatus.REFUNDED, refunded=Usd(1000), credits_refunded=Credits(10000))
    with uow() as tx:
        tx.top_ups.add(recorded)
        tx.commit()
    with uow() as tx:
        assert tx.top_ups.get("tu_1") == recorded
