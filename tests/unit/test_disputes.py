"""The buyer's bank disputes a payment: its credits are frozen, then given back (won) or gone (lost)."""

from __future__ import annotations

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import (
    assert_no_credits_moved,
    charged,
    debt_of,
    dispute_event,
    lots,
    new_key,
    paid_top_up,
    postings_of,
    refund,
    refund_event,
    snapshot,
    spendable,
    sum_of_all_postings,
    system_balance,
    top_up_record,
    transactions_of,
)
from wallet_core.errors import InsufficientCredits
from wallet_core.ledger import Account, Posting, TransactionKind
from wallet_core.money import Credits
from wallet_core.refunds import top_up_lot_id
from wallet_core.service import Wallet
from wallet_core.topups import TopUp, TopUpStatus


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.fixture
def paid(wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore) -> TopUp:
    """A paid 10.00 USD top-up of alice's: 1000 credits."""
    return paid_top_up(wallet, gateway, store, "10.00", "alice")


def _status(store: InMemoryStore, top_up: TopUp) -> TopUpStatus:
    return top_up_record(store, top_up.id).status


def test_a_dispute_opened_freezes_the_credits(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    pi = charged(paid).payment_intent_id

    outcome = wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))

    assert (outcome.outcome, outcome.top_up_id) == ("dispute_opened", paid.id)
    assert spendable(wallet) == Credits(0)
    assert system_balance(store, Account.DISPUTED) == c("1000")
    assert _status(store, paid) is TopUpStatus.DISPUTED
    frozen = transactions_of(store, "alice")[-1]
    assert (frozen.kind, frozen.credits, frozen.reference_id, frozen.actor) == (
        TransactionKind.DISPUTE,
        c("-1000"),
        "dispute:dp_1",
        "stripe",
    )
    assert sorted(postings_of(store, frozen.id), key=lambda p: p.amount) == [
        Posting(Account.WALLET, c("-1000"), "alice", top_up_lot_id(pi)),
        Posting(Account.DISPUTED, c("1000")),
    ]
    assert wallet.verify() == []


def test_a_partial_dispute_freezes_its_share(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    wallet.apply_payment_event(dispute_event(paid.payment_intent_id, "dp_1", 400, "warning_needs_response"))
    assert spendable(wallet) == c("600")
    assert system_balance(store, Account.DISPUTED) == c("400")


def test_a_dispute_won_gives_the_credits_back(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    pi = charged(paid).payment_intent_id
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))

    outcome = wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "won"))

    assert outcome.outcome == "dispute_won"
    assert spendable(wallet) == c("1000")
    assert system_balance(store, Account.DISPUTED) == Credits(0)
    assert _status(store, paid) is TopUpStatus.SUCCEEDED
    assert transactions_of(store, "alice")[-1].kind is TransactionKind.DISPUTE_WON
    assert {lot.id: lot.remaining for lot in lots(store)} == {top_up_lot_id(pi): c("1000")}
    assert wallet.verify() == []
    wallet.spend("alice", "1000", idempotency_key=new_key(), reason="usage", actor="service:api")  # spendable again


def test_a_dispute_lost_books_the_frozen_credits_out(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    pi = paid.payment_intent_id
    wallet.spend("alice", "200", idempotency_key=new_key(), reason="usage", actor="service:api")
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))
    assert spendable(wallet) == c("-200")  # 800 left were frozen, 200 owed
    funding = system_balance(store, Account.STRIPE_FUNDING)

    outcome = wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "lost"))

    assert outcome.outcome == "dispute_lost"
    assert spendable(wallet) == c("-200")  # the loss itself does not touch the user's balance
    assert debt_of(store, "alice") == c("200")
    assert system_balance(store, Account.DISPUTED) == Credits(0)
    assert system_balance(store, Account.STRIPE_FUNDING) == funding + c("1000")
    assert _status(store, paid) is TopUpStatus.DISPUTE_LOST
    lost = transactions_of(store, "alice")[-1]
    assert (lost.kind, lost.credits, lost.reference_id) == (
        TransactionKind.DISPUTE_LOST,
        Credits(0),
        "dispute_closed:dp_1",
    )
    assert wallet.verify() == []
    assert sum_of_all_postings(store) == Credits(0)


def test_a_dispute_after_the_credits_were_spent_puts_the_wallet_in_debt(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    wallet.spend("alice", "1000", idempotency_key=new_key(), reason="usage", actor="service:api")

    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))

    assert spendable(wallet) == c("-1000")
    assert wallet.verify() == []
    with pytest.raises(InsufficientCredits):
        wallet.spend("alice", "1", idempotency_key=new_key(), reason="usage", actor="service:api")
    with pytest.raises(InsufficientCredits):
        wallet.hold("alice", "1", idempotency_key=new_key(), reason="reserve", actor="service:api")

    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "won"))  # won: the debt is repaid

    assert spendable(wallet) == Credits(0)
    assert debt_of(store, "alice") == Credits(0)
    assert wallet.verify() == []


