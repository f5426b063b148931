"""`wallet reconcile`: what Stripe lists is compared with the ledger, and what webhooks missed is applied once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.helpers import (
    StubGateway,
    WalletDriver,
    assert_store_unchanged,
    dispute_event,
    refund,
    refund_event,
    snapshot,
)
from wallet_core.errors import PaymentGatewayFailed
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, Dispute, PaymentIntent, Refund
from wallet_core.ports import StoredEvent
from wallet_core.topups import TopUpStatus
from wallet_core.use_cases import ReconcileReport, reconcile_payments


def c(text: str) -> Credits:
    return Credits.parse(text)


def _reconcile(wallet: WalletDriver, stub: StubGateway, **kw: Any) -> ReconcileReport:
    return reconcile_payments(uow=wallet.uow, gateway=stub, now=wallet.clock, **kw)


def _stripe(wallet: WalletDriver, refunds: dict[str, list[Refund]] | None = None,
            disputes: dict[str, list[Dispute]] | None = None) -> StubGateway:
    """Stripe's listing, as the fake gateway's intents stand now."""
    return StubGateway(intents=list(wallet.gateway.intents.values()), refunds=refunds, disputes=disputes)


def _dispute(pi: str, status: str, cents: int = 1000, dispute_id: str = "du_1") -> Dispute:
    return Dispute(dispute_id, pi, Usd(cents), "usd", status)


def _missed_payment(wallet: WalletDriver, usd: str = "10.00", user: str = "alice") -> str:
    """A top-up the buyer paid whose webhook never arrived: the intent succeeded, the top-up is pending."""
    pi = wallet.request(usd, user).payment_intent_id
    wallet.gateway.succeed(pi)  # the signed event is dropped
    return pi


def _foreign_intent() -> PaymentIntent:
    return PaymentIntent("pi_shop", Usd(5000), "usd", "succeeded", {"order": "shop-1"})


def test_a_payment_whose_webhook_was_missed_is_granted(wallet: WalletDriver) -> None:
    pi = _missed_payment(wallet)
    top_up = wallet.top_up_of(pi)
    stub = _stripe(wallet)

    report = _reconcile(wallet, stub)

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 1, 0)
    assert report.actions == [f"grant top-up {top_up.id} ({pi} succeeded): granted"]
    assert report.reviews == []
    assert wallet.spendable() == c("1000")
    assert wallet.top_up_of(pi).status is TopUpStatus.SUCCEEDED
    assert wallet.store.state.events == {
        f"reconcile:{pi}:succeeded": StoredEvent(
            event_id=f"reconcile:{pi}:succeeded",
            type="payment_intent.succeeded",
            payment_intent_id=pi,
            top_up_id=top_up.id,
            received_at=wallet.clock.now,
            outcome="granted",
            source="reconcile",
        )
    }
    assert wallet.verify() == []


def test_the_webhook_arriving_after_the_repair_grants_nothing_more(wallet: WalletDriver) -> None:
    pi = wallet.request("10.00").payment_intent_id
    signed = wallet.gateway.succeed(pi)  # delayed, not lost
    _reconcile(wallet, _stripe(wallet))

    late = wallet.deliver(wallet.gateway.parse_webhook(*signed))

    assert late.outcome == "already_granted"
    assert wallet.spendable() == c("1000")
    assert [t.kind for t in wallet.history()] == [TransactionKind.TOP_UP]


def test_a_payment_the_webhook_granted_is_counted_correct(wallet: WalletDriver) -> None:
    wallet.paid("10.00")
    before = snapshot(wallet.store)

    report = _reconcile(wallet, _stripe(wallet))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 1, 0, 0)
    assert report.actions == []
    assert_store_unchanged(wallet.store, before)


def test_a_missed_refund_is_booked(wallet: WalletDriver) -> None:
    top_up = wallet.paid("10.00")
    pi = top_up.payment_intent_id
    stub = _stripe(wallet, {pi: [refund("re_1", pi, 300), refund("re_2", pi, 200, "pending")]})

    report = _reconcile(wallet, stub)

    assert (report.checked, report.correct, report.repaired) == (1, 0, 1)
    assert report.actions == [f"take back credits for refund re_1 (3.00 usd) of {pi}: refunded"]
    assert wallet.spendable() == c("700")  # the pending refund moves nothing yet
    assert wallet.top_up_record(top_up.id).status is TopUpStatus.PARTIALLY_REFUNDED
    logged = wallet.store.state.events["reconcile:re_1"]
    assert (logged.type, logged.payment_intent_id, logged.outcome, logged.source) == (
        "refund.updated",
        pi,
        "refunded",
        "reconcile",
    )
    assert stub.refund_calls == [pi]
    assert wallet.verify() == []


def test_a_refund_the_webhook_booked_is_not_booked_again(wallet: WalletDriver) -> None:
    pi = wallet.paid("10.00").payment_intent_id
    wallet.deliver(refund_event(pi, refund("re_1", pi, 300)))

    report = _reconcile(wallet, _stripe(wallet, {pi: [refund("re_1", pi, 300)]}))

    assert (report.correct, report.repaired, report.actions) == (1, 0, [])
    assert wallet.spendable() == c("700")


def test_a_missed_payment_and_its_missed_refund_are_both_repaired_in_order(wallet: WalletDriver) -> None:
    pi = _missed_payment(wallet)
    top_up = wallet.top_up_of(pi)

    report = _reconcile(wallet, _stripe(wallet, {pi: [refund("re_1", pi, 1000)]}))

    assert report.repaired == 1
    assert report.actions == [
        f"grant top-up {top_up.id} ({pi} succeeded): granted",
        f"take back credits for refund re_1 (10.00 usd) of {pi}: refunded",
    ]
    assert wallet.spendable() == Credits(0)
    assert wallet.top_up_of(pi).status is TopUpStatus.REFUNDED
    assert wallet.verify() == []


@pytest.mark.parametrize("first", ["pending", "failed"])
def test_a_canceled_intent_cancels_its_top_up(wallet: WalletDriver, first: str) -> None:
    pi = wallet.request("10.00").payment_intent_id
    if first == "failed":
        wallet.deliver(wallet.intent_event(pi, "payment_intent.payment_failed"))
    top_up = wallet.top_up_of(pi)
    wallet.gateway.intents[pi] = replace(wallet.gateway.intents[pi], status="canceled")

    report = _reconcile(wallet, _stripe(wallet))

    assert (report.checked, report.repaired) == (1, 1)
    assert report.actions == [f"cancel top-up {top_up.id} ({pi} canceled): canceled"]
    assert wallet.top_up_of(pi).status is TopUpStatus.CANCELED
    assert wallet.store.state.events[f"reconcile:{pi}:canceled"].source == "reconcile"
    assert wallet.store.state.transactions == {}


@pytest.mark.parametrize("status", ["requires_payment_method", "requires_confirmation", "processing"])
def test_a_payment_still_in_progress_is_correct_as_pending(wallet: WalletDriver, status: str) -> None:
    pi = wallet.request("10.00").payment_intent_id
    wallet.gateway.intents[pi] = replace(wallet.gateway.intents[pi], status=status)
    before = snapshot(wallet.store)

    report = _reconcile(wallet, _stripe(wallet))

    assert (report.checked, report.correct, report.repaired) == (1, 1, 0)
    assert_store_unchanged(wallet.store, before)


def test_a_foreign_intent_is_skipped(wallet: WalletDriver) -> None:
    stub = StubGateway(intents=[_foreign_intent()])
    before = snapshot(wallet.store)

    report = _reconcile(wallet, stub)

    assert report == ReconcileReport()
    assert stub.refund_calls == []
    assert_store_unchanged(wallet.store, before)


def test_a_canceled_intent_of_ours_with_no_top_up_is_correct(wallet: WalletDriver) -> None:
    """The wallet cancels the intent of a top-up it could not record: nothing to review or repair."""
    orphan = replace(_foreign_intent(), id="pi_orphan", status="canceled",
                     metadata={META_TOP_UP_ID: "tu_gone", META_USER_ID: "alice"})

    report = _reconcile(wallet, StubGateway(intents=[orphan]))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 1, 0, 0)
    assert report.reviews == [] and report.actions == []


def test_an_intent_of_ours_with_no_top_up_needs_review(wallet: WalletDriver) -> None:
    orphan = PaymentIntent("pi_orphan", Usd(1000), "usd", "succeeded", {META_TOP_UP_ID: "tu_x", META_USER_ID: "alice"})
    before = snapshot(wallet.store)

    report = _reconcile(wallet, StubGateway(intents=[orphan]))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 0, 1)
    assert report.reviews == ["pi_orphan: succeeded at Stripe, but no top-up here"]
    assert report.actions == []
    assert_store_unchanged(wallet.store, before)


def test_a_top_up_under_review_is_reported_not_repaired(wallet: WalletDriver) -> None:
    pi = wallet.request("10.00").payment_intent_id
    wallet.gateway.succeed(pi)
    wrong = replace(wallet.gateway.intents[pi], amount_received=Usd(1))
    assert wallet.deliver(replace(wallet.intent_event(pi, "payment_intent.succeeded"), payment_intent=wrong)).outcome \
        == "needs_review"
    top_up = wallet.top_up_of(pi)
    before = snapshot(wallet.store)

    report = _reconcile(wallet, _stripe(wallet))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 0, 1)
    assert report.reviews == [f"{pi}: top-up {top_up.id} is marked needs_review"]
    assert_store_unchanged(wallet.store, before)


def test_a_missed_payment_with_the_wrong_amount_is_flagged_for_review(wallet: WalletDriver) -> None:
    pi = _missed_payment(wallet)
    wallet.gateway.intents[pi] = replace(wallet.gateway.intents[pi], amount_received=Usd(999))

    report = _reconcile(wallet, _stripe(wallet))

    assert report.needs_review == 1
    assert report.reviews == [f"{pi}: Stripe's amount or currency differs from top-up {wallet.top_up_of(pi).id}"]
    assert wallet.top_up_of(pi).status is TopUpStatus.NEEDS_REVIEW
    assert wallet.store.state.transactions == {}
    again = _reconcile(wallet, _stripe(wallet))
    assert (again.repaired, again.needs_review, again.actions) == (0, 1, [])


def _a_bit_of_everything(wallet: WalletDriver) -> tuple[StubGateway, list[str]]:
    """Intents in every state reconciliation cares about; returns Stripe's listing and the expected actions."""
    missed = _missed_payment(wallet, "10.00")
    fine = wallet.paid("5.00", "bob").payment_intent_id
    refunded = wallet.paid("2.00", "carol").payment_intent_id
    canceled = wallet.request("3.00", "dave").payment_intent_id
    wallet.gateway.intents[canceled] = replace(wallet.gateway.intents[canceled], status="canceled")
    wallet.request("4.00", "erin")  # still waiting for the buyer
    stub = _stripe(wallet, {refunded: [refund("re_c", refunded, 50)], fine: [refund("re_b", fine, 100, "pending")]})
    stub.intents.append(_foreign_intent())
    expected = [
        f"grant top-up {wallet.top_up_of(missed).id} ({missed} succeeded)",
        f"take back credits for refund re_c (0.50 usd) of {refunded}",
        f"cancel top-up {wallet.top_up_of(canceled).id} ({canceled} canceled)",
    ]
    return stub, expected


