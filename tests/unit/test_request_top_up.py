"""Requesting a top-up: a Stripe PaymentIntent is created and a pending top-up recorded, or nothing at all."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from tests.unit.helpers import assert_no_credits_moved, assert_nothing_written
from wallet_core.errors import (
    IdempotencyConflict,
    InvalidInput,
    PaymentGatewayFailed,
    PaymentsNotConfigured,
    StorageUnavailable,
)
from wallet_core.money import Credits, Usd
from wallet_core.payments import META_TOP_UP_ID, META_USER_ID
from wallet_core.topups import TopUpPolicy, TopUpStatus
from wallet_core.use_cases import TopUpResult, request_top_up

UowFactory = Callable[..., InMemoryUnitOfWork]


@pytest.fixture
def top_up(policy: TopUpPolicy, gateway: FakePaymentGateway, uow: UowFactory) -> Callable[..., TopUpResult]:
    def call(
        amount_usd: object = "10.00", user_id: str = "alice", idempotency_key: str | None = None, **kw: Any
    ) -> TopUpResult:
        return request_top_up(
            user_id=user_id,
            amount_usd=amount_usd,
            policy=policy,
            gateway=gateway,
            uow=uow,
            idempotency_key=idempotency_key,
            **kw,
        )

    return call


def test_success_records_a_pending_top_up_and_returns_what_the_browser_needs(
    top_up: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    when = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    result = top_up("10.50", now=lambda: when)

    assert result.amount == Usd(1050)
    assert result.credits == Credits.parse("1050")
    assert result.status is TopUpStatus.PENDING
    assert result.replayed is False
    intent = gateway.intents[result.payment_intent_id]
    assert result.client_secret == intent.client_secret
    assert result.client_secret  # the browser cannot confirm the payment without it

    stored = store.state.top_ups[result.top_up_id]
    assert stored.user_id == "alice"
    assert stored.payment_intent_id == result.payment_intent_id
    assert stored.amount == Usd(1050)
    assert stored.currency == "usd"
    assert stored.credits == Credits.parse("1050")
    assert stored.status is TopUpStatus.PENDING
    assert stored.created_at == when
    assert store.commits == 1
    # Asking to pay is not paying: no credits yet.
    assert_no_credits_moved(store)


def test_client_secret_is_not_shown_in_the_result_repr(top_up: Callable[..., TopUpResult]) -> None:
    result = top_up()
    assert result.client_secret is not None
    assert result.client_secret not in repr(result)


def test_payment_intent_asks_stripe_for_the_amount_in_cents_in_usd_tagged_with_user_and_top_up(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway
) -> None:
    result = top_up("12.34", user_id="bob")

    assert len(gateway.create_calls) == 1
    request = gateway.create_calls[0]
    assert request.amount.cents == 1234
    assert request.currency == "usd"
    assert request.metadata[META_USER_ID] == "bob"
    assert request.metadata[META_TOP_UP_ID] == result.top_up_id
    assert request.metadata["credits"] == "1234.00"
    assert request.idempotency_key  # Stripe retries must not create a second charge
    intent = gateway.intents[result.payment_intent_id]
    assert intent.amount == Usd(1234)
    assert intent.currency == "usd"


@pytest.mark.parametrize(
    "amount", ["0.99", "500.01", "0", "-10", "abc", "", 10.5, None, True, "1.001", "NaN"]
)
def test_invalid_amount_is_refused_before_stripe_is_called(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore, amount: object
) -> None:
    with pytest.raises(InvalidInput) as err:
        top_up(amount)
    assert err.value.field == "amount_usd"
    assert gateway.create_calls == []
    assert gateway.intents == {}
    assert_nothing_written(store)


@pytest.mark.parametrize("user_id", ["", "has space", "x" * 129, "-leading-dash", "tab\there", None])
def test_invalid_user_id_is_refused_before_stripe_is_called(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore, user_id: object
) -> None:
    with pytest.raises(InvalidInput) as err:
        top_up(user_id=user_id)
    assert err.value.field == "user_id"
    assert gateway.create_calls == []
    assert_nothing_written(store)


@pytest.mark.parametrize("key", ["", "has space", "k" * 256, "tab\tkey", "caf\u00e9"])
def test_invalid_idempotency_key_is_refused_before_stripe_is_called(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore, key: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        top_up(idempotency_key=key)
    assert err.value.field == "Idempotency-Key"
    assert gateway.create_calls == []
    assert_nothing_written(store)


def test_idempotency_key_with_trailing_newline_is_refused(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway
) -> None:
    with pytest.raises(InvalidInput):
        top_up(idempotency_key="retry-1\n")
    assert gateway.create_calls == []


def test_gateway_failure_raises_and_records_nothing(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    gateway.fail_next(PaymentGatewayFailed("could not create a PaymentIntent: refused", outcome_unknown=False))
    with pytest.raises(PaymentGatewayFailed):
        top_up("20")
    assert gateway.intents == {}
    assert len(gateway.create_calls) == 0  # refused before it was made; not asked again
    assert_nothing_written(store)


@pytest.mark.parametrize("lost", ["unreachable", "timed_out"])
def test_a_create_whose_outcome_is_unknown_without_a_key_leaves_no_payable_intent(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore, lost: str
) -> None:
    """Stripe may have made the intent and the answer was lost (a timeout): nobody will ever ask for
    it again (no key), so the wallet asks Stripe once more under the same Stripe idempotency key, which
    answers with that intent (or makes it now), and cancels it. Nothing is written."""
    if lost == "timed_out":
        gateway.time_out_next_create()
    else:
        gateway.fail_next()
    with pytest.raises(PaymentGatewayFailed):
        top_up("20")

    (intent,) = gateway.intents.values()
    assert intent.status == "canceled"
    assert {r.idempotency_key for r in gateway.create_calls} == {f"wallet-top-up-{intent.metadata[META_TOP_UP_ID]}"}
    assert_nothing_written(store)


def test_a_timed_out_create_whose_intent_cannot_be_found_again_is_logged_with_its_top_up_id(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway.time_out_next_create()
    gateway.fail_next()  # the second ask fails too
    with pytest.raises(PaymentGatewayFailed):
        top_up("20")

    (intent,) = gateway.intents.values()
    assert intent.status == "requires_payment_method"  # unpayable: its client secret never left the wallet
    top_up_id = intent.metadata[META_TOP_UP_ID]
    assert top_up_id in caplog.text  # what reconcile's review line (the intent's metadata) can be matched to
    assert "ERROR" in [r.levelname for r in caplog.records if top_up_id in r.getMessage()]
    assert_nothing_written(store)


def test_a_timed_out_create_with_a_key_is_kept_for_the_retry_which_records_it(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    gateway.time_out_next_create()
    with pytest.raises(PaymentGatewayFailed):
        top_up("20", idempotency_key="k-lost")
    (intent,) = gateway.intents.values()
    assert intent.status == "requires_payment_method"

    retry = top_up("20", idempotency_key="k-lost")
    assert (retry.payment_intent_id, retry.replayed) == (intent.id, False)
    assert store.state.top_ups[retry.top_up_id].payment_intent_id == intent.id
    assert len(gateway.intents) == 1 and store.commits == 1


def test_retry_with_the_same_key_after_a_gateway_failure_succeeds_once(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    gateway.fail_next()
    with pytest.raises(PaymentGatewayFailed):
        top_up("20", idempotency_key="k-1")
    result = top_up("20", idempotency_key="k-1")
    assert result.replayed is False
    assert list(store.state.top_ups) == [result.top_up_id]
    assert len(gateway.intents) == 1


def test_payments_not_configured_raises_and_records_nothing(
    policy: TopUpPolicy, uow: UowFactory, store: InMemoryStore
) -> None:
    unconfigured = FakePaymentGateway(configured=False)
    with pytest.raises(PaymentsNotConfigured):
        request_top_up(user_id="alice", amount_usd="10", policy=policy, gateway=unconfigured, uow=uow)
    assert unconfigured.intents == {}
    assert_nothing_written(store)


def test_retry_with_the_same_idempotency_key_returns_the_same_top_up(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    first = top_up("25.00", idempotency_key="order-42")
    again = top_up("25", idempotency_key="order-42")  # same amount, written differently

    assert again.replayed is True
    assert again.top_up_id == first.top_up_id
    assert again.payment_intent_id == first.payment_intent_id
    assert again.client_secret == first.client_secret
    assert again.amount == first.amount
    assert again.credits == first.credits
    assert len(store.state.top_ups) == 1
    assert len(gateway.intents) == 1
    assert store.commits == 1  # the replay wrote nothing


def test_replay_reports_the_current_status_of_the_top_up(
    top_up: Callable[..., TopUpResult], store: InMemoryStore, uow: UowFactory
) -> None:
    first = top_up("25.00", idempotency_key="order-43")
    with uow() as tx:
        tx.top_ups.set_status(first.top_up_id, TopUpStatus.SUCCEEDED, datetime.now(UTC))
        tx.commit()
    again = top_up("25.00", idempotency_key="order-43")
    assert again.status is TopUpStatus.SUCCEEDED


def test_same_key_with_a_different_amount_is_a_conflict(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    top_up("25.00", idempotency_key="order-42")
    with pytest.raises(IdempotencyConflict, match=r"25\.00 USD"):
        top_up("26.00", idempotency_key="order-42")
    assert len(store.state.top_ups) == 1
    assert len(gateway.create_calls) == 1
    assert store.commits == 1


def test_same_key_for_a_different_user_is_independent(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    alice = top_up("25.00", user_id="alice", idempotency_key="shared-key")
    bob = top_up("30.00", user_id="bob", idempotency_key="shared-key")

    assert bob.replayed is False
    assert bob.top_up_id != alice.top_up_id
    assert bob.payment_intent_id != alice.payment_intent_id
    assert bob.client_secret != alice.client_secret
    assert {t.user_id for t in store.state.top_ups.values()} == {"alice", "bob"}
    assert len(gateway.intents) == 2


def test_without_a_key_every_request_is_a_new_top_up(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    first = top_up("10")
    second = top_up("10")
    assert first.top_up_id != second.top_up_id
    assert first.payment_intent_id != second.payment_intent_id
    assert len(store.state.top_ups) == 2
    assert len(gateway.intents) == 2


def test_each_request_commits_at_most_once(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    top_up("10")
    assert store.commits == 1
    top_up("10", idempotency_key="a")
    assert store.commits == 2
    top_up("10", idempotency_key="a")
    assert store.commits == 2
    gateway.fail_next()
    with pytest.raises(PaymentGatewayFailed):
        top_up("10", idempotency_key="b")
    assert store.commits == 2


def test_concurrent_retries_with_the_same_key_create_one_top_up(
    top_up: Callable[..., TopUpResult], gateway: FakePaymentGateway, store: InMemoryStore
) -> None:
    results: list[TopUpResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(top_up("42.00", idempotency_key="double-click"))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(results) == 10
    assert len({r.top_up_id for r in results}) == 1
    assert len({r.payment_intent_id for r in results}) == 1
    assert len({r.client_secret for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(store.state.top_ups) == 1
    assert len(gateway.intents) == 1
    assert store.commits == 1


class _CommitFails(InMemoryUnitOfWork):
    """The database goes away between creating the PaymentIntent and recording the top-up."""

    def commit(self) -> None:
        raise StorageUnavailable("the database is unavailable: database is locked")


@pytest.mark.parametrize("cancel_works", [True, False])
def test_a_top_up_that_cannot_be_recorded_without_a_key_has_its_intent_canceled(
    policy: TopUpPolicy, gateway: FakePaymentGateway, store: InMemoryStore, cancel_works: bool,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody can pay it (no client secret left the wallet) nor ask for it again (no key): canceled at
    Stripe, so reconciliation does not report it for review forever. If Stripe cannot cancel it
    either, the caller still gets the database's error and the failure is logged."""
    if not cancel_works:
        def down(payment_intent_id: str) -> None:
            raise PaymentGatewayFailed("could not cancel a PaymentIntent: Stripe could not be reached")

        monkeypatch.setattr(gateway, "cancel_payment_intent", down)

    with pytest.raises(StorageUnavailable):
        request_top_up(user_id="alice", amount_usd="10", policy=policy, gateway=gateway,
                       uow=lambda **kw: _CommitFails(store, **kw))

    (intent,) = gateway.intents.values()
    assert intent.status == ("canceled" if cancel_works else "requires_payment_method")
    assert_nothing_written(store)
    assert ("could not be canceled" in caplog.text) is not cancel_works


def test_a_top_up_that_cannot_be_recorded_with_a_key_keeps_its_intent_for_the_retry(
    policy: TopUpPolicy, gateway: FakePaymentGateway, store: InMemoryStore, uow: UowFactory
) -> None:
    with pytest.raises(StorageUnavailable):
        request_top_up(user_id="alice", amount_usd="10", policy=policy, gateway=gateway,
                       uow=lambda **kw: _CommitFails(store, **kw), idempotency_key="order-1")
    (intent,) = gateway.intents.values()
    assert intent.status == "requires_payment_method"

    retry = request_top_up(user_id="alice", amount_usd="10", policy=policy, gateway=gateway, uow=uow,
                           idempotency_key="order-1")

    assert retry.payment_intent_id == intent.id and retry.client_secret == intent.client_secret
    assert store.state.top_ups[retry.top_up_id].payment_intent_id == intent.id