def test_a_dispute_takes_other_credits_before_going_into_debt(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    wallet.spend("alice", "700", idempotency_key=new_key(), reason="usage", actor="service:api")
    wallet.grant("alice", "500", reason="promo", granted_by="admin")

    wallet.apply_payment_event(dispute_event(paid.payment_intent_id, "dp_1", 1000, "needs_response"))

    assert spendable(wallet) == c("-200")  # 300 from the top-up, 500 promotional, 200 owed
    assert debt_of(store, "alice") == c("200")
    assert wallet.verify() == []


def test_a_top_up_repays_a_dispute_debt_first(
    wallet: Wallet, paid: TopUp, gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    wallet.spend("alice", "1000", idempotency_key=new_key(), reason="usage", actor="service:api")
    wallet.apply_payment_event(dispute_event(paid.payment_intent_id, "dp_1", 500, "needs_response"))
    wallet.apply_payment_event(dispute_event(paid.payment_intent_id, "dp_1", 500, "lost"))

    paid_top_up(wallet, gateway, store, "10.00", "alice")

    assert spendable(wallet) == c("500")
    assert debt_of(store, "alice") == Credits(0)
    assert wallet.verify() == []


def test_a_dispute_won_before_we_saw_it_open_is_ignored_late(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    transactions = dict(store.state.transactions)

    outcome = wallet.apply_payment_event(dispute_event(paid.payment_intent_id, "dp_won", 1000, "won"))
    assert (outcome.outcome, outcome.top_up_id) == ("ignored_late", paid.id)

    # Only a marker that moves nothing was added, so a late `created` can tell the dispute is over.
    added = [t for i, t in store.state.transactions.items() if i not in transactions]
    assert [t.reference_id for t in added] == ["dispute_closed:dp_won"]
    assert added[0].credits == c("0") and added[0].held_change == c("0")
    assert spendable(wallet) == c("1000")
    assert _status(store, paid) is TopUpStatus.SUCCEEDED
    assert wallet.verify() == []


def test_a_dispute_lost_whose_opening_was_missed_still_takes_the_credits(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    outcome = wallet.apply_payment_event(dispute_event(paid.payment_intent_id, "dp_lost", 1000, "lost"))

    assert (outcome.outcome, outcome.top_up_id) == ("dispute_lost", paid.id)
    assert spendable(wallet) == c("0")  # the money is gone, so are its credits
    assert _status(store, paid) is TopUpStatus.DISPUTE_LOST
    assert wallet.apply_payment_event(
        dispute_event(paid.payment_intent_id, "dp_lost", 1000, "needs_response")
    ).outcome == ("ignored_late")
    assert spendable(wallet) == c("0")
    assert wallet.verify() == []


def test_a_dispute_created_event_arriving_after_it_closed_freezes_nothing(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    assert wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "won")).outcome == "ignored_late"

    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))  # delivered out of order

    assert spendable(wallet) == c("1000")
    assert system_balance(store, Account.DISPUTED) == Credits(0)


def test_the_same_dispute_event_twice_is_a_duplicate(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    opened = dispute_event(paid.payment_intent_id, "dp_1", 1000, "needs_response")
    closed = dispute_event(paid.payment_intent_id, "dp_1", 1000, "won")
    wallet.apply_payment_event(opened)
    before = snapshot(store)
    assert wallet.apply_payment_event(opened).outcome == "duplicate"
    assert (store.state, store.commits) == before

    wallet.apply_payment_event(closed)
    before = snapshot(store)
    assert wallet.apply_payment_event(closed).outcome == "duplicate"
    assert (store.state, store.commits) == before
    assert spendable(wallet) == c("1000")


@pytest.mark.parametrize("result", ["won", "lost"])
def test_one_dispute_reported_by_several_events_moves_credits_once(
    wallet: Wallet, paid: TopUp, result: str, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    outcomes = [
        wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "warning_needs_response")).outcome,
        wallet.apply_payment_event(
            dispute_event(pi, "dp_1", 1000, "needs_response")
        ).outcome,  # another created/updated
        wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, result)).outcome,
        wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, result)).outcome,  # closed again, new event id
        wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "won" if result == "lost" else "lost")).outcome,
    ]

    assert outcomes == ["dispute_opened", "dispute_open", f"dispute_{result}", "duplicate", "duplicate"]
    assert spendable(wallet) == (c("1000") if result == "won" else Credits(0))
    assert system_balance(store, Account.DISPUTED) == Credits(0)
    kinds = [t.kind for t in transactions_of(store, "alice")]
    closing = TransactionKind.DISPUTE_WON if result == "won" else TransactionKind.DISPUTE_LOST
    assert kinds == [TransactionKind.TOP_UP, TransactionKind.DISPUTE, closing]
    assert wallet.verify() == []


