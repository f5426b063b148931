"""A top-up's status after its PaymentIntent is created: which news moves it where, forward only.

The table is checked whole (every allowed and every refused move), then each move is driven through
apply_payment_event the way Stripe's webhooks arrive: late, out of order, and more than once.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import (
    assert_no_credits_moved,
    assert_store_unchanged,
    dispute_event,
    events_logged,
    intent_event,
    paid_top_up,
    refund,
    refund_event,
    snapshot,
    spendable,
    top_up_of,
)
from wallet_core.lifecycle import can_move, paid
from wallet_core.money import Credits, Usd
from wallet_core.service import Wallet
from wallet_core.topups import TopUpStatus

S = TopUpStatus

# Written out from the diagram in wallet_core/lifecycle.py and the table in apply_payment_event.py.
ALLOWED: dict[TopUpStatus, set[TopUpStatus]] = {
    S.PENDING: {S.SUCCEEDED, S.FAILED, S.CANCELED, S.NEEDS_REVIEW},
    S.FAILED: {S.SUCCEEDED, S.CANCELED, S.NEEDS_REVIEW},  # failed is not final: the buyer may retry
    S.SUCCEEDED: {S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED},
    S.PARTIALLY_REFUNDED: {S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED},
    S.DISPUTED: {S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTE_LOST},  # won / refunded / lost
    S.REFUNDED: {S.DISPUTED},
    S.CANCELED: set(),
    S.NEEDS_REVIEW: set(),
    S.DISPUTE_LOST: set(),
}
PAID = {S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED, S.DISPUTE_LOST}
UNPAID = set(S) - PAID


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.mark.parametrize(("current", "to"), list(itertools.product(S, S)), ids=lambda s: s.value)
def test_every_move_is_allowed_or_refused_as_the_table_says(current: TopUpStatus, to: TopUpStatus) -> None:
    assert can_move(current, to) is (to in ALLOWED[current])


def test_the_table_covers_every_status() -> None:
    assert set(ALLOWED) == set(S)


@pytest.mark.parametrize("status", list(S), ids=lambda s: s.value)
def test_paid_is_true_exactly_once_the_money_arrived(status: TopUpStatus) -> None:
    assert paid(status) is (status in PAID)


def test_status_only_moves_forward() -> None:
    for current, to in itertools.product(S, S):
        if not can_move(current, to):
            continue
        assert to is not S.PENDING  # nothing goes back to waiting
        if paid(current):
            assert paid(to), f"{current} -> {to} would forget that the money arrived"
    for final in (S.CANCELED, S.NEEDS_REVIEW, S.DISPUTE_LOST):
        assert not any(can_move(final, to) for to in S), f"{final} must be final"


# -- through the use case -------------------------------------------------------------------------


def _status(store: InMemoryStore, pi: str) -> TopUpStatus:
    return top_up_of(store, pi).status


def test_pending_payment_failed_moves_to_failed_and_grants_nothing(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id

    outcome = wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.payment_failed"))

    assert (outcome.outcome, outcome.credits_granted) == ("failed", None)
    assert outcome.top_up_id == top_up_of(store, pi).id
    assert _status(store, pi) is S.FAILED
    assert_no_credits_moved(store)


def test_failed_then_succeeded_grants_the_retry(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    assert wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.payment_failed")).outcome == "failed"
    # A second failed attempt (another event id): failed -> failed is no move, so it changes nothing.
    assert (
        wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.payment_failed")).outcome == "ignored_late"
    )
    assert _status(store, pi) is S.FAILED

    outcome = wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded"))

    assert (outcome.outcome, outcome.credits_granted) == ("granted", c("1000"))
    assert _status(store, pi) is S.SUCCEEDED
    assert spendable(wallet) == c("1000")
    assert wallet.verify() == []


@pytest.mark.parametrize("first", ["pending", "failed"])
def test_canceled_moves_to_canceled_and_a_later_success_never_grants(
    wallet: Wallet, first: str, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    if first == "failed":
        wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.payment_failed"))

    assert wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.canceled")).outcome == "canceled"
    assert _status(store, pi) is S.CANCELED

    late = wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded"))

    assert (late.outcome, late.credits_granted) == ("canceled", None)
    assert _status(store, pi) is S.CANCELED
    assert spendable(wallet) == Credits(0)
    assert_no_credits_moved(store)


@pytest.mark.parametrize("late", ["payment_intent.payment_failed", "payment_intent.canceled"])
def test_late_failure_or_cancel_after_success_changes_nothing(
    wallet: Wallet, late: str, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    top_up = paid_top_up(wallet, gateway, store, "10.00", "alice")
    pi = top_up.payment_intent_id
    transactions = dict(store.state.transactions)

    outcome = wallet.apply_payment_event(intent_event(gateway, pi, late))

    assert outcome.outcome == "ignored_late"
    assert outcome.top_up_id == top_up.id
    assert _status(store, pi) is S.SUCCEEDED
    assert store.state.transactions == transactions
    assert spendable(wallet) == c("1000")
    assert events_logged(store)[-1].outcome == "ignored_late"


@pytest.mark.parametrize(
    ("reached", "late"),
    [
        ("canceled", "payment_intent.payment_failed"),
        ("canceled", "payment_intent.canceled"),
        ("needs_review", "payment_intent.payment_failed"),
        ("needs_review", "payment_intent.canceled"),
        ("refunded", "payment_intent.payment_failed"),
        ("refunded", "payment_intent.canceled"),
        ("partially_refunded", "payment_intent.canceled"),
        ("disputed", "payment_intent.payment_failed"),
    ],
)
def test_news_that_would_move_a_status_back_is_ignored_late(
    wallet: Wallet, reached: str, late: str, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    if reached == "canceled":
        wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.canceled"))
    elif reached == "needs_review":
        gateway.intents[pi] = replace(gateway.intents[pi], amount_received=Usd(999))
        assert (
            wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded")).outcome == "needs_review"
        )
    else:
        wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded"))
        if reached == "refunded":
            wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 1000)))
        elif reached == "partially_refunded":
            wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 300)))
        else:
            wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))
    assert _status(store, pi).value == reached
    before = snapshot(store)

    outcome = wallet.apply_payment_event(intent_event(gateway, pi, late))

    assert outcome.outcome == "ignored_late"
    assert _status(store, pi).value == reached
    state, _ = before
    assert store.state.transactions == state.transactions
    assert store.state.lots == state.lots
    assert store.state.postings == state.postings
    assert store.state.top_ups == state.top_ups


def test_a_mismatched_amount_needs_review_from_failed_too(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.payment_failed"))
    gateway.intents[pi] = replace(gateway.intents[pi], amount_received=Usd(1))

    assert wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded")).outcome == "needs_review"
    assert _status(store, pi) is S.NEEDS_REVIEW
    assert_no_credits_moved(store)


def test_a_late_success_after_a_refund_grants_nothing_more(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = paid_top_up(wallet, gateway, store, "10.00", "alice").payment_intent_id
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 300)))

    outcome = wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded"))

    assert outcome.outcome == "already_granted"
    assert _status(store, pi) is S.PARTIALLY_REFUNDED
    assert spendable(wallet) == c("700")


@pytest.mark.parametrize(
    "news",
    ["failed", "canceled", "refund", "dispute"],
)
def test_the_same_event_id_twice_is_a_duplicate_and_moves_nothing(
    wallet: Wallet, news: str, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    if news in ("failed", "canceled"):
        pi = wallet.top_up("alice", "10.00").payment_intent_id
        event = intent_event(gateway, pi, f"payment_intent.{'payment_failed' if news == 'failed' else 'canceled'}")
        expected = news
    else:
        pi = paid_top_up(wallet, gateway, store, "10.00", "alice").payment_intent_id
        if news == "refund":
            event = refund_event(pi, refund("re_1", pi, 300))
            expected = "refunded"
        else:
            event = dispute_event(pi, "dp_1", 1000, "needs_response")
            expected = "dispute_opened"
    first = wallet.apply_payment_event(event)
    assert first.outcome == expected
    before = snapshot(store)

    again = wallet.apply_payment_event(event)

    assert again.outcome == "duplicate"
    assert again.top_up_id == first.top_up_id
    assert_store_unchanged(store, before)
    assert [e.outcome for e in events_logged(store) if e.event_id == event.id] == [expected]


def test_events_about_an_unpaid_top_up_move_no_credits(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id

    assert wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 1000))).outcome == "ignored"
    assert wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response")).outcome == "ignored"
    assert wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "lost")).outcome == "ignored"

    assert _status(store, pi) is S.PENDING
    assert_no_credits_moved(store)
    # A later success still grants everything: nothing was taken back in advance.
    assert wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.succeeded")).outcome == "granted"
    assert spendable(wallet) == c("1000")


def test_a_whole_life_walks_the_table(wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    seen = [_status(store, pi)]
    for event in (
        intent_event(gateway, pi, "payment_intent.payment_failed"),
        intent_event(gateway, pi, "payment_intent.succeeded"),
        refund_event(pi, refund("re_1", pi, 200)),
        dispute_event(pi, "dp_1", 800, "needs_response"),
        dispute_event(pi, "dp_1", 800, "won"),
        refund_event(pi, refund("re_1", pi, 200), refund("re_2", pi, 800)),
    ):
        wallet.apply_payment_event(event)
        seen.append(_status(store, pi))

    assert seen == [S.PENDING, S.FAILED, S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.DISPUTED, S.PARTIALLY_REFUNDED,
                    S.REFUNDED]
    for before, after in itertools.pairwise(seen):
        assert can_move(before, after)
    assert spendable(wallet) == Credits(0)
    assert wallet.verify() == []
