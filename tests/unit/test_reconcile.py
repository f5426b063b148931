"""`wallet reconcile`: what Stripe lists is compared with the ledger, and what webhooks missed is applied once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore
from tests.unit.helpers import (
    FakeClock,
    StubGateway,
    assert_store_unchanged,
    balances,
    dispute_event,
    history,
    intent_event,
    paid_top_up,
    refund,
    refund_event,
    snapshot,
    spendable,
    top_up_of,
    top_up_record,
)
from wallet_core.errors import PaymentGatewayFailed
from wallet_core.ledger import TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, Dispute, PaymentIntent, Refund
from wallet_core.ports import StoredEvent, UnitOfWorkFactory
from wallet_core.service import Wallet
from wallet_core.topups import TopUpStatus
from wallet_core.use_cases import ReconcileReport, reconcile_payments


def c(text: str) -> Credits:
    return Credits.parse(text)


def _reconcile(uow: UnitOfWorkFactory, clock: FakeClock, stub: StubGateway, **kw: Any) -> ReconcileReport:
    """Reconciliation against `stub`'s listing of Stripe (the service reconciles with its own gateway)."""
    return reconcile_payments(uow=uow, gateway=stub, now=clock, **kw)


def _stripe(gateway: FakePaymentGateway, refunds: dict[str, list[Refund]] | None = None,
            disputes: dict[str, list[Dispute]] | None = None) -> StubGateway:
    """Stripe's listing, as the fake gateway's intents stand now."""
    return StubGateway(intents=list(gateway.intents.values()), refunds=refunds, disputes=disputes)


def _dispute(pi: str, status: str, cents: int = 1000, dispute_id: str = "du_1") -> Dispute:
    return Dispute(dispute_id, pi, Usd(cents), "usd", status)


def _missed_payment(wallet: Wallet, gateway: FakePaymentGateway, usd: str = "10.00", user: str = "alice") -> str:
    """A top-up the buyer paid whose webhook never arrived: the intent succeeded, the top-up is pending."""
    pi = wallet.top_up(user, usd).payment_intent_id
    gateway.succeed(pi)  # the signed event is dropped
    return pi


def _foreign_intent() -> PaymentIntent:
    return PaymentIntent("pi_shop", Usd(5000), "usd", "succeeded", {"order": "shop-1"})


def test_a_payment_whose_webhook_was_missed_is_granted(
    wallet: Wallet, fake_clock: FakeClock, store: InMemoryStore, uow: UnitOfWorkFactory, gateway: FakePaymentGateway
) -> None:
    pi = _missed_payment(wallet, gateway)
    top_up = top_up_of(store, pi)
    stub = _stripe(gateway)

    report = _reconcile(uow, fake_clock, stub)

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 1, 0)
    assert report.actions == [f"grant top-up {top_up.id} ({pi} succeeded): granted"]
    assert report.reviews == []
    assert spendable(wallet) == c("1000")
    assert top_up_of(store, pi).status is TopUpStatus.SUCCEEDED
    assert store.state.events == {
        f"reconcile:{pi}:succeeded": StoredEvent(
            event_id=f"reconcile:{pi}:succeeded",
            type="payment_intent.succeeded",
            payment_intent_id=pi,
            top_up_id=top_up.id,
            received_at=fake_clock.now,
            outcome="granted",
            source="reconcile",
        )
    }
    assert wallet.verify() == []


def test_the_webhook_arriving_after_the_repair_grants_nothing_more(
    wallet: Wallet, gateway: FakePaymentGateway, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    signed = gateway.succeed(pi)  # delayed, not lost
    _reconcile(uow, fake_clock, _stripe(gateway))

    late = wallet.apply_payment_event(gateway.parse_webhook(*signed))

    assert late.outcome == "already_granted"
    assert spendable(wallet) == c("1000")
    assert [t.kind for t in history(wallet)] == [TransactionKind.TOP_UP]


def test_a_payment_the_webhook_granted_is_counted_correct(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    paid_top_up(wallet, gateway, store, "10.00", "alice")
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, _stripe(gateway))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 1, 0, 0)
    assert report.actions == []
    assert_store_unchanged(store, before)