def test_a_dispute_of_a_top_up_never_paid_is_ignored(wallet: Wallet, store: InMemoryStore) -> None:
    pending = wallet.top_up("alice", "10.00")
    outcome = wallet.apply_payment_event(dispute_event(pending.payment_intent_id, "dp_1", 1000, "needs_response"))
    assert (outcome.outcome, outcome.top_up_id) == ("ignored", pending.top_up_id)
    assert_no_credits_moved(store)


@pytest.mark.parametrize("pi", ["pi_not_ours", None])
def test_a_dispute_of_a_payment_we_do_not_know_is_ignored(wallet: Wallet, paid: TopUp, pi: str | None) -> None:
    assert wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response")).outcome == "ignored"
    assert spendable(wallet) == c("1000")


def test_a_dispute_won_after_a_partial_refund_leaves_the_top_up_partially_refunded(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 300)))
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 700, "needs_response"))
    assert spendable(wallet) == Credits(0)

    wallet.apply_payment_event(dispute_event(pi, "dp_1", 700, "won"))

    assert spendable(wallet) == c("700")
    assert _status(store, paid) is TopUpStatus.PARTIALLY_REFUNDED
    assert wallet.verify() == []


def test_a_dispute_of_a_refunded_payment_never_takes_more_than_the_top_up_bought(
    wallet: Wallet, paid: TopUp
) -> None:
    pi = paid.payment_intent_id
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 1000)))
    assert spendable(wallet) == Credits(0)

    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "needs_response"))
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 1000, "lost"))

    assert spendable(wallet) == Credits(0)  # the refund took everything already


# -- several disputes of one payment: together with its refunds they never take more than it granted --------


def test_five_disputes_of_one_payment_freeze_its_credits_once(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    wallet.spend("alice", "300", idempotency_key=new_key(), reason="usage", actor="service:api")

    outcomes = [
        wallet.apply_payment_event(dispute_event(pi, f"dp_{n}", 1000, "needs_response")).outcome for n in range(5)
    ]

    assert outcomes == ["dispute_opened"] * 5
    assert spendable(wallet) == c("-300")  # the 1000 bought, less the 300 spent: not -4300
    assert debt_of(store, "alice") == c("300")
    assert system_balance(store, Account.DISPUTED) == c("1000")
    assert [t.credits for t in transactions_of(store, "alice")[-5:]] == [c("-1000")] + [Credits(0)] * 4
    assert wallet.verify() == []


def test_a_second_dispute_freezes_only_what_the_first_left(wallet: Wallet, paid: TopUp, store: InMemoryStore) -> None:
    pi = paid.payment_intent_id
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 600, "needs_response"))
    wallet.apply_payment_event(dispute_event(pi, "dp_2", 600, "needs_response"))

    assert system_balance(store, Account.DISPUTED) == c("1000")
    assert spendable(wallet) == Credits(0)

    wallet.apply_payment_event(dispute_event(pi, "dp_1", 600, "won"))  # gives back its 600, no more

    assert spendable(wallet) == c("600")
    assert _status(store, paid) is TopUpStatus.DISPUTED  # dp_2 is still open
    wallet.apply_payment_event(dispute_event(pi, "dp_2", 600, "lost"))
    assert spendable(wallet) == c("600")
    assert system_balance(store, Account.DISPUTED) == Credits(0)
    assert _status(store, paid) is TopUpStatus.DISPUTE_LOST
    assert wallet.verify() == []


def test_winning_every_dispute_gives_back_exactly_what_was_bought(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    for n in range(3):
        wallet.apply_payment_event(dispute_event(pi, f"dp_{n}", 1000, "needs_response"))
    for n in range(3):
        assert wallet.apply_payment_event(dispute_event(pi, f"dp_{n}", 1000, "won")).outcome == "dispute_won"

    assert spendable(wallet) == c("1000")
    assert system_balance(store, Account.DISPUTED) == Credits(0)
    assert _status(store, paid) is TopUpStatus.SUCCEEDED
    assert wallet.verify() == []


def test_a_refund_during_a_dispute_takes_only_what_the_dispute_left(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 800, "needs_response"))  # freezes 800 of 1000

    assert wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 500))).outcome == "refunded"

    assert spendable(wallet) == Credits(0)  # 200 taken back, not 500
    assert system_balance(store, Account.DISPUTED) == c("800")
    assert wallet.verify() == []
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 800, "lost"))
    assert spendable(wallet) == Credits(0)
    assert wallet.verify() == []


def test_a_dispute_lost_unseen_counts_against_the_next_dispute(
    wallet: Wallet, paid: TopUp, store: InMemoryStore
) -> None:
    pi = paid.payment_intent_id
    wallet.apply_payment_event(dispute_event(pi, "dp_1", 700, "lost"))  # its `created` was missed: 700 taken

    wallet.apply_payment_event(dispute_event(pi, "dp_2", 700, "needs_response"))

    assert spendable(wallet) == Credits(0)  # 300 frozen, not 700
    assert system_balance(store, Account.DISPUTED) == c("300")
    assert wallet.verify() == []