def test_a_dry_run_changes_nothing_and_lists_what_it_would_do(wallet: WalletDriver) -> None:
    stub, expected = _a_bit_of_everything(wallet)
    before = snapshot(wallet.store)

    report = _reconcile(wallet, stub, dry_run=True)

    assert_store_unchanged(wallet.store, before)
    assert sorted(report.actions) == sorted(f"would {a}" for a in expected)
    assert (report.checked, report.correct, report.repaired, report.needs_review) == (5, 2, 3, 0)


def test_a_run_repairs_everything_and_a_second_run_finds_everything_correct(wallet: WalletDriver) -> None:
    stub, expected = _a_bit_of_everything(wallet)

    first = _reconcile(wallet, stub)

    assert (first.checked, first.correct, first.repaired, first.needs_review) == (5, 2, 3, 0)
    assert sorted(a.rsplit(": ", 1)[0] for a in first.actions) == sorted(expected)
    assert sorted(a.rsplit(": ", 1)[1] for a in first.actions) == ["canceled", "granted", "refunded"]
    assert wallet.spendable("alice") == c("1000")
    assert wallet.spendable("bob") == c("500")
    assert wallet.spendable("carol") == c("150")
    assert wallet.verify() == []
    events = dict(wallet.store.state.events)
    before = snapshot(wallet.store)

    second = _reconcile(wallet, stub)

    assert (second.checked, second.correct, second.repaired, second.needs_review) == (5, 5, 0, 0)
    assert second.actions == []
    assert_store_unchanged(wallet.store, before)
    assert wallet.store.state.events == events


