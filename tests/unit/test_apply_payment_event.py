"""Stripe says a payment succeeded: the top-up's credits are granted exactly once, or flagged for review."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from tests.unit.helpers import assert_no_credits_moved, events_logged, only_transaction, postings_of
from wallet_core.ledger import Account, CreditKind, Posting, TransactionKind
from wallet_core.money import Credits, Usd
from wallet_core.payment_outcomes import PaymentEventOutcome
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID, PaymentEvent, PaymentIntent
from wallet_core.ports import StoredEvent
from wallet_core.topups import TopUpPolicy, TopUpStatus
from wallet_core.use_cases import (
    TopUpResult,
    WebhookOutcome,
    apply_payment_event,
    read_wallet,
    request_top_up,
)

UowFactory = Callable[..., InMemoryUnitOfWork]


@pytest.fixture
def pending(policy: TopUpPolicy, gateway: FakePaymentGateway, uow: UowFactory) -> TopUpResult:
    """A pending 10.00 USD top-up for alice (1000 credits)."""
    return request_top_up(user_id="alice", amount_usd="10.00", policy=policy, gateway=gateway, uow=uow)


@pytest.fixture
def deliver(gateway: FakePaymentGateway, uow: UowFactory) -> Callable[[tuple[bytes, str]], WebhookOutcome]:
    """Verify a signed webhook the way the HTTP endpoint does, then apply it."""

    def call(signed: tuple[bytes, str]) -> WebhookOutcome:
        payload, header = signed
        return apply_payment_event(gateway.parse_webhook(payload, header), uow=uow)

    return call


def _balance(uow: UowFactory, user_id: str = "alice") -> Credits:
    return read_wallet(user_id=user_id, uow=uow).balance


def test_succeeded_payment_grants_the_top_up_credits(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    signed = gateway.succeed(pending.payment_intent_id)
    outcome = deliver(signed)

    assert outcome.outcome == "granted"
    assert outcome.event_type == "payment_intent.succeeded"
    assert outcome.event_id.startswith("evt_")
    assert outcome.top_up_id == pending.top_up_id
    assert outcome.credits_granted == Credits.parse("1000")
    assert _balance(uow) == Credits.parse("1000")
    assert store.state.top_ups[pending.top_up_id].status is TopUpStatus.SUCCEEDED

    booked = only_transaction(store)
    assert booked.user_id == "alice"
    assert booked.kind is TransactionKind.TOP_UP
    assert booked.credits == Credits.parse("1000")
    assert booked.held_change == Credits(0)
    assert booked.balance_after == Credits.parse("1000")
    assert booked.reference_id == pending.payment_intent_id
    assert booked.actor == "stripe"
    assert pending.top_up_id in (booked.reason or "")

    # Paid credits: one lot that never expires, funded by Stripe.
    [lot] = store.state.lots.values()
    assert lot.user_id == "alice"
    assert lot.kind is CreditKind.PAID
    assert lot.granted == lot.remaining == Credits.parse("1000")
    assert lot.held == Credits(0)
    assert lot.expires_at is None
    assert sorted(postings_of(store, booked.id), key=lambda p: p.amount) == [
        Posting(Account.STRIPE_FUNDING, Credits.parse("-1000")),
        Posting(Account.WALLET, Credits.parse("1000"), "alice", lot.id),
    ]
    assert store.state.available == {"alice": Credits.parse("1000")}


def test_redelivery_of_the_same_event_grants_nothing_more(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    signed = gateway.succeed(pending.payment_intent_id)
    first = deliver(signed)
    assert first.outcome == "granted"
    commits = store.commits
    logged = dict(store.state.events)

    again = deliver(signed)

    # The same event id was applied before: answered from the event log, nothing written at all.
    assert again.outcome == "duplicate"
    assert again.event_id == first.event_id
    assert again.top_up_id == pending.top_up_id
    assert again.credits_granted is None
    assert _balance(uow) == Credits.parse("1000")
    assert len(store.state.transactions) == len(store.state.lots) == 1
    assert len(store.state.postings) == 2
    assert store.commits == commits
    assert store.state.events == logged
    [event] = events_logged(store)
    assert event.event_id == first.event_id
    assert event.outcome == "granted"  # the log keeps what the first delivery did


def test_a_second_event_for_the_same_payment_grants_nothing_more(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    first = gateway.succeed(pending.payment_intent_id)
    second = gateway.succeed(pending.payment_intent_id)
    assert gateway.parse_webhook(*first).id != gateway.parse_webhook(*second).id

    assert deliver(first).outcome == "granted"
    assert deliver(second).outcome == "already_granted"
    assert _balance(uow) == Credits.parse("1000")
    assert len(store.state.transactions) == len(store.state.lots) == 1
    # Two event ids: both are logged, each with what it did.
    assert [(e.event_id, e.outcome) for e in events_logged(store)] == [
        (gateway.parse_webhook(*first).id, "granted"),
        (gateway.parse_webhook(*second).id, "already_granted"),
    ]


def test_ledger_refuses_a_second_grant_even_if_the_top_up_still_looks_pending(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    # The ledger's unique reference is the last line of defence, not the top-up status.
    assert deliver(gateway.succeed(pending.payment_intent_id)).outcome == "granted"
    with uow() as tx:
        tx.top_ups.set_status(pending.top_up_id, TopUpStatus.PENDING, datetime.now(UTC))
        tx.commit()

    assert deliver(gateway.succeed(pending.payment_intent_id)).outcome == "already_granted"
    assert _balance(uow) == Credits.parse("1000")
    assert len(store.state.transactions) == len(store.state.lots) == 1


def test_a_delivery_that_loses_the_grant_race_answers_already_granted_and_logs_nothing(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    # The ledger refuses the second grant's reference: the race's loser rolls back and answers a plain
    # outcome, never an in-band sentinel.
    first = deliver(gateway.succeed(pending.payment_intent_id))
    with uow() as tx:
        tx.top_ups.set_status(pending.top_up_id, TopUpStatus.PENDING, datetime.now(UTC))
        tx.commit()

    lost = deliver(gateway.succeed(pending.payment_intent_id))

    assert first.outcome is PaymentEventOutcome.GRANTED
    assert lost.outcome is PaymentEventOutcome.ALREADY_GRANTED
    assert (lost.top_up_id, lost.credits_granted) == (pending.top_up_id, None)
    assert [(e.event_id, e.outcome) for e in events_logged(store)] == [(first.event_id, "granted")]
    assert all(type(e.outcome) is str for e in events_logged(store))  # the log keeps plain words


@pytest.mark.parametrize("received_cents", [999, 1001, 100, 0, 100_000])
def test_amount_received_different_from_the_top_up_needs_review(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
    received_cents: int,
) -> None:
    outcome = deliver(gateway.succeed(pending.payment_intent_id, amount_received=received_cents))

    assert outcome.outcome == "needs_review"
    assert outcome.top_up_id == pending.top_up_id
    assert outcome.credits_granted is None
    assert _balance(uow) == Credits.zero()
    assert_no_credits_moved(store)
    assert store.state.top_ups[pending.top_up_id].status is TopUpStatus.NEEDS_REVIEW


@pytest.mark.parametrize("currency", ["eur", "gbp", "EUR"])
def test_currency_different_from_the_top_up_needs_review(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
    currency: str,
) -> None:
    outcome = deliver(gateway.succeed(pending.payment_intent_id, currency=currency))

    assert outcome.outcome == "needs_review"
    assert _balance(uow) == Credits.zero()
    assert_no_credits_moved(store)
    assert store.state.top_ups[pending.top_up_id].status is TopUpStatus.NEEDS_REVIEW


def test_currency_case_from_stripe_does_not_matter(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    assert deliver(gateway.succeed(pending.payment_intent_id, currency="USD")).outcome == "granted"
    assert _balance(uow) == Credits.parse("1000")


def _foreign_intent_event(
    gateway: FakePaymentGateway, metadata: dict[str, str], event_type: str = "payment_intent.succeeded"
) -> tuple[bytes, str]:
    intent = PaymentIntent(
        id="pi_unknown_1",
        amount=Usd(1000),
        currency="usd",
        status="succeeded",
        metadata=metadata,
        amount_received=Usd(1000),
    )
    return gateway.signed_event(event_type, gateway.intent_object(intent))


def test_unknown_payment_tagged_as_ours_is_reported_and_writes_nothing(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    commits = store.commits
    top_ups = dict(store.state.top_ups)
    signed = _foreign_intent_event(gateway, {META_TOP_UP_ID: "tu_lost", META_USER_ID: "alice"})

    outcome = deliver(signed)

    assert outcome.outcome == "unknown_top_up"
    assert outcome.top_up_id is None
    # Only the event log is written (support must be able to find it), nothing else.
    assert store.commits == commits + 1
    assert store.state.top_ups == top_ups
    assert_no_credits_moved(store)
    assert _balance(uow) == Credits.zero()
    [event] = events_logged(store)
    assert event.event_id == outcome.event_id
    assert (event.type, event.payment_intent_id, event.top_up_id, event.outcome) == (
        "payment_intent.succeeded",
        "pi_unknown_1",
        None,
        "unknown_top_up",
    )


def test_unknown_payment_not_tagged_as_ours_is_ignored(
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    # Another product on the same Stripe account.
    outcome = deliver(_foreign_intent_event(gateway, {"order": "shop-1"}))
    assert outcome.outcome == "ignored"
    assert store.commits == 1  # the event log only
    assert store.state.top_ups == {}
    assert_no_credits_moved(store)
    [event] = events_logged(store)
    assert (event.event_id, event.payment_intent_id, event.top_up_id, event.outcome) == (
        outcome.event_id,
        "pi_unknown_1",
        None,
        "ignored",
    )


@pytest.mark.parametrize(
    ("event_type", "expected_outcome", "expected_status"),
    [
        ("payment_intent.created", "ignored", TopUpStatus.PENDING),
        ("payment_intent.processing", "ignored", TopUpStatus.PENDING),
        ("payment_intent.requires_action", "ignored", TopUpStatus.PENDING),
        # Handled now (see test_lifecycle.py), but they never grant either.
        ("payment_intent.payment_failed", "failed", TopUpStatus.FAILED),
        ("payment_intent.canceled", "canceled", TopUpStatus.CANCELED),
    ],
)
def test_other_payment_intent_events_grant_nothing(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
    event_type: str,
    expected_outcome: str,
    expected_status: TopUpStatus,
) -> None:
    commits = store.commits
    obj = gateway.intent_object(gateway.intents[pending.payment_intent_id])
    obj["amount_received"] = 1000

    outcome = deliver(gateway.signed_event(event_type, obj))

    assert outcome.outcome == expected_outcome
    assert outcome.event_type == event_type
    assert outcome.credits_granted is None
    assert store.commits == commits + 1  # one commit: the status (if any) and the event log together
    assert store.state.top_ups[pending.top_up_id].status is expected_status
    assert _balance(uow) == Credits.zero()
    assert_no_credits_moved(store)
    [event] = events_logged(store)
    assert (event.type, event.payment_intent_id, event.outcome) == (
        event_type,
        pending.payment_intent_id,
        expected_outcome,
    )
    # Events it acts on name the top-up; events it does not handle are only logged.
    assert event.top_up_id == (None if expected_outcome == "ignored" else pending.top_up_id)


@pytest.mark.parametrize("event_type", ["charge.succeeded", "customer.created", "invoice.paid"])
def test_non_payment_intent_events_are_ignored(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
    event_type: str,
) -> None:
    commits = store.commits
    top_ups = dict(store.state.top_ups)
    outcome = deliver(gateway.signed_event(event_type, {"id": "ch_1", "object": "charge", "amount": 1000}))
    assert outcome.outcome == "ignored"
    assert store.commits == commits + 1  # the event log only
    assert store.state.top_ups == top_ups
    assert_no_credits_moved(store)
    [event] = events_logged(store)
    assert (event.event_id, event.type, event.payment_intent_id, event.top_up_id, event.outcome) == (
        outcome.event_id,
        event_type,
        None,
        None,
        "ignored",
    )


def test_succeeded_event_without_a_payment_intent_is_ignored(store: InMemoryStore, uow: UowFactory) -> None:
    outcome = apply_payment_event(PaymentEvent(id="evt_1", type="payment_intent.succeeded"), uow=uow)
    assert outcome.outcome == "ignored"
    assert store.commits == 1
    assert_no_credits_moved(store)
    assert store.state.top_ups == {}
    assert [(e.event_id, e.payment_intent_id, e.outcome) for e in events_logged(store)] == [
        ("evt_1", None, "ignored")
    ]


def test_amount_falls_back_to_the_intent_amount_when_received_is_not_reported(
    pending: TopUpResult, gateway: FakePaymentGateway, store: InMemoryStore, uow: UowFactory
) -> None:
    intent = replace(gateway.intents[pending.payment_intent_id], status="succeeded", amount_received=None)
    event = PaymentEvent(id="evt_no_received", type="payment_intent.succeeded", payment_intent=intent)
    assert apply_payment_event(event, uow=uow).outcome == "granted"
    assert _balance(uow) == Credits.parse("1000")


def test_each_top_up_is_credited_to_its_own_user(
    policy: TopUpPolicy,
    gateway: FakePaymentGateway,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    a = request_top_up(user_id="alice", amount_usd="1.00", policy=policy, gateway=gateway, uow=uow)
    b = request_top_up(user_id="bob", amount_usd="500.00", policy=policy, gateway=gateway, uow=uow)
    assert deliver(gateway.succeed(b.payment_intent_id)).outcome == "granted"
    assert deliver(gateway.succeed(a.payment_intent_id)).outcome == "granted"
    assert _balance(uow, "alice") == Credits.parse("100")
    assert _balance(uow, "bob") == Credits.parse("50000")


def test_concurrent_deliveries_of_the_same_event_grant_once(
    pending: TopUpResult, gateway: FakePaymentGateway, store: InMemoryStore, uow: UowFactory
) -> None:
    event = gateway.parse_webhook(*gateway.succeed(pending.payment_intent_id))
    outcomes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        try:
            outcomes.append(apply_payment_event(event, uow=uow).outcome)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    # One delivery applies it; the others find the event id in the log (or, racing, the ledger's reference).
    assert sorted(outcomes).count("granted") == 1
    assert set(outcomes) <= {"granted", "duplicate", "already_granted"}
    assert len(outcomes) == 20
    assert _balance(uow) == Credits.parse("1000")
    assert len(store.state.transactions) == len(store.state.lots) == 1
    assert store.state.top_ups[pending.top_up_id].status is TopUpStatus.SUCCEEDED
    assert [(e.event_id, e.outcome) for e in events_logged(store)] == [(event.id, "granted")]


def test_a_later_mismatched_event_does_not_unsettle_a_granted_top_up(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    store: InMemoryStore,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    assert deliver(gateway.succeed(pending.payment_intent_id)).outcome == "granted"

    late = deliver(gateway.succeed(pending.payment_intent_id, amount_received=1))

    assert late.outcome == "already_granted"
    assert store.state.top_ups[pending.top_up_id].status is TopUpStatus.SUCCEEDED
    assert _balance(uow) == Credits.parse("1000")


def test_a_top_up_under_review_is_not_granted_by_a_later_matching_event(
    pending: TopUpResult,
    gateway: FakePaymentGateway,
    uow: UowFactory,
    deliver: Callable[[tuple[bytes, str]], WebhookOutcome],
) -> None:
    assert deliver(gateway.succeed(pending.payment_intent_id, amount_received=1)).outcome == "needs_review"
    later = deliver(gateway.succeed(pending.payment_intent_id))

    assert later.outcome == "needs_review"
    assert _balance(uow) == Credits(0)


def test_every_applied_event_is_logged_once_with_what_it_did(
    pending: TopUpResult, gateway: FakePaymentGateway, store: InMemoryStore, uow: UowFactory
) -> None:
    at = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    event = gateway.parse_webhook(*gateway.succeed(pending.payment_intent_id))

    apply_payment_event(event, uow=uow, now=lambda: at)
    apply_payment_event(event, uow=uow, now=lambda: at)

    assert store.state.events == {
        event.id: StoredEvent(
            event_id=event.id,
            type="payment_intent.succeeded",
            payment_intent_id=pending.payment_intent_id,
            top_up_id=pending.top_up_id,
            received_at=at,
            outcome="granted",
            source="webhook",
        )
    }
    with uow() as tx:
        assert tx.events.for_payment_intent(pending.payment_intent_id) == [store.state.events[event.id]]
        assert tx.events.for_payment_intent("pi_other") == []