def test_a_missed_refund_is_booked(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    top_up = paid_top_up(wallet, gateway, store, "10.00", "alice")
    pi = top_up.payment_intent_id
    stub = _stripe(gateway, {pi: [refund("re_1", pi, 300), refund("re_2", pi, 200, "pending")]})

    report = _reconcile(uow, fake_clock, stub)

    assert (report.checked, report.correct, report.repaired) == (1, 0, 1)
    assert report.actions == [f"take back credits for refund re_1 (3.00 usd) of {pi}: refunded"]
    assert spendable(wallet) == c("700")  # the pending refund moves nothing yet
    assert top_up_record(store, top_up.id).status is TopUpStatus.PARTIALLY_REFUNDED
    logged = store.state.events["reconcile:re_1"]
    assert (logged.type, logged.payment_intent_id, logged.outcome, logged.source) == (
        "refund.updated",
        pi,
        "refunded",
        "reconcile",
    )
    assert stub.refund_calls == [pi]
    assert wallet.verify() == []


def test_a_refund_the_webhook_booked_is_not_booked_again(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    pi = paid_top_up(wallet, gateway, store, "10.00", "alice").payment_intent_id
    wallet.apply_payment_event(refund_event(pi, refund("re_1", pi, 300)))

    report = _reconcile(uow, fake_clock, _stripe(gateway, {pi: [refund("re_1", pi, 300)]}))

    assert (report.correct, report.repaired, report.actions) == (1, 0, [])
    assert spendable(wallet) == c("700")


def test_a_missed_payment_and_its_missed_refund_are_both_repaired_in_order(
    wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock, gateway: FakePaymentGateway
) -> None:
    pi = _missed_payment(wallet, gateway)
    top_up = top_up_of(store, pi)

    report = _reconcile(uow, fake_clock, _stripe(gateway, {pi: [refund("re_1", pi, 1000)]}))

    assert report.repaired == 1
    assert report.actions == [
        f"grant top-up {top_up.id} ({pi} succeeded): granted",
        f"take back credits for refund re_1 (10.00 usd) of {pi}: refunded",
    ]
    assert spendable(wallet) == Credits(0)
    assert top_up_of(store, pi).status is TopUpStatus.REFUNDED
    assert wallet.verify() == []


@pytest.mark.parametrize("first", ["pending", "failed"])
def test_a_canceled_intent_cancels_its_top_up(
    wallet: Wallet,
    first: str,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UnitOfWorkFactory,
    fake_clock: FakeClock,
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    if first == "failed":
        wallet.apply_payment_event(intent_event(gateway, pi, "payment_intent.payment_failed"))
    top_up = top_up_of(store, pi)
    gateway.intents[pi] = replace(gateway.intents[pi], status="canceled")

    report = _reconcile(uow, fake_clock, _stripe(gateway))

    assert (report.checked, report.repaired) == (1, 1)
    assert report.actions == [f"cancel top-up {top_up.id} ({pi} canceled): canceled"]
    assert top_up_of(store, pi).status is TopUpStatus.CANCELED
    assert store.state.events[f"reconcile:{pi}:canceled"].source == "reconcile"
    assert store.state.transactions == {}


@pytest.mark.parametrize("status", ["requires_payment_method", "requires_confirmation", "processing"])
def test_a_payment_still_in_progress_is_correct_as_pending(
    wallet: Wallet,
    status: str,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UnitOfWorkFactory,
    fake_clock: FakeClock,
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    gateway.intents[pi] = replace(gateway.intents[pi], status=status)
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, _stripe(gateway))

    assert (report.checked, report.correct, report.repaired) == (1, 1, 0)
    assert_store_unchanged(store, before)


def test_a_foreign_intent_is_skipped(
    wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    stub = StubGateway(intents=[_foreign_intent()])
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, stub)

    assert report == ReconcileReport()
    assert stub.refund_calls == []
    assert_store_unchanged(store, before)


def test_a_canceled_intent_of_ours_with_no_top_up_is_correct(
    wallet: Wallet, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    """The wallet cancels the intent of a top-up it could not record: nothing to review or repair."""
    orphan = replace(_foreign_intent(), id="pi_orphan", status="canceled",
                     metadata={META_TOP_UP_ID: "tu_gone", META_USER_ID: "alice"})

    report = _reconcile(uow, fake_clock, StubGateway(intents=[orphan]))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 1, 0, 0)
    assert report.reviews == [] and report.actions == []


def test_an_intent_of_ours_with_no_top_up_needs_review(
    wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    orphan = PaymentIntent("pi_orphan", Usd(1000), "usd", "succeeded", {META_TOP_UP_ID: "tu_x", META_USER_ID: "alice"})
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, StubGateway(intents=[orphan]))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 0, 1)
    assert report.reviews == ["pi_orphan: succeeded at Stripe, but no top-up here"]
    assert report.actions == []
    assert_store_unchanged(store, before)


def test_a_top_up_under_review_is_reported_not_repaired(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    pi = wallet.top_up("alice", "10.00").payment_intent_id
    gateway.succeed(pi)
    wrong = replace(gateway.intents[pi], amount_received=Usd(1))
    assert (
        wallet.apply_payment_event(
            replace(intent_event(gateway, pi, "payment_intent.succeeded"), payment_intent=wrong)
        ).outcome
        == "needs_review"
    )
    top_up = top_up_of(store, pi)
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, _stripe(gateway))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 0, 1)
    assert report.reviews == [f"{pi}: top-up {top_up.id} is marked needs_review"]
    assert_store_unchanged(store, before)


def test_a_missed_payment_with_the_wrong_amount_is_flagged_for_review(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    pi = _missed_payment(wallet, gateway)
    gateway.intents[pi] = replace(gateway.intents[pi], amount_received=Usd(999))

    report = _reconcile(uow, fake_clock, _stripe(gateway))

    assert report.needs_review == 1
    assert report.reviews == [f"{pi}: Stripe's amount or currency differs from top-up {top_up_of(store, pi).id}"]
    assert top_up_of(store, pi).status is TopUpStatus.NEEDS_REVIEW
    assert store.state.transactions == {}
    again = _reconcile(uow, fake_clock, _stripe(gateway))
    assert (again.repaired, again.needs_review, again.actions) == (0, 1, [])


def _a_bit_of_everything(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore
) -> tuple[StubGateway, list[str]]:
    """Intents in every state reconciliation cares about; returns Stripe's listing and the expected actions."""
    missed = _missed_payment(wallet, gateway, "10.00")
    fine = paid_top_up(wallet, gateway, store, "5.00", "bob").payment_intent_id
    refunded = paid_top_up(wallet, gateway, store, "2.00", "carol").payment_intent_id
    canceled = wallet.top_up("dave", "3.00").payment_intent_id
    gateway.intents[canceled] = replace(gateway.intents[canceled], status="canceled")
    wallet.top_up("erin", "4.00")  # still waiting for the buyer
    stub = _stripe(gateway, {refunded: [refund("re_c", refunded, 50)], fine: [refund("re_b", fine, 100, "pending")]})
    stub.intents.append(_foreign_intent())
    expected = [
        f"grant top-up {top_up_of(store, missed).id} ({missed} succeeded)",
        f"take back credits for refund re_c (0.50 usd) of {refunded}",
        f"cancel top-up {top_up_of(store, canceled).id} ({canceled} canceled)",
    ]
    return stub, expected


def test_a_dry_run_changes_nothing_and_lists_what_it_would_do(
    wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock, gateway: FakePaymentGateway
) -> None:
    stub, expected = _a_bit_of_everything(wallet, gateway, store)
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, stub, dry_run=True)

    assert_store_unchanged(store, before)
    assert sorted(report.actions) == sorted(f"would {a}" for a in expected)
    assert (report.checked, report.correct, report.repaired, report.needs_review) == (5, 2, 3, 0)


def test_a_run_repairs_everything_and_a_second_run_finds_everything_correct(
    wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock, gateway: FakePaymentGateway
) -> None:
    stub, expected = _a_bit_of_everything(wallet, gateway, store)

    first = _reconcile(uow, fake_clock, stub)

    assert (first.checked, first.correct, first.repaired, first.needs_review) == (5, 2, 3, 0)
    assert sorted(a.rsplit(": ", 1)[0] for a in first.actions) == sorted(expected)
    assert sorted(a.rsplit(": ", 1)[1] for a in first.actions) == ["canceled", "granted", "refunded"]
    assert spendable(wallet, "alice") == c("1000")
    assert spendable(wallet, "bob") == c("500")
    assert spendable(wallet, "carol") == c("150")
    assert wallet.verify() == []
    events = dict(store.state.events)
    before = snapshot(store)

    second = _reconcile(uow, fake_clock, stub)

    assert (second.checked, second.correct, second.repaired, second.needs_review) == (5, 5, 0, 0)
    assert second.actions == []
    assert_store_unchanged(store, before)
    assert store.state.events == events


def test_since_and_progress_are_passed_through(
    wallet: Wallet, fake_clock: FakeClock, uow: UnitOfWorkFactory, gateway: FakePaymentGateway
) -> None:
    _missed_payment(wallet, gateway)
    stub = _stripe(gateway)
    stub.intents.append(_foreign_intent())
    since = fake_clock.now - timedelta(days=30)
    seen: list[str] = []

    _reconcile(uow, fake_clock, stub, since=since, progress=lambda intent: seen.append(intent.id))

    assert stub.listed_since == [since]
    assert seen == [i.id for i in stub.intents]  # every intent listed, ours or not


# -- disputes -----------------------------------------------------------------------------------------


def test_a_dispute_whose_webhook_was_missed_freezes_the_credits(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    top_up = paid_top_up(wallet, gateway, store, "10.00", "alice")
    pi = top_up.payment_intent_id
    stub = _stripe(gateway, disputes={pi: [_dispute(pi, "needs_response")]})

    report = _reconcile(uow, fake_clock, stub)

    assert (report.checked, report.correct, report.repaired) == (1, 0, 1)
    assert report.actions == [f"freeze credits for dispute du_1 (10.00 usd) of {pi}, needs_response: dispute_opened"]
    assert spendable(wallet) == Credits(0)
    assert top_up_record(store, top_up.id).status is TopUpStatus.DISPUTED
    logged = store.state.events["reconcile:du_1:opened"]
    assert (logged.type, logged.outcome, logged.source) == ("charge.dispute.created", "dispute_opened", "reconcile")
    assert stub.dispute_calls == [pi]
    assert wallet.verify() == []


@pytest.mark.parametrize(("status", "spendable", "final"), [
    ("lost", "0", TopUpStatus.DISPUTE_LOST),
    ("won", "1000", TopUpStatus.SUCCEEDED),
])
def test_a_dispute_closed_while_its_webhooks_were_missed_is_closed(
    wallet: Wallet,
    status: str,
    spendable: str,
    final: TopUpStatus,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UnitOfWorkFactory,
    fake_clock: FakeClock,
) -> None:
    """Its close missed, and perhaps its opening too: lost takes the credits (frozen or not), won
    leaves or gives them back."""
    for opened_here in (False, True):
        top_up = paid_top_up(wallet, gateway, store, "10.00", "dora" if opened_here else "eve")
        pi = top_up.payment_intent_id
        if opened_here:
            wallet.apply_payment_event(dispute_event(pi, f"du_{pi}", 1000, "needs_response"))
        stub = _stripe(gateway, disputes={pi: [_dispute(pi, status, dispute_id=f"du_{pi}")]})

        report = _reconcile(uow, fake_clock, stub)

        assert report.repaired == 1, report
        assert [a.rsplit(": ", 1)[0] for a in report.actions] == [
            f"close dispute du_{pi} (10.00 usd) of {pi}, {status}"]
        assert balances(wallet, top_up.user_id)[0] == c(spendable)
        assert top_up_record(store, top_up.id).status is (final if opened_here or status == "lost"
                                                          else TopUpStatus.SUCCEEDED)
        assert wallet.verify() == []
        assert _reconcile(uow, fake_clock, stub).repaired == 0  # and once only


def test_a_dispute_the_webhooks_applied_is_not_applied_again(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    pi = paid_top_up(wallet, gateway, store, "10.00", "alice").payment_intent_id
    wallet.apply_payment_event(dispute_event(pi, "du_1", 1000, "needs_response"))
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, _stripe(gateway, disputes={pi: [_dispute(pi, "under_review")]}))

    assert (report.correct, report.repaired, report.actions) == (1, 0, [])
    assert_store_unchanged(store, before)


def test_a_missed_payment_refund_and_dispute_are_repaired_in_the_order_the_money_moved(
    wallet: Wallet, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock, gateway: FakePaymentGateway,
) -> None:
    """Granted first, then 4.00 refunded, then the remaining 6.00 disputed and lost."""
    pi = _missed_payment(wallet, gateway)
    top_up = top_up_of(store, pi)
    stub = _stripe(gateway, {pi: [refund("re_1", pi, 400)]}, {pi: [_dispute(pi, "lost", 600)]})

    report = _reconcile(uow, fake_clock, stub)

    assert [a.rsplit(": ", 1)[1] for a in report.actions] == ["granted", "refunded", "dispute_lost"]
    assert spendable(wallet) == Credits(0)
    assert top_up_of(store, pi).status is TopUpStatus.DISPUTE_LOST
    assert wallet.verify() == []
    assert top_up.id in report.actions[0]


def test_a_dry_run_lists_dispute_repairs_and_changes_nothing(
    wallet: Wallet, gateway: FakePaymentGateway, store: InMemoryStore, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    pi = paid_top_up(wallet, gateway, store, "10.00", "alice").payment_intent_id
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, _stripe(gateway, disputes={pi: [_dispute(pi, "lost")]}), dry_run=True)

    assert report.actions == [f"would close dispute du_1 (10.00 usd) of {pi}, lost"]
    assert_store_unchanged(store, before)


def test_when_stripe_cannot_list_disputes_the_run_says_so_once_and_repairs_the_rest(
    wallet: Wallet, gateway: FakePaymentGateway, uow: UnitOfWorkFactory, fake_clock: FakeClock
) -> None:
    first, second = _missed_payment(wallet, gateway, user="alice"), _missed_payment(wallet, gateway, user="bob")

    class NoDisputes(StubGateway):
        def list_disputes(self, payment_intent_id: str) -> list[Dispute]:
            self.dispute_calls.append(payment_intent_id)
            raise PaymentGatewayFailed("could not list disputes: Stripe error (APIError) [HTTP 404]")

    stub = NoDisputes(intents=list(gateway.intents.values()))

    report = _reconcile(uow, fake_clock, stub)

    assert [a.rsplit(": ", 1)[1] for a in report.actions] == ["granted", "granted"]
    assert spendable(wallet, "alice") == spendable(wallet, "bob") == c("1000")
    assert report.disputes_checked is False
    assert len(stub.dispute_calls) == 1  # asked once, not once per payment
    assert report.needs_review == 1
    assert report.reviews == [f"disputes not checked (from {stub.dispute_calls[0]} on): could not list disputes: "
                              "Stripe error (APIError) [HTTP 404]"]
    assert {first, second} >= set(stub.dispute_calls)


@pytest.mark.parametrize("stripe_status", ["requires_payment_method", "processing", "canceled"])
def test_a_granted_top_up_whose_intent_did_not_succeed_at_stripe_needs_review(
    wallet: Wallet,
    stripe_status: str,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UnitOfWorkFactory,
    fake_clock: FakeClock,
) -> None:
    """The ledger granted credits for money Stripe says never arrived: that is for a person, not correct."""
    top_up = paid_top_up(wallet, gateway, store, "10.00", "alice")
    pi = top_up.payment_intent_id
    gateway.intents[pi] = replace(gateway.intents[pi], status=stripe_status)
    before = snapshot(store)

    report = _reconcile(uow, fake_clock, _stripe(gateway))

    assert (report.checked, report.correct, report.repaired, report.needs_review) == (1, 0, 0, 1)
    assert report.reviews == [
        f"{pi}: granted here (top-up {top_up.id} is succeeded), but Stripe says the PaymentIntent is {stripe_status}"
    ]
    assert report.actions == []
    assert_store_unchanged(store, before)