def test_since_and_progress_are_passed_through(wallet: WalletDriver) -> None:
    _missed_payment(wallet)
    stub = _stripe(wallet)
    stub.intents.append(_foreign_intent())
    since = wallet.clock.now - timedelta(days=30)
    seen: list[str] = []

    _reconcile(wallet, stub, since=since, progress=lambda intent: seen.append(intent.id))

    assert stub.listed_since == [since]
    assert seen == [i.id for i in stub.intents]  # every intent listed, ours or not


# -- disputes -----------------------------------------------------------------------------------------


def test_a_dispute_whose_webhook_was_missed_freezes_the_credits(wallet: WalletDriver) -> None:
    top_up = wallet.paid("10.00")
    pi = top_up.payment_intent_id
    stub = _stripe(wallet, disputes={pi: [_dispute(pi, "needs_response")]})

    report = _reconcile(wallet, stub)

    assert (report.checked, report.correct, report.repaired) == (1, 0, 1)
    assert report.actions == [f"freeze credits for dispute du_1 (10.00 usd) of {pi}, needs_response: dispute_opened"]
    assert wallet.spendable() == Credits(0)
    assert wallet.top_up_record(top_up.id).status is TopUpStatus.DISPUTED
    logged = wallet.store.state.events["reconcile:du_1:opened"]
    assert (logged.type, logged.outcome, logged.source) == ("charge.dispute.created", "dispute_opened", "reconcile")
    assert stub.dispute_calls == [pi]
    assert wallet.verify() == []


