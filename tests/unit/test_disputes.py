"""The buyer's bank disputes a payment: its credits are frozen, then given back (won) or gone (lost)."""

from __future__ import annotations

import pytest

from tests.unit.helpers import (
    WalletDriver,
    assert_no_credits_moved,
    dispute_event,
    postings_of,
    refund,
    refund_event,
    snapshot,
    sum_of_all_postings,
    system_balance,
    transactions_of,
)
from wallet_core.errors import InsufficientCredits
from wallet_core.ledger import Account, Posting, TransactionKind
from wallet_core.money import Credits
from wallet_core.refunds import top_up_lot_id
from wallet_core.topups import TopUp, TopUpStatus


def c(text: str) -> Credits:
    return Credits.parse(text)


@pytest.fixture
def paid(wallet: WalletDriver) -> TopUp:
    """A paid 10.00 USD top-up of alice's: 1000 credits."""
    return wallet.paid("10.00")


def _status(wallet: WalletDriver, top_up: TopUp) -> TopUpStatus:
    return wallet.top_up_record(top_up.id).status


def test_a_dispute_opened_freezes_the_credits(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id

    outcome = wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response"))

    assert (outcome.outcome, outcome.top_up_id) == ("dispute_opened", paid.id)
    assert wallet.spendable() == Credits(0)
    assert system_balance(wallet.store, Account.DISPUTED) == c("1000")
    assert _status(wallet, paid) is TopUpStatus.DISPUTED
    frozen = transactions_of(wallet.store, "alice")[-1]
    assert (frozen.kind, frozen.credits, frozen.reference_id, frozen.actor) == (
        TransactionKind.DISPUTE,
        c("-1000"),
        "dispute:dp_1",
        "stripe",
    )
    assert sorted(postings_of(wallet.store, frozen.id), key=lambda p: p.amount) == [
        Posting(Account.WALLET, c("-1000"), "alice", top_up_lot_id(pi)),
        Posting(Account.DISPUTED, c("1000")),
    ]
    assert wallet.verify() == []


def test_a_partial_dispute_freezes_its_share(wallet: WalletDriver, paid: TopUp) -> None:
    wallet.deliver(dispute_event(paid.payment_intent_id, "dp_1", 400, "warning_needs_response"))
    assert wallet.spendable() == c("600")
    assert system_balance(wallet.store, Account.DISPUTED) == c("400")


def test_a_dispute_won_gives_the_credits_back(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response"))

    outcome = wallet.deliver(dispute_event(pi, "dp_1", 1000, "won"))

    assert outcome.outcome == "dispute_won"
    assert wallet.spendable() == c("1000")
    assert system_balance(wallet.store, Account.DISPUTED) == Credits(0)
    assert _status(wallet, paid) is TopUpStatus.SUCCEEDED
    assert transactions_of(wallet.store, "alice")[-1].kind is TransactionKind.DISPUTE_WON
    assert {lot.id: lot.remaining for lot in wallet.lots()} == {top_up_lot_id(pi): c("1000")}
    assert wallet.verify() == []
    wallet.spend("1000")  # spendable again


def test_a_dispute_lost_books_the_frozen_credits_out(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.spend("200")
    wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response"))
    assert wallet.spendable() == c("-200")  # 800 left were frozen, 200 owed
    funding = system_balance(wallet.store, Account.STRIPE_FUNDING)

    outcome = wallet.deliver(dispute_event(pi, "dp_1", 1000, "lost"))

    assert outcome.outcome == "dispute_lost"
    assert wallet.spendable() == c("-200")  # the loss itself does not touch the user's balance
    assert wallet.debt() == c("200")
    assert system_balance(wallet.store, Account.DISPUTED) == Credits(0)
    assert system_balance(wallet.store, Account.STRIPE_FUNDING) == funding + c("1000")
    assert _status(wallet, paid) is TopUpStatus.DISPUTE_LOST
    lost = transactions_of(wallet.store, "alice")[-1]
    assert (lost.kind, lost.credits, lost.reference_id) == (
        TransactionKind.DISPUTE_LOST,
        Credits(0),
        "dispute_closed:dp_1",
    )
    assert wallet.verify() == []
    assert sum_of_all_postings(wallet.store) == Credits(0)


def test_a_dispute_after_the_credits_were_spent_puts_the_wallet_in_debt(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.spend("1000")

    wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response"))

    assert wallet.spendable() == c("-1000")
    assert wallet.verify() == []
    with pytest.raises(InsufficientCredits):
        wallet.spend("1")
    with pytest.raises(InsufficientCredits):
        wallet.hold("1")

    wallet.deliver(dispute_event(pi, "dp_1", 1000, "won"))  # won: the debt is repaid

    assert wallet.spendable() == Credits(0)
    assert wallet.debt() == Credits(0)
    assert wallet.verify() == []


def test_a_dispute_takes_other_credits_before_going_into_debt(wallet: WalletDriver, paid: TopUp) -> None:
    wallet.spend("700")
    wallet.grant("500")

    wallet.deliver(dispute_event(paid.payment_intent_id, "dp_1", 1000, "needs_response"))

    assert wallet.spendable() == c("-200")  # 300 from the top-up, 500 promotional, 200 owed
    assert wallet.debt() == c("200")
    assert wallet.verify() == []


def test_a_top_up_repays_a_dispute_debt_first(wallet: WalletDriver, paid: TopUp) -> None:
    wallet.spend("1000")
    wallet.deliver(dispute_event(paid.payment_intent_id, "dp_1", 500, "needs_response"))
    wallet.deliver(dispute_event(paid.payment_intent_id, "dp_1", 500, "lost"))

    wallet.paid("10.00")

    assert wallet.spendable() == c("500")
    assert wallet.debt() == Credits(0)
    assert wallet.verify() == []


def test_a_dispute_won_before_we_saw_it_open_is_ignored_late(wallet: WalletDriver, paid: TopUp) -> None:
    transactions = dict(wallet.store.state.transactions)

    outcome = wallet.deliver(dispute_event(paid.payment_intent_id, "dp_won", 1000, "won"))
    assert (outcome.outcome, outcome.top_up_id) == ("ignored_late", paid.id)

    # Only a marker that moves nothing was added, so a late `created` can tell the dispute is over.
    added = [t for i, t in wallet.store.state.transactions.items() if i not in transactions]
    assert [t.reference_id for t in added] == ["dispute_closed:dp_won"]
    assert added[0].credits == c("0") and added[0].held_change == c("0")
    assert wallet.spendable() == c("1000")
    assert _status(wallet, paid) is TopUpStatus.SUCCEEDED
    assert wallet.verify() == []


def test_a_dispute_lost_whose_opening_was_missed_still_takes_the_credits(wallet: WalletDriver, paid: TopUp) -> None:
    outcome = wallet.deliver(dispute_event(paid.payment_intent_id, "dp_lost", 1000, "lost"))

    assert (outcome.outcome, outcome.top_up_id) == ("dispute_lost", paid.id)
    assert wallet.spendable() == c("0")  # the money is gone, so are its credits
    assert _status(wallet, paid) is TopUpStatus.DISPUTE_LOST
    assert wallet.deliver(dispute_event(paid.payment_intent_id, "dp_lost", 1000, "needs_response")).outcome == (
        "ignored_late"
    )
    assert wallet.spendable() == c("0")
    assert wallet.verify() == []


def test_a_dispute_created_event_arriving_after_it_closed_freezes_nothing(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    assert wallet.deliver(dispute_event(pi, "dp_1", 1000, "won")).outcome == "ignored_late"

    wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response"))  # delivered out of order

    assert wallet.spendable() == c("1000")
    assert system_balance(wallet.store, Account.DISPUTED) == Credits(0)


def test_the_same_dispute_event_twice_is_a_duplicate(wallet: WalletDriver, paid: TopUp) -> None:
    opened = dispute_event(paid.payment_intent_id, "dp_1", 1000, "needs_response")
    closed = dispute_event(paid.payment_intent_id, "dp_1", 1000, "won")
    wallet.deliver(opened)
    before = snapshot(wallet.store)
    assert wallet.deliver(opened).outcome == "duplicate"
    assert (wallet.store.state, wallet.store.commits) == before

    wallet.deliver(closed)
    before = snapshot(wallet.store)
    assert wallet.deliver(closed).outcome == "duplicate"
    assert (wallet.store.state, wallet.store.commits) == before
    assert wallet.spendable() == c("1000")


@pytest.mark.parametrize("result", ["won", "lost"])
def test_one_dispute_reported_by_several_events_moves_credits_once(
    wallet: WalletDriver, paid: TopUp, result: str
) -> None:
    pi = paid.payment_intent_id
    outcomes = [
        wallet.deliver(dispute_event(pi, "dp_1", 1000, "warning_needs_response")).outcome,
        wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response")).outcome,  # another created/updated
        wallet.deliver(dispute_event(pi, "dp_1", 1000, result)).outcome,
        wallet.deliver(dispute_event(pi, "dp_1", 1000, result)).outcome,  # closed again, new event id
        wallet.deliver(dispute_event(pi, "dp_1", 1000, "won" if result == "lost" else "lost")).outcome,
    ]

    assert outcomes == ["dispute_opened", "dispute_open", f"dispute_{result}", "duplicate", "duplicate"]
    assert wallet.spendable() == (c("1000") if result == "won" else Credits(0))
    assert system_balance(wallet.store, Account.DISPUTED) == Credits(0)
    kinds = [t.kind for t in transactions_of(wallet.store, "alice")]
    closing = TransactionKind.DISPUTE_WON if result == "won" else TransactionKind.DISPUTE_LOST
    assert kinds == [TransactionKind.TOP_UP, TransactionKind.DISPUTE, closing]
    assert wallet.verify() == []


def test_a_dispute_of_a_top_up_never_paid_is_ignored(wallet: WalletDriver) -> None:
    pending = wallet.request("10.00")
    outcome = wallet.deliver(dispute_event(pending.payment_intent_id, "dp_1", 1000, "needs_response"))
    assert (outcome.outcome, outcome.top_up_id) == ("ignored", pending.top_up_id)
    assert_no_credits_moved(wallet.store)


@pytest.mark.parametrize("pi", ["pi_not_ours", None])
def test_a_dispute_of_a_payment_we_do_not_know_is_ignored(wallet: WalletDriver, paid: TopUp, pi: str | None) -> None:
    assert wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response")).outcome == "ignored"
    assert wallet.spendable() == c("1000")


def test_a_dispute_won_after_a_partial_refund_leaves_the_top_up_partially_refunded(
    wallet: WalletDriver, paid: TopUp
) -> None:
    pi = paid.payment_intent_id
    wallet.deliver(refund_event(pi, refund("re_1", pi, 300)))
    wallet.deliver(dispute_event(pi, "dp_1", 700, "needs_response"))
    assert wallet.spendable() == Credits(0)

    wallet.deliver(dispute_event(pi, "dp_1", 700, "won"))

    assert wallet.spendable() == c("700")
    assert _status(wallet, paid) is TopUpStatus.PARTIALLY_REFUNDED
    assert wallet.verify() == []


def test_a_dispute_of_a_refunded_payment_never_takes_more_than_the_top_up_bought(
    wallet: WalletDriver, paid: TopUp
) -> None:
    pi = paid.payment_intent_id
    wallet.deliver(refund_event(pi, refund("re_1", pi, 1000)))
    assert wallet.spendable() == Credits(0)

    wallet.deliver(dispute_event(pi, "dp_1", 1000, "needs_response"))
    wallet.deliver(dispute_event(pi, "dp_1", 1000, "lost"))

    assert wallet.spendable() == Credits(0)  # the refund took everything already


# -- several disputes of one payment: together with its refunds they never take more than it granted --------


def test_five_disputes_of_one_payment_freeze_its_credits_once(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.spend("300")

    outcomes = [wallet.deliver(dispute_event(pi, f"dp_{n}", 1000, "needs_response")).outcome for n in range(5)]

    assert outcomes == ["dispute_opened"] * 5
    assert wallet.spendable() == c("-300")  # the 1000 bought, less the 300 spent: not -4300
    assert wallet.debt() == c("300")
    assert system_balance(wallet.store, Account.DISPUTED) == c("1000")
    assert [t.credits for t in transactions_of(wallet.store, "alice")[-5:]] == [c("-1000")] + [Credits(0)] * 4
    assert wallet.verify() == []


def test_a_second_dispute_freezes_only_what_the_first_left(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.deliver(dispute_event(pi, "dp_1", 600, "needs_response"))
    wallet.deliver(dispute_event(pi, "dp_2", 600, "needs_response"))

    assert system_balance(wallet.store, Account.DISPUTED) == c("1000")
    assert wallet.spendable() == Credits(0)

    wallet.deliver(dispute_event(pi, "dp_1", 600, "won"))  # gives back its 600, no more

    assert wallet.spendable() == c("600")
    assert _status(wallet, paid) is TopUpStatus.DISPUTED  # dp_2 is still open
    wallet.deliver(dispute_event(pi, "dp_2", 600, "lost"))
    assert wallet.spendable() == c("600")
    assert system_balance(wallet.store, Account.DISPUTED) == Credits(0)
    assert _status(wallet, paid) is TopUpStatus.DISPUTE_LOST
    assert wallet.verify() == []


def test_winning_every_dispute_gives_back_exactly_what_was_bought(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    for n in range(3):
        wallet.deliver(dispute_event(pi, f"dp_{n}", 1000, "needs_response"))
    for n in range(3):
        assert wallet.deliver(dispute_event(pi, f"dp_{n}", 1000, "won")).outcome == "dispute_won"

    assert wallet.spendable() == c("1000")
    assert system_balance(wallet.store, Account.DISPUTED) == Credits(0)
    assert _status(wallet, paid) is TopUpStatus.SUCCEEDED
    assert wallet.verify() == []


def test_a_refund_during_a_dispute_takes_only_what_the_dispute_left(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.deliver(dispute_event(pi, "dp_1", 800, "needs_response"))  # freezes 800 of 1000

    assert wallet.deliver(refund_event(pi, refund("re_1", pi, 500))).outcome == "refunded"

    assert wallet.spendable() == Credits(0)  # 200 taken back, not 500
    assert system_balance(wallet.store, Account.DISPUTED) == c("800")
    assert wallet.verify() == []
    wallet.deliver(dispute_event(pi, "dp_1", 800, "lost"))
    assert wallet.spendable() == Credits(0)
    assert wallet.verify() == []


def test_a_dispute_lost_unseen_counts_against_the_next_dispute(wallet: WalletDriver, paid: TopUp) -> None:
    pi = paid.payment_intent_id
    wallet.deliver(dispute_event(pi, "dp_1", 700, "lost"))  # its `created` was missed: 700 taken

    wallet.deliver(dispute_event(pi, "dp_2", 700, "needs_response"))

    assert wallet.spendable() == Credits(0)  # 300 frozen, not 700
    assert system_balance(wallet.store, Account.DISPUTED) == c("300")
    assert wallet.verify() == []