@pytest.mark.parametrize(("status", "spendable", "final"), [
    ("lost", "0", TopUpStatus.DISPUTE_LOST),
    ("won", "1000", TopUpStatus.SUCCEEDED),
])
def test_a_dispute_closed_while_its_webhooks_were_missed_is_closed(
    wallet: WalletDriver, status: str, spendable: str, final: TopUpStatus
) -> None:
    """Its close missed, and perhaps its opening too: lost takes the credits (frozen or not), won
    leaves or gives them back."""
    for opened_here in (False, True):
        top_up = wallet.paid("10.00", "dora" if opened_here else "eve")
        pi = top_up.payment_intent_id
        if opened_here:
            wallet.deliver(dispute_event(pi, f"du_{pi}", 1000, "needs_response"))
        stub = _stripe(wallet, disputes={pi: [_dispute(pi, status, dispute_id=f"du_{pi}")]})

        report = _reconcile(wallet, stub)

        assert report.repaired == 1, report
        assert [a.rsplit(": ", 1)[0] for a in report.actions] == [
            f"close dispute du_{pi} (10.00 usd) of {pi}, {status}"]
        assert wallet.spendable(top_up.user_id) == c(spendable)
        assert wallet.top_up_record(top_up.id).status is (final if opened_here or status == "lost"
                                                          else TopUpStatus.SUCCEEDED)
        assert wallet.verify() == []
        assert _reconcile(wallet, stub).repaired == 0  # and once only


def test_a_dispute_the_webhooks_applied_is_not_applied_again(wallet: WalletDriver) -> None:
    pi = wallet.paid("10.00").payment_intent_id
    wallet.deliver(dispute_event(pi, "du_1", 1000, "needs_response"))
    before = snapshot(wallet.store)

    report = _reconcile(wallet, _stripe(wallet, disputes={pi: [_dispute(pi, "under_review")]}))

    assert (report.correct, report.repaired, report.actions) == (1, 0, [])
    assert_store_unchanged(wallet.store, before)


def test_a_missed_payment_refund_and_dispute_are_repaired_in_the_order_the_money_moved(
    wallet: WalletDriver,
) -> None:
    """Granted first, then 4.00 refunded, then the remaining 6.00 disputed and lost."""
    pi = _missed_payment(wallet)
    top_up = wallet.top_up_of(pi)
    stub = _stripe(wallet, {pi: [refund("re_1", pi, 400)]}, {pi: [_dispute(pi, "lost", 600)]})

    report = _reconcile(wallet, stub)

    assert [a.rsplit(": ", 1)[1] for a in report.actions] == ["granted", "refunded", "dispute_lost"]
    assert wallet.spendable() == Credits(0)
    assert wallet.top_up_of(pi).status is TopUpStatus.DISPUTE_LOST
    assert wallet.verify() == []
    assert top_up.id in report.actions[0]


def test_a_dry_run_lists_dispute_repairs_and_changes_nothing(wallet: WalletDriver) -> None:
    pi = wallet.paid("10.00").payment_intent_id
    before = snapshot(wallet.store)

    report = _reconcile(wallet, _stripe(wallet, disputes={pi: [_dispute(pi, "lost")]}), dry_run=True)

    assert report.actions == [f"would close dispute du_1 (10.00 usd) of {pi}, lost"]
    assert_store_unchanged(wallet.store, before)


def test_when_stripe_cannot_list_disputes_the_run_says_so_once_and_repairs_the_rest(wallet: WalletDriver) -> None:
    first, second = _missed_payment(wallet, user="alice"), _missed_payment(wallet, user="bob")

    class NoDisputes(StubGateway):
        def list_disputes(self, payment_intent_id: str) -> list[Dispute]:
            self.dispute_calls.append(payment_intent_id)
            raise PaymentGatewayFailed("could not list disputes: Stripe error (APIError) [HTTP 404]")

    stub = NoDisputes(intents=list(wallet.gateway.intents.values()))

    report = _reconcile(wallet, stub)

    assert [a.rsplit(": ", 1)[1] for a in report.actions] == ["granted", "granted"]
    assert wallet.spendable("alice") == wallet.spendable("bob") == c("1000")
    assert report.disputes_checked is False
    assert len(stub.dispute_calls) == 1  # asked once, not once per payment
    assert report.needs_review == 1
    assert report.reviews == [f"disputes not checked (from {stub.dispute_calls[0]} on): could not list disputes: "
                              "Stripe error (APIError) [HTTP 404]"]
    assert {first, second} >= set(stub.dispute_calls)


@pytest.mark.parametrize("stripe_status", ["requires_payment_method", "processing", "canceled"])
def test_a_granted_top_up_whose_intent_did_not_succeed_at_stripe_needs_review(
    wallet: WalletDriver, stripe_status: str
) -> None:
    """The ledger granted credits for money Stripe says never arrived: that is for a person, not correct."""
    top_up = wallet.paid("10.00")
    pi = top_up.payment_intent_id
    wallet.gateway.intents[pi] = replace(wallet.gateway.intents[pi], status=stripe_status)
    before = snapshot(wallet.store)

    report = _reconcile(wallet, _stripe(wallet))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 0, 1)
    assert report.reviews == [
        f"{pi}: granted here (top-up {top_up.id} is succeeded), but Stripe says the PaymentIntent is {stripe_status}"
    ]
    assert report.actions == []
    assert_store_unchanged(wallet.store, before)
